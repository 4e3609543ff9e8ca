"""ECG R peak <-> echo keyframe alignment on simulated pairs with known clock offsets."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta

import cv2
import numpy as np
import pytest

from cardiolake.cohort.echo_phantom import PhantomEcho, simulate_echo
from cardiolake.cohort.latent import PatientState, sample_patient
from cardiolake.cohort.settings import CohortSettings
from pipelines.signal.alignment import AlignmentResult, AlignmentSettings, align_recording
from pipelines.signal.echo_keyframes import Keyframes, detect_keyframes, lv_area_curve

ECG_SECONDS = 10.0
MODES = ("dicom", "phase", "shared")


@dataclasses.dataclass(frozen=True)
class Pair:
    """A simulated ECG/echo pair: truth, what the detectors saw, and the echo keyframes."""

    state: PatientState
    r_true: np.ndarray
    r_detected: np.ndarray
    echo: PhantomEcho
    keys: Keyframes


def make_pair(index: int) -> Pair:
    """Sampled patient (every 10th forced into AF) with an echo clock offset in +-1.5 s."""
    state = sample_patient(CohortSettings(seed=3), index)
    rng = np.random.default_rng([3, index])
    if index % 10 == 9:
        state = dataclasses.replace(state, af=True, hrv_sd=0.18, hr_bpm=state.hr_bpm + 18)
    duration = max(2.5, 2.3 * state.rr_s)
    state = dataclasses.replace(
        state,
        echo_clock_offset_s=float(rng.uniform(-1.5, 1.5)),
        echo_start_offset_s=min(state.echo_start_offset_s, ECG_SECONDS - duration - 0.3),
    )
    rr = state.rr_s * np.clip(1.0 + state.hrv_sd * rng.standard_normal(80), 0.6, 1.4)
    r = np.cumsum(rr) - rng.uniform(0.1, 1.0) * state.rr_s
    r = r[(r >= 0) & (r < ECG_SECONDS)]
    echo = simulate_echo(
        state,
        rng,
        r_peaks_s=r,
        t_end_s=r + state.qt_ms / 1000.0,
        clip_start_s=state.echo_start_offset_s,
        duration_s=duration,
        fps=state.echo_fps,
    )
    frames = np.stack(
        [cv2.resize(f, (112, 112), interpolation=cv2.INTER_AREA) for f in echo.frames]
    )
    keys = detect_keyframes(lv_area_curve(frames), echo.frame_times_s)
    detected = r + rng.uniform(-0.005, 0.005, r.size)  # a QRS detector's jitter
    return Pair(state, r, detected, echo, keys)


def run(pair: Pair, mode: str, **overrides) -> AlignmentResult:
    """Align ``pair`` as its DICOM R-wave vector, a shared clock or phase matching allows."""
    state = pair.state
    offset = 0.0 if mode == "shared" else state.echo_clock_offset_s
    kwargs = dict(
        ecg_rpeaks_s=pair.r_detected,
        ecg_start=state.exam_time,
        echo_start=state.exam_time + timedelta(seconds=state.echo_start_offset_s + offset),
        echo_ed_s=pair.keys.ed_s,
        echo_es_s=pair.keys.es_s,
        echo_frame_times_s=pair.echo.frame_times_s,
        dicom_r_wave_s=pair.echo.r_wave_s if mode == "dicom" else None,
        synchronized=mode == "shared",
        ecg_duration_s=ECG_SECONDS,
    )
    kwargs.update(overrides)
    return align_recording(**kwargs)


@pytest.fixture(scope="module")
def pairs() -> list[Pair]:
    return [make_pair(i) for i in range(44)]


@pytest.fixture(scope="module")
def results(pairs) -> dict[str, list[tuple[Pair, AlignmentResult, float]]]:
    out: dict[str, list[tuple[Pair, AlignmentResult, float]]] = {m: [] for m in MODES}
    for pair in pairs:
        for mode in MODES:
            start = time.perf_counter()
            result = run(pair, mode)
            out[mode].append((pair, result, time.perf_counter() - start))
    return out


def offset_errors(rows: list[tuple[Pair, AlignmentResult, float]], mode: str) -> np.ndarray:
    truth = [0.0 if mode == "shared" else p.state.echo_clock_offset_s for p, _, _ in rows]
    return np.abs(np.array([r.clock_offset_s for _, r, _ in rows]) - truth)


def report(errors: np.ndarray, label: str) -> None:
    print(
        f"\n{label}: |offset error| median {1000 * np.median(errors):.1f} ms, "
        f"p95 {1000 * np.percentile(errors, 95):.1f} ms, "
        f"whole-beat misses {np.sum(errors > 0.2)}/{errors.size}"
    )


def test_cohort_covers_rhythms(pairs) -> None:
    assert len(pairs) >= 40
    assert sum(p.state.af for p in pairs) >= 4
    offsets = [p.state.echo_clock_offset_s for p in pairs]
    assert min(offsets) < -1.0 and max(offsets) > 1.0


def test_dicom_r_wave_offset(results) -> None:
    rows = results["dicom"]
    errors = offset_errors(rows, "dicom")
    report(errors, "DICOM R-wave vector")
    assert all(r.sync_source == "dicom_r_wave" for _, r, _ in rows)
    assert np.median(errors) <= 0.020
    # A whole-beat miss happens only when the RR pattern is ambiguous, and is flagged.
    for (_, result, _), err in zip(rows, errors, strict=True):
        if err > 0.2:
            assert result.confidence < 0.5
        assert result.residual_s < 0.02


def test_phase_match_offset(results) -> None:
    rows = results["phase"]
    errors = offset_errors(rows, "phase")
    report(errors, "phase matching")
    assert all(r.sync_source == "phase_match" for _, r, _ in rows)
    assert np.median(errors) <= 0.040
    for (_, result, _), err in zip(rows, errors, strict=True):
        if err > 0.2:
            assert result.confidence < 0.5
    quality = [b.quality for _, r, _ in rows for b in r.beats]
    assert max(quality) <= AlignmentSettings().phase_match_weight


def test_shared_clock_is_exact(results) -> None:
    rows = results["shared"]
    assert all(r.sync_source == "shared_clock" and r.clock_offset_s == 0.0 for _, r, _ in rows)
    report(offset_errors(rows, "shared"), "shared clock")


def test_beat_rows_measure_the_electromechanical_delay(results) -> None:
    """With the offset right, ED lags R by the patient's delay and ES by about the QT."""
    ed_error, es_error, n_rows = [], [], 0
    for (pair, result, _), err in zip(
        results["dicom"], offset_errors(results["dicom"], "dicom"), strict=True
    ):
        if err > 0.2:
            continue
        clip = (result.clip_start_s, result.clip_start_s + pair.echo.frame_times_s[-1])
        for beat in result.beats:
            n_rows += 1
            assert beat.r_peak_s == pytest.approx(pair.r_detected[beat.beat_index])
            assert clip[0] <= beat.r_peak_s < clip[1] + 0.05 or np.isfinite(beat.ed_s)
            assert 0.0 <= beat.quality <= 1.0 and beat.reason
            if np.isfinite(beat.ed_s):
                assert beat.lag_ed_s == pytest.approx(beat.ed_s - beat.r_peak_s)
                assert 0 <= beat.ed_frame < pair.echo.frame_times_s.size
                ed_error.append(beat.lag_ed_s - pair.state.emd_ms / 1000)
            if np.isfinite(beat.es_s):
                es_error.append(beat.lag_es_s - pair.state.qt_ms / 1000)
        # No beat of the ECG inside the clip is missing.
        inside = (pair.r_detected >= clip[0]) & (pair.r_detected < clip[1])
        assert set(np.flatnonzero(inside)) <= {b.beat_index for b in result.beats}
    ed_error, es_error = np.abs(ed_error), np.abs(es_error)
    print(
        f"\n{n_rows} beat rows: |lag_ed - true emd| median {1000 * np.median(ed_error):.1f} ms, "
        f"p90 {1000 * np.percentile(ed_error, 90):.1f} ms; |lag_es - QT| median "
        f"{1000 * np.median(es_error):.1f} ms"
    )
    assert np.median(ed_error) < 0.015 and np.percentile(ed_error, 90) < 0.04
    assert np.median(es_error) < 0.03


def test_heart_rates_agree(results) -> None:
    for pair, result, _ in results["dicom"]:
        assert result.ecg_hr_bpm == pytest.approx(pair.state.hr_bpm, rel=0.25)
        if np.isfinite(result.echo_cycle_bpm) and not pair.state.af:
            assert result.echo_cycle_bpm == pytest.approx(result.ecg_hr_bpm, rel=0.2)


def test_alignment_is_fast(results) -> None:
    seconds = np.array([t for rows in results.values() for _, _, t in rows])
    print(f"\nalign_recording: median {1000 * np.median(seconds):.2f} ms per pair")
    assert np.median(seconds) < 0.05


def test_rows_are_table_ready(results) -> None:
    _, result, _ = results["dicom"][0]
    rows = result.rows()
    assert len(rows) == len(result.beats) > 0
    assert {"beat_index", "r_peak_s", "ed_s", "es_s", "lag_ed_s", "lag_es_s", "quality"} <= set(
        rows[0]
    )
    assert rows[0]["sync_source"] == "dicom_r_wave"


# --- exact synthetic pairs -----------------------------------------------------------------

ECG_START = datetime(2024, 3, 1, 10, 0, 0)
R_PEAKS = np.cumsum([0.3, 0.82, 0.91, 0.77, 0.88, 0.95, 0.8, 0.86, 0.93, 0.79, 0.9])


def exact_inputs(clip_start: float, offset: float, *, duration: float = 2.6) -> dict:
    """Keyframes placed exactly at R + 50 ms (ED) and R + 380 ms (ES)."""
    inside = R_PEAKS[(R_PEAKS >= clip_start - 0.5) & (R_PEAKS < clip_start + duration)]
    ed = inside + 0.05 - clip_start
    es = inside + 0.38 - clip_start
    keep = lambda t: t[(t >= 0) & (t < duration)]  # noqa: E731
    return dict(
        ecg_rpeaks_s=R_PEAKS,
        ecg_start=ECG_START,
        echo_start=ECG_START + timedelta(seconds=clip_start + offset),
        echo_ed_s=keep(ed),
        echo_es_s=keep(es),
        echo_frame_times_s=np.arange(0, duration, 1 / 50),
        dicom_r_wave_s=keep(inside - clip_start),
        synchronized=False,
    )


@pytest.mark.parametrize("offset", [-1.3, -0.4, 0.0, 0.25, 1.45])
def test_sign_convention(offset: float) -> None:
    """Echo clock ahead of the ECG clock by ``offset`` gives ``clock_offset_s == offset``."""
    inputs = exact_inputs(3.1, offset)
    dicom = align_recording(**inputs)
    assert dicom.sync_source == "dicom_r_wave"
    assert dicom.clock_offset_s == pytest.approx(offset, abs=1e-9)
    assert dicom.clip_start_s == pytest.approx(3.1, abs=1e-9)
    phase = align_recording(**{**inputs, "dicom_r_wave_s": None})
    assert phase.sync_source == "phase_match"
    assert phase.clock_offset_s == pytest.approx(offset, abs=1e-9)
    for beat in dicom.beats:
        if np.isfinite(beat.ed_s):
            assert beat.lag_ed_s == pytest.approx(0.05, abs=1e-9)
        if np.isfinite(beat.es_s):
            assert beat.lag_es_s == pytest.approx(0.38, abs=1e-9)
    assert [b.beat_index for b in dicom.beats] == list(
        np.flatnonzero((R_PEAKS >= 3.1) & (R_PEAKS < 3.1 + 2.6))
    )


def test_source_preference() -> None:
    inputs = exact_inputs(3.1, 0.0)
    both = align_recording(**{**inputs, "synchronized": True})
    assert both.sync_source == "dicom_r_wave"  # the R-wave vector is the better evidence
    one_wave = {**inputs, "dicom_r_wave_s": inputs["dicom_r_wave_s"][:1]}
    assert align_recording(**{**one_wave, "synchronized": True}).sync_source == "shared_clock"
    assert align_recording(**one_wave).sync_source == "phase_match"


def test_nothing_to_match_gives_none() -> None:
    inputs = exact_inputs(3.1, 0.3)
    cases = [
        {"ecg_rpeaks_s": np.array([])},
        {"echo_ed_s": np.array([]), "echo_es_s": np.array([]), "dicom_r_wave_s": None},
        {"echo_ed_s": np.array([]), "echo_es_s": np.array([]), "synchronized": True},
        # The clip claims to start an hour later: beyond any clock offset searched.
        {"echo_start": ECG_START + timedelta(hours=1), "dicom_r_wave_s": None},
        {"echo_start": ECG_START + timedelta(hours=1), "synchronized": True},
        {"echo_frame_times_s": np.array([])},
    ]
    for override in cases:
        result = align_recording(**{**inputs, **override})
        assert result.sync_source == "none" and result.beats == ()
        assert np.isnan(result.clock_offset_s)


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        AlignmentSettings().emd_prior_s = 0.1  # type: ignore[misc]
