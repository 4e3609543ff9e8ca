"""Settings of the quality gates: every bound an expectation checks, in one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateSettings:
    """The configured bounds of the Great Expectations suites.

    Attributes:
        canonical_fs: the one ECG sampling rate silver holds (Hz).
        max_abs_mv: the largest robust |amplitude| a real ECG lead shows (mV): the 99.5th
            percentile of ``|x - median(x)|`` of any lead; a wrong gain lands far above.
        hr_range_bpm: heart rates a living patient can show.
        rpeak_ratio_range: R-peak count over HR x duration / 60 (1.0 is perfect agreement;
            edge beats cut by the recording's start and end keep short records off 1.0).
        fps_range: echo frame rates of real scanners.
        lv_area_ratio_range: smallest over largest LV cavity area in a clip (ES/ED area):
            a heart that never contracts, or collapses, is a measurement error.
        kappa_floor: the lowest Fleiss' kappa of the readers' triage votes in one batch.
        kappa_min_exams: multi-reader exams a batch needs before its kappa is judged (fewer
            cannot show disagreement beyond chance).
        max_lag_s: the largest |ED lag| (R-peak to end-diastole) of one aligned beat (s).
        max_hr_disagreement: ECG heart rate vs echo cycle rate, relative to the ECG rate.
        min_aligned_share: the lowest share of a pair's beats that found an ED keyframe.
        unexpected_sample: failing rows per expectation written to quarantine (None: all).
    """

    canonical_fs: int = 500
    max_abs_mv: float = 25.0
    hr_range_bpm: tuple[float, float] = (20.0, 300.0)
    rpeak_ratio_range: tuple[float, float] = (0.6, 1.4)
    fps_range: tuple[float, float] = (10.0, 240.0)
    lv_area_ratio_range: tuple[float, float] = (0.2, 0.98)
    kappa_floor: float = 0.2
    kappa_min_exams: int = 20
    max_lag_s: float = 0.1
    max_hr_disagreement: float = 0.10
    min_aligned_share: float = 0.5
    unexpected_sample: int | None = None
