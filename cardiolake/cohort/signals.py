"""Simulated recordings handed from the physiological models to the file writers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EcgSimulation:
    """A simulated ECG recording with its ground truth.

    Attributes:
        signals_mv: ``(n_samples, n_leads)`` float32 millivolts.
        lead_names: lead names in column order (``"I"``, ``"II"``, ..., ``"V6"``).
        fs: sampling rate in Hz.
        r_peaks_s: true R-peak times in seconds from the record start (inside the record).
        t_end_s: true end of the T wave for each R peak in ``r_peaks_s`` (seconds).
    """

    signals_mv: np.ndarray
    lead_names: tuple[str, ...]
    fs: int
    r_peaks_s: np.ndarray
    t_end_s: np.ndarray

    @property
    def duration_s(self) -> float:
        """Recording length in seconds."""
        return float(self.signals_mv.shape[0] / self.fs)


@dataclass(frozen=True)
class EchoSimulation:
    """A simulated apical-4-chamber echo clip with its ground truth (clip-relative times).

    Attributes:
        frames: ``(n_frames, height, width)`` uint8 grayscale.
        fps: frame rate in Hz.
        frame_times_s: time of each frame, seconds from the first frame (starts at 0).
        lv_area_px: true LV cavity area of each frame in pixels.
        ed_s: true end-diastole times inside the clip (seconds).
        es_s: true end-systole times inside the clip (seconds).
        r_wave_s: ECG R-peak times inside the clip (what (0018,6060) carries, as ms).
    """

    frames: np.ndarray
    fps: float
    frame_times_s: np.ndarray
    lv_area_px: np.ndarray
    ed_s: np.ndarray
    es_s: np.ndarray
    r_wave_s: np.ndarray
