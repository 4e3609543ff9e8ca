"""R-peak detection for ingestion: a multi-lead QRS-energy detector with R-peak refinement.

Why our own: neurokit2's default detector takes tall T waves for beats in slow rhythms and
wfdb's XQRS misses broad LBBB complexes (both measured on the synthetic cohort). This one
follows Pan-Tompkins' recipe — 5–20 Hz band-pass, squared slope, moving-window integration —
summed over every lead (a flat or noisy lead cannot hide the QRS), with an adaptive local
threshold, a T-wave rejection rule and refinement to the true R extreme.
Accuracy is measured in ``benchmarks/rpeak_accuracy.py`` against MIT-BIH reference beats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d
from scipy.signal import butter, find_peaks, sosfiltfilt


@dataclass(frozen=True)
class RPeakSettings:
    """Detector parameters (defaults tuned on MIT-BIH 100 and the synthetic cohort).

    Attributes:
        band_hz: QRS band kept by the band-pass filter.
        integration_s: moving-window integration length (about one QRS).
        refractory_s: no two beats closer than this (HR up to 300 bpm).
        threshold: a beat's energy must exceed this share of the local reference energy.
        reference_window_s: half-width of the window the reference energy is taken over.
        t_wave_window_s: a candidate this soon after a beat is a T wave when it is weak.
        t_wave_ratio: ... weaker than this share of the preceding beat's energy.
        refine_s: half-width of the search for the R extreme around a detection.
        min_snr: median beat energy over median signal energy below this means noise.
        edge_s: a detection this close to either end of the record whose extreme has the
            opposite polarity of the other beats' R is the tail of a complex cut by the edge.
    """

    band_hz: tuple[float, float] = (5.0, 20.0)
    integration_s: float = 0.10
    refractory_s: float = 0.20
    threshold: float = 0.30
    reference_window_s: float = 4.0
    t_wave_window_s: float = 0.36
    t_wave_ratio: float = 0.5
    refine_s: float = 0.07
    min_snr: float = 8.0
    edge_s: float = 0.1


@dataclass(frozen=True)
class BeatMatch:
    """One-to-one matching of detected beats against reference beats."""

    tp: int
    fp: int
    fn: int

    @property
    def sensitivity(self) -> float:
        """TP / (TP + FN)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def ppv(self) -> float:
        """TP / (TP + FP)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0


def _energy(signals: np.ndarray, fs: float, settings: RPeakSettings) -> np.ndarray:
    low, high = settings.band_hz
    high = min(high, 0.45 * fs)
    sos = butter(2, [low, high], btype="band", fs=fs, output="sos")
    band = sosfiltfilt(sos, signals, axis=0)
    slope = np.diff(band, axis=0, prepend=band[:1])
    scale = np.percentile(np.abs(slope), 99, axis=0)
    slope = slope / np.where(scale > 0, scale, 1.0)
    squared = (slope**2).sum(axis=1)
    width = max(1, int(settings.integration_s * fs))
    return np.convolve(squared, np.ones(width) / width, mode="same")


def _refine(
    signals: np.ndarray, peaks: np.ndarray, fs: float, settings: RPeakSettings
) -> np.ndarray:
    """Move each detection to the extreme of the dominant lead's deflection nearby."""
    if peaks.size == 0:
        return peaks
    half = max(1, int(settings.refine_s * fs))
    sos = butter(2, [0.5, min(40.0, 0.45 * fs)], btype="band", fs=fs, output="sos")
    clean = sosfiltfilt(sos, signals, axis=0)
    n = clean.shape[0]
    # the lead with the largest QRS swing carries the R extreme most clearly
    swing = np.percentile(np.abs(clean), 99, axis=0)
    lead = clean[:, int(np.argmax(swing))]
    out = np.empty_like(peaks)
    for i, p in enumerate(peaks):
        lo, hi = max(0, p - half), min(n, p + half + 1)
        out[i] = lo + int(np.argmax(np.abs(lead[lo:hi])))
    signs = np.sign(lead[out])
    majority = 1.0 if (signs >= 0).sum() >= (signs < 0).sum() else -1.0
    edge = int(settings.edge_s * fs)
    # a complex cut by the record's edge shows only its S (or Q) wave: wrong polarity
    cut = ((out < edge) | (out >= n - edge)) & (signs != majority)
    return np.unique(out[~cut])


def detect_rpeaks_multilead(
    signals_mv: np.ndarray, fs: float, *, settings: RPeakSettings | None = None
) -> np.ndarray:
    """R-peak sample indices of a (n_samples, n_leads) recording.

    Args:
        signals_mv: the leads, millivolts.
        fs: sampling rate in Hz.
        settings: detector parameters.

    Returns:
        Sorted int64 sample indices at ``fs``; empty for flat lines, noise or records
        shorter than two seconds.
    """
    settings = settings or RPeakSettings()
    x = np.asarray(signals_mv, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    x = np.nan_to_num(x)
    if x.shape[0] < 2 * fs or not np.any(x.std(axis=0) > 1e-3):
        return np.empty(0, dtype=np.int64)
    energy = _energy(x, fs, settings)
    candidates, props = find_peaks(energy, distance=max(1, int(settings.refractory_s * fs)))
    if candidates.size == 0:
        return np.empty(0, dtype=np.int64)
    heights = energy[candidates]
    # local reference: the 90th percentile of candidate peaks' local maxima (robust to the
    # slow amplitude drift of long recordings and to a few artefacts)
    span = max(1, int(settings.reference_window_s * fs))
    local_max = maximum_filter1d(energy, size=2 * span + 1)[candidates]
    reference = np.minimum(local_max, np.percentile(heights, 90) * 3)
    keep = heights > settings.threshold * reference * 0.5
    candidates, heights = candidates[keep], heights[keep]
    accepted: list[int] = []
    accepted_h: list[float] = []
    t_window = int(settings.t_wave_window_s * fs)
    for c, h in zip(candidates, heights, strict=True):
        if accepted and c - accepted[-1] < t_window:
            if h < settings.t_wave_ratio * accepted_h[-1]:
                continue  # a T wave (or a weak echo of the same beat)
            if h > accepted_h[-1]:
                accepted[-1], accepted_h[-1] = int(c), float(h)
                continue
            if c - accepted[-1] < settings.refractory_s * fs * 1.5:
                continue
        accepted.append(int(c))
        accepted_h.append(float(h))
    if not accepted:
        return np.empty(0, dtype=np.int64)
    snr = float(np.median(accepted_h)) / max(float(np.median(energy)), 1e-12)
    if snr < settings.min_snr:
        return np.empty(0, dtype=np.int64)
    return _refine(x, np.asarray(accepted, dtype=np.int64), fs, settings).astype(np.int64)


def detect_rpeaks(
    signal_mv: np.ndarray, fs: float, *, settings: RPeakSettings | None = None
) -> np.ndarray:
    """R-peak sample indices of a single-lead recording (see :func:`detect_rpeaks_multilead`)."""
    return detect_rpeaks_multilead(np.asarray(signal_mv)[:, None], fs, settings=settings)


def match_beats(
    detected_s: np.ndarray, reference_s: np.ndarray, tolerance_s: float = 0.15
) -> BeatMatch:
    """Greedy one-to-one matching of beat times within a tolerance (both sorted, seconds)."""
    detected = np.sort(np.asarray(detected_s, dtype=float))
    reference = np.sort(np.asarray(reference_s, dtype=float))
    used = np.zeros(detected.size, dtype=bool)
    tp = 0
    for r in reference:
        lo = np.searchsorted(detected, r - tolerance_s, side="left")
        hi = np.searchsorted(detected, r + tolerance_s, side="right")
        best, best_d = -1, tolerance_s + 1
        for j in range(lo, hi):
            if not used[j] and abs(detected[j] - r) < best_d:
                best, best_d = j, abs(detected[j] - r)
        if best >= 0:
            used[best] = True
            tp += 1
    return BeatMatch(tp=tp, fp=int(detected.size - used.sum()), fn=int(reference.size - tp))
