"""ECG intervals and the frontal QRS axis, measured on the median beat of all leads.

PR, QRS, QT, QTc (Bazett) and the axis are what a cardiologist reads off a resting ECG and
what the ``ecg_measurements`` feature view serves. neurokit2's per-lead delineation was
measured first on pydicom's ``waveform_ecg.dcm`` (whose device measured QRS 75 ms, QT 368 ms):
its DWT method gave QRS 126-206 ms and QT 376-462 ms depending on the lead, and its peak
method found no boundaries at all. Devices measure on a *global* median beat instead, which is
what this module does:

1. band-pass every lead (0.5-40 Hz) and take the sample-wise median of up to ``max_beats``
   beats aligned on their R peaks: noise cancels, the P-QRS-T remains;
2. QRS onset and offset where the spatial velocity (the norm of all leads' slopes) falls
   below a fraction of its QRS maximum for a few milliseconds;
3. T end by the tangent method (steepest descent after the T peak, extended to the baseline)
   on the leads with a clear T wave, the latest of them (the global T end) once single-lead
   outliers more than 40 ms past their median are dropped;
4. P onset by the same tangent idea on the leads with a clear P wave, measured only when the
   P wave repeats beat after beat and the rhythm is not irregularly irregular (no PR in AF);
5. the frontal axis from the net QRS area in leads I and aVF (aVF derived from II and III,
   or II and I, when absent).

Everything is NaN when not measurable (too few beats, no P wave, no limb leads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfiltfilt


@dataclass(frozen=True)
class IntervalSettings:
    """Parameters of the median-beat measurement.

    Attributes:
        pre_s: template start before the R peak (s).
        post_s: template end after the R peak (s).
        max_beats: at most this many beats (evenly spread) form the median beat.
        min_beats: fewer complete beats than this: nothing is measured.
        band_hz: the band-pass applied before averaging.
        qrs_fraction: QRS boundaries where the spatial velocity drops below this fraction
            of its QRS maximum.
        quiet_ms: ... and stays there this long.
        min_wave_mv: a P or T wave smaller than this (peak above baseline) is not measured.
        p_consistency: the median correlation of single beats' P segments with the median
            beat's below which there is no P wave (atrial fibrillation): no PR.
        max_rr_irregularity: above this median successive RR change (relative to the RR)
            the rhythm is irregularly irregular: no PR.
    """

    pre_s: float = 0.40
    post_s: float = 0.70
    max_beats: int = 60
    min_beats: int = 3
    band_hz: tuple[float, float] = (0.5, 40.0)
    qrs_fraction: float = 0.12
    quiet_ms: float = 8.0
    min_wave_mv: float = 0.04
    p_consistency: float = 0.5
    max_rr_irregularity: float = 0.09


DEFAULT_INTERVALS = IntervalSettings()


@dataclass(frozen=True)
class EcgIntervals:
    """Global intervals (ms) and the frontal QRS axis (degrees, -180..180); NaN when absent."""

    pr_ms: float = math.nan
    qrs_ms: float = math.nan
    qt_ms: float = math.nan
    qtc_ms: float = math.nan
    axis_deg: float = math.nan

    def as_row(self) -> dict[str, float | None]:
        """The fields as a table row (None where not measured)."""
        return {
            k: (None if math.isnan(v) else round(float(v), 1)) for k, v in self.__dict__.items()
        }


def aligned_beats(
    signals: np.ndarray, rpeaks: np.ndarray, fs: float, settings: IntervalSettings
) -> np.ndarray | None:
    """``(beats, window, n_leads)`` band-passed beats aligned on R (None: too few beats)."""
    pre, post = int(round(settings.pre_s * fs)), int(round(settings.post_s * fs))
    n = signals.shape[0]
    peaks = np.asarray(rpeaks, dtype=np.int64)
    peaks = peaks[(peaks - pre >= 0) & (peaks + post < n)]
    if peaks.size < settings.min_beats:
        return None
    if peaks.size > settings.max_beats:
        peaks = peaks[np.linspace(0, peaks.size - 1, settings.max_beats).round().astype(int)]
    low, high = settings.band_hz
    sos = butter(2, [low, min(high, 0.45 * fs)], btype="bandpass", fs=fs, output="sos")
    filtered = sosfiltfilt(sos, np.nan_to_num(signals.astype(np.float64)), axis=0)
    return np.stack([filtered[p - pre : p + post] for p in peaks])


def _quiet_run(mask: np.ndarray, start: int, step: int, run: int) -> int | None:
    """First index from ``start`` (walking by ``step``) that opens ``run`` quiet samples."""
    i = start
    while 0 <= i < mask.size:
        j = i + step * (run - 1)
        lo, hi = min(i, j), max(i, j)
        if lo >= 0 and hi < mask.size and mask[lo : hi + 1].all():
            return i
        i += step
    return None


def _tangent_end(x: np.ndarray, peak: int, stop: int, direction: int) -> float | None:
    """Where the steepest slope between a wave's peak and ``stop`` meets the baseline (0).

    ``direction`` +1 looks after the peak (T end), -1 before it (P onset).
    """
    lo, hi = (peak, stop) if direction > 0 else (stop, peak)
    if hi - lo < 3:
        return None
    slope = np.gradient(x[lo : hi + 1])
    sign = np.sign(x[peak])
    # the limb runs back to zero: falling after a positive peak, rising before it
    steep = -sign * slope if direction > 0 else sign * slope
    k = int(np.argmax(steep))
    if steep[k] <= 0:
        return None
    m = lo + k
    return float(m - x[m] / slope[k])


def _wave(
    beat: np.ndarray, lo: int, hi: int, base: np.ndarray, min_mv: float
) -> list[tuple[int, int]]:
    """(lead, peak index) of the leads whose wave in ``[lo, hi)`` stands above ``min_mv``."""
    if hi - lo < 3:
        return []
    seg = beat[lo:hi] - base
    out = []
    for lead in range(beat.shape[1]):
        k = int(np.argmax(np.abs(seg[:, lead])))
        if abs(seg[k, lead]) >= min_mv:
            out.append((lead, lo + k))
    return out


def _rr_irregularity(rr: np.ndarray) -> float:
    """Median successive RR change over the median RR: ~0.02-0.06 in sinus, 0.1+ in AF."""
    return float(np.median(np.abs(np.diff(rr))) / np.median(rr))


def _p_waves_repeat(
    beats: np.ndarray,
    median: np.ndarray,
    waves: list[tuple[int, int]],
    lo: int,
    hi: int,
    floor: float,
) -> bool:
    """Whether the P wave of the median beat is in every beat, not a residue of f waves.

    In atrial fibrillation the median of a few beats still keeps some fibrillatory wave;
    a real P wave correlates with the median in beat after beat, f waves do not.
    """
    lead = max(waves, key=lambda w: abs(median[w[1], w[0]]), default=None)
    if lead is None:
        return False
    ref = median[lo:hi, lead[0]] - median[lo:hi, lead[0]].mean()
    seg = beats[:, lo:hi, lead[0]]
    seg = seg - seg.mean(axis=1, keepdims=True)
    denom = np.linalg.norm(seg, axis=1) * np.linalg.norm(ref)
    corr = (seg @ ref) / np.where(denom > 0, denom, np.inf)
    return bool(np.median(corr) >= floor)


def _frontal_pair(beat: np.ndarray, leads: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Leads I and aVF of the beat, deriving either from the other limb leads when absent."""
    col = {name: beat[:, i] for i, name in enumerate(leads)}
    lead_i, avf = col.get("I"), col.get("aVF")
    if lead_i is None and "II" in col and "III" in col:
        lead_i = col["II"] - col["III"]
    if avf is None and "II" in col and "III" in col:
        avf = (col["II"] + col["III"]) / 2.0
    if avf is None and "II" in col and lead_i is not None:
        avf = col["II"] - lead_i / 2.0
    if lead_i is None or avf is None:
        return None
    return lead_i, avf


def measure_intervals(
    signals: np.ndarray,
    leads: list[str],
    rpeaks: np.ndarray,
    fs: float,
    settings: IntervalSettings = DEFAULT_INTERVALS,
) -> EcgIntervals:
    """PR, QRS, QT, QTc and the frontal axis of one recording.

    Args:
        signals: ``(n_samples, n_leads)`` millivolts.
        leads: the standard names of the columns.
        rpeaks: R-peak sample indices.
        fs: sampling rate (Hz).
        settings: measurement parameters.

    Returns:
        The intervals; fields that cannot be measured are NaN.
    """
    signals = signals.reshape(signals.shape[0], -1)
    beats = aligned_beats(signals, rpeaks, fs, settings)
    if beats is None:
        return EcgIntervals()
    beat = np.median(beats, axis=0)
    ms = 1000.0 / fs
    r0 = int(round(settings.pre_s * fs))
    run = max(2, int(round(settings.quiet_ms / ms)))
    velocity = np.sqrt((np.gradient(beat, axis=0) ** 2).sum(axis=1))
    near = slice(r0 - int(0.08 * fs), r0 + int(0.08 * fs))
    vmax = float(velocity[near].max())
    if vmax <= 0:
        return EcgIntervals()
    quiet = velocity < settings.qrs_fraction * vmax
    left = r0 - int(0.08 * fs) + int(np.argmax(velocity[r0 - int(0.08 * fs) : r0 + 1]))
    right = r0 + int(np.argmax(velocity[r0 : r0 + int(0.08 * fs)]))
    onset = _quiet_run(quiet, left, -1, run)
    offset = _quiet_run(quiet, right, +1, run)
    if onset is None or offset is None:
        return EcgIntervals()
    qrs = (offset - onset) * ms
    base = np.median(beat[max(0, onset - int(0.02 * fs)) : onset + 1], axis=0)
    rr = np.diff(np.asarray(rpeaks)) / fs
    rr_s = float(np.median(rr)) if rr.size else math.nan

    # T: from 80 ms after the QRS to 70 % of the RR, and before the shortest RR brings the
    # next beat (irregular rhythms smear it into the median beat)
    t_lo = offset + int(0.08 * fs)
    t_hi = beat.shape[0] - 1
    if rr.size:
        reach = min(0.7 * rr_s, float(np.percentile(rr, 10)) - 0.1)
        t_hi = min(t_hi, r0 + int(reach * fs))
    ends = []
    for lead, peak in _wave(beat, t_lo, t_hi, base, settings.min_wave_mv * 2):
        end = _tangent_end(beat[:, lead] - base[lead], peak, t_hi, +1)
        if end is not None and peak < end < t_hi + 0.1 * fs:
            ends.append(end)
    # the global T end is the latest lead's, but one lead's late outlier is not
    if ends:
        mid = float(np.median(ends))
        ends = [e for e in ends if e <= mid + 0.04 * fs]
    qt = (max(ends) - onset) * ms if ends else math.nan
    qtc = qt / math.sqrt(rr_s) if ends and rr_s > 0 else math.nan

    # P: up to 300 ms before the QRS but after the previous beat's T wave (shortest RR), to
    # 40 ms before the QRS, against the TP baseline just before that window
    p_lo = max(1, onset - int(0.30 * fs))
    if ends and rr.size:
        p_lo = max(p_lo, int(max(ends) - np.percentile(rr, 10) * fs) + int(0.02 * fs))
    p_hi = onset - int(0.04 * fs)
    p_base = np.median(beat[max(0, p_lo - int(0.04 * fs)) : p_lo + 1], axis=0)
    starts = []
    waves = _wave(beat, p_lo, p_hi, p_base, settings.min_wave_mv)
    for lead, peak in waves:
        start = _tangent_end(beat[:, lead] - p_base[lead], peak, p_lo, -1)
        if start is not None and p_lo - 0.04 * fs < start < peak:
            starts.append(start)
    pr = math.nan
    irregular = rr.size > 2 and _rr_irregularity(rr) > settings.max_rr_irregularity
    if (
        starts
        and not irregular
        and _p_waves_repeat(beats, beat, waves, p_lo, p_hi, settings.p_consistency)
    ):
        pr = (onset - min(starts)) * ms

    axis = math.nan
    pair = _frontal_pair(beat, leads)
    if pair is not None:
        lead_i, avf = (x[onset : offset + 1] - x[onset] for x in pair)
        axis = math.degrees(math.atan2(float(avf.sum()), float(lead_i.sum())))
    return EcgIntervals(pr_ms=pr, qrs_ms=qrs, qt_ms=qt, qtc_ms=qtc, axis_deg=axis)
