"""R-peak detection for ingestion: an adaptive-threshold QRS detector with multi-lead fusion.

Why our own: on the synthetic cohort neurokit2's detectors either miss broad LBBB complexes
or take tall T waves for beats, and none of them says "no ECG here" on pure noise. This one
follows Pan & Tompkins (1985): band-pass, slope, moving-window integration, adaptive signal
and noise levels, a T-wave rule and a search-back for missed beats. It differs where ingestion
needs it:

* the envelope is the RMS slope, not its square, so a premature beat three times taller
  than its neighbours does not push them under the threshold;
* leads are fused after weighting each by how clearly beats stand out on it, so one flat or
  noisy lead cannot hide the QRS;
* a record whose beats do not repeat in shape (noise) or that is flat or too short yields no
  beats at all instead of a list of noise peaks;
* each beat is moved to the R extreme (dominant polarity) of the clearest lead.

Accuracy is measured in ``benchmarks/rpeak_accuracy.py`` against MIT-BIH reference beats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d
from scipy.signal import butter, find_peaks, sosfiltfilt


@dataclass(frozen=True)
class RPeakSettings:
    """Detector parameters; defaults tuned on MIT-BIH 100 and the synthetic cohort.

    Attributes:
        band_hz: QRS band kept before the slope is taken.
        t_band_hz: higher band in which the T-wave rule compares slopes.
        integration_s: moving-window integration length (about one QRS).
        refractory_s: no two beats closer than this (caps the rate at 300 bpm).
        threshold: a candidate is a beat above noise + threshold x (signal - noise) level.
        t_wave_window_s: a candidate this soon after a beat may be its T wave ...
        t_wave_ratio: ... and is one when its slope in ``t_band_hz`` is below this share of
            the beat's.
        searchback_rr: after a gap of this many mean RRs, look again at a lower threshold.
        refine_s: half-width of the search for the R extreme around a detection.
        min_duration_s: shorter records give no beats.
        min_lead_mv: a lead whose band-passed 99th-percentile swing is below this is flat.
        gate_window_s: the noise gate judges the beats of windows this long on their own.
        template_half_s: half-width of the beat shape the gate compares.
        min_template_corr: a window whose beats correlate less than this (median) with
            the mean shape of its other beats holds noise, not beats.
        max_spread: ... as does one whose beat sizes vary more than this (MAD / median) ...
        min_contrast: ... or whose beats' envelope is less than this many times the
            envelope between them ...
        max_hf_ratio: ... or whose peaks are mostly above 40 Hz (spikes, not QRS).
    """

    band_hz: tuple[float, float] = (5.0, 20.0)
    t_band_hz: tuple[float, float] = (10.0, 25.0)
    integration_s: float = 0.10
    refractory_s: float = 0.20
    threshold: float = 0.35
    t_wave_window_s: float = 0.36
    t_wave_ratio: float = 0.5
    searchback_rr: float = 1.66
    refine_s: float = 0.08
    min_duration_s: float = 2.0
    min_lead_mv: float = 0.02
    gate_window_s: float = 10.0
    template_half_s: float = 0.15
    min_template_corr: float = 0.7
    max_spread: float = 0.5
    min_contrast: float = 2.0
    max_hf_ratio: float = 0.8


DEFAULT_SETTINGS = RPeakSettings()
#: Slowest sampling rate accepted: a QRS lasts 80-180 ms and its energy sits at 5-25 Hz.
MIN_FS = 50.0
_EMPTY = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class BeatMatch:
    """One-to-one matching of detected beats against reference beats."""

    tp: int
    fp: int
    fn: int

    @property
    def sensitivity(self) -> float:
        """TP / (TP + FN); 1.0 when there is nothing to find."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def ppv(self) -> float:
        """TP / (TP + FP); 1.0 when nothing was detected."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def f1(self) -> float:
        """Harmonic mean of sensitivity and PPV."""
        total = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / total if total else 1.0


def _bandpass(x: np.ndarray, fs: float, low: float, high: float) -> np.ndarray:
    sos = butter(2, [low, min(high, 0.45 * fs)], btype="band", fs=fs, output="sos")
    return np.asarray(sosfiltfilt(sos, x, axis=0))


def _envelopes(band: np.ndarray, fs: float, settings: RPeakSettings) -> np.ndarray:
    """RMS slope over a QRS-long window, per lead, in mV/s."""
    slope = np.gradient(band, axis=0) * fs
    width = max(1, int(round(settings.integration_s * fs)))
    power = uniform_filter1d(slope**2, size=width, axis=0, mode="nearest")
    return np.asarray(np.sqrt(np.maximum(power, 0.0)))


def _threshold_beats(
    env: np.ndarray, sharp: np.ndarray, fs: float, settings: RPeakSettings
) -> np.ndarray:
    """Pan-Tompkins decision rules on one fused envelope; returns envelope-peak indices.

    ``sharp`` is the same envelope in a higher band, where a tall T wave (slow slopes)
    is much weaker than its QRS even when the two match in the detection band.
    """
    near = max(1, int(0.05 * fs))
    sharp = maximum_filter1d(sharp, size=2 * near + 1)
    refractory = max(1, int(settings.refractory_s * fs))
    # zero ends let a QRS cut by the record's start or end still form a peak
    cand, _ = find_peaks(np.pad(env, 1), distance=refractory)
    cand = cand - 1
    if cand.size < 2:
        return _EMPTY
    h = env[cand]
    # Levels start from the first 10 s: the top quarter of its peaks is mostly QRS and the
    # envelope's median is the baseline between beats (even at 150 bpm with a broad QRS).
    early = int(10 * fs)
    first = h[cand < early] if np.any(cand < early) else h
    spk = float(np.median(first[first >= np.percentile(first, 75)]))
    npk = float(np.median(env[:early]))
    beats: list[int] = []
    beat_h: list[float] = []
    last_noise: list[int] = []  # candidates rejected since the last beat (search-back pool)
    rr_mean = 0.0
    for c, hc in zip(cand.tolist(), h.tolist(), strict=True):
        thr = npk + settings.threshold * (spk - npk)
        if beats and rr_mean > 0 and c - beats[-1] > settings.searchback_rr * rr_mean:
            pool = [k for k in last_noise if env[k] > 0.5 * thr]
            if pool:
                k = max(pool, key=lambda i: env[i])
                spk = 0.25 * min(float(env[k]), 3 * spk) + 0.75 * spk
                beats.append(k)
                beat_h.append(float(env[k]))
                last_noise = [i for i in last_noise if i > k + refractory]
        is_beat, t_wave = hc > thr, False
        if beats:
            gap = c - beats[-1]
            t_window = max(settings.t_wave_window_s, 0.45 * np.sqrt(rr_mean / fs)) * fs
            t_wave = gap < refractory or (
                gap < t_window and sharp[c] < settings.t_wave_ratio * sharp[beats[-1]]
            )
            is_beat = is_beat and not t_wave
        if is_beat:
            # a single artefact may lift the signal level only so far
            spk = 0.125 * min(hc, 3 * spk) + 0.875 * spk
            beats.append(c)
            beat_h.append(hc)
            last_noise = []
            if len(beats) >= 2:
                recent = np.diff(beats[-9:])
                rr_mean = float(recent.mean())
        else:
            npk = 0.125 * hc + 0.875 * npk
            if not t_wave:  # a T wave must not come back as a missed beat
                last_noise.append(c)
    out = np.asarray(sorted(beats), dtype=np.int64)
    # The first "beat" may be the T wave of a beat cut off by the record's start, which the
    # T-wave rule cannot catch because that beat was never seen.
    t_window = max(settings.t_wave_window_s, 0.45 * np.sqrt(rr_mean / fs)) * fs
    if out.size > 2 and out[0] < t_window:
        if sharp[out[0]] < settings.t_wave_ratio * np.median(sharp[out[1:]]):
            out = out[1:]
    return out


def _away_from(n: int, beats: np.ndarray, half: int) -> np.ndarray:
    """Mask of the samples farther than ``half`` from every beat."""
    edges = np.zeros(n + 1, dtype=np.int64)
    np.add.at(edges, np.clip(beats - half, 0, n), 1)
    np.add.at(edges, np.clip(beats + half + 1, 0, n), -1)
    return np.asarray(np.cumsum(edges[:n]) == 0)


def _beat_levels(env: np.ndarray, beats: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Per lead: envelope level at the beats and its contrast against the rest of the record."""
    near = max(1, int(0.05 * fs))
    level = np.median(maximum_filter1d(env, size=2 * near + 1, axis=0)[beats], axis=0)
    away = _away_from(env.shape[0], beats, 3 * near)
    floor = np.median(env[away], axis=0) if away.any() else np.full(env.shape[1], np.inf)
    return level, level / np.maximum(floor, 1e-12)


def _refine(clean: np.ndarray, beats: np.ndarray, fs: float, settings: RPeakSettings) -> np.ndarray:
    """Move each detection to the R extreme of one lead, keeping its dominant polarity."""
    half = max(1, int(settings.refine_s * fs))
    n = clean.shape[0]
    lo = np.clip(beats - half, 0, n - 1)
    idx = np.clip(lo[:, None] + np.arange(2 * half + 1)[None, :], 0, n - 1)
    seg = clean[idx]
    up, down = seg.max(axis=1), -seg.min(axis=1)
    # Polarity of the whole record, so an rS lead marks every S rather than hopping R/S;
    # a beat whose other extreme is far larger (an ectopic of opposite axis) uses that one.
    polarity = 1.0 if np.median(up) >= np.median(down) else -1.0
    own = up if polarity > 0 else down
    other = down if polarity > 0 else up
    sign = np.where(other > 1.5 * own, -polarity, polarity)
    refined = idx[np.arange(len(beats)), np.argmax(seg * sign[:, None], axis=1)]
    # an extreme on the record's first or last sample belongs to an R outside the record
    return np.unique(refined[(refined > 0) & (refined < n - 1)])


def _repeats(clean: np.ndarray, beats: np.ndarray, fs: float, settings: RPeakSettings) -> bool:
    """Whether the beats look alike in shape and size.

    Each beat is correlated with the mean of the others (leave-one-out, so two noise peaks
    do not pass by correlating with their own average). Noise peaks aligned on their
    extreme share only a narrow central bump, so over +-150 ms they correlate weakly; QRS
    complexes with their ST segments repeat. Random spikes can share a shape (the filter's
    impulse response) but not a size.
    """
    half = max(2, int(settings.template_half_s * fs))
    inside = beats[(beats >= half) & (beats < clean.shape[0] - half)]
    if inside.size < 2:
        return False
    seg = clean[inside[:, None] + np.arange(-half, half + 1)[None, :]]
    seg = seg - seg.mean(axis=1, keepdims=True)
    others = (seg.sum(axis=0) - seg) / (len(seg) - 1)
    corr = np.einsum("ij,ij->i", seg, others) / np.maximum(
        np.linalg.norm(seg, axis=1) * np.linalg.norm(others, axis=1), 1e-12
    )
    size = np.abs(clean[inside])
    spread = np.median(np.abs(size - np.median(size))) / max(float(np.median(size)), 1e-12)
    return bool(np.median(corr) >= settings.min_template_corr and spread <= settings.max_spread)


def _drop_noise_windows(
    beats: np.ndarray,
    *,
    high: np.ndarray,
    clean: np.ndarray,
    env: np.ndarray,
    fs: float,
    settings: RPeakSettings,
) -> np.ndarray:
    """Keep the beats of the windows whose beats stand out and repeat in shape and size.

    Standing out (envelope at the beats over envelope between them) rejects steady periodic
    interference such as mains hum, which repeats perfectly but has no beats. A QRS keeps
    most of its peak below 40 Hz; a one-sample spike (electrode pop) does not.
    """
    n = clean.shape[0]
    h = max(1, int(0.02 * fs))
    idx = np.clip(beats[:, None] + np.arange(-h, h + 1)[None, :], 0, n - 1)
    hf_ratio = np.abs(high)[idx].max(axis=1) / np.maximum(np.abs(clean[idx]).max(axis=1), 1e-12)
    span = settings.gate_window_s * fs
    n_win = max(1, int(n // span))
    window = np.minimum((beats // span).astype(np.int64), n_win - 1)
    sample_window = np.minimum((np.arange(n) // span).astype(np.int64), n_win - 1)
    near = max(1, int(0.05 * fs))
    peak = maximum_filter1d(env, size=2 * near + 1)[beats]
    away = _away_from(n, beats, 3 * near)
    keep = np.zeros(beats.size, dtype=bool)
    for w in np.unique(window):
        mine = window == w
        between = env[away & (sample_window == w)]
        contrast = (
            np.median(peak[mine]) / max(float(np.median(between)), 1e-12)
            if between.size
            else np.inf
        )
        keep[mine] = (
            contrast >= settings.min_contrast
            and np.median(hf_ratio[mine]) <= settings.max_hf_ratio
            and _repeats(clean, beats[mine], fs, settings)
        )
    return beats[keep]


def _detect_fused(
    x: np.ndarray, fs: float, settings: RPeakSettings
) -> tuple[np.ndarray, np.ndarray, int]:
    """Envelope-peak beats of the live leads, the fused envelope and the clearest lead."""
    band = _bandpass(x, fs, *settings.band_hz)
    env = _envelopes(band, fs, settings)
    sharp = _envelopes(_bandpass(x, fs, *settings.t_band_hz), fs, settings)
    # Pass 1: every lead at equal weight, each scaled to its own top envelope.
    scale = np.maximum(np.percentile(env, 99, axis=0), 1e-12)
    sharp = sharp / np.maximum(np.percentile(sharp, 99, axis=0), 1e-12)
    fused = (env / scale).mean(axis=1)
    beats = _threshold_beats(fused, sharp.mean(axis=1), fs, settings)
    if beats.size < 2:
        return _EMPTY, fused, 0
    level, contrast = _beat_levels(env, beats, fs)
    weight = np.clip((contrast - 2.0) / 4.0, 0.0, 1.0)
    if weight.sum() > 0 and not np.allclose(weight, weight[0]):
        # Pass 2: leads on which the beats stand out carry the fusion; noisy leads drop out.
        fused = (env / np.maximum(level, 1e-12)) @ weight / weight.sum()
        beats = _threshold_beats(fused, sharp @ weight / weight.sum(), fs, settings)
        if beats.size < 2:
            return _EMPTY, fused, 0
        level, contrast = _beat_levels(env, beats, fs)
    # the lead whose beats stand out most, preferring large ones, places the R peaks
    best = int(np.argmax(contrast * np.sqrt(level / level.max())))
    return beats, fused, best


def detect_rpeaks_multilead(
    signals_mv: np.ndarray, fs: float, *, settings: RPeakSettings = DEFAULT_SETTINGS
) -> np.ndarray:
    """R-peak sample indices of a recording, fusing all of its leads.

    Leads that are flat are ignored and leads on which beats do not stand out are
    down-weighted, so one dead or noisy electrode does not hide the QRS.

    Args:
        signals_mv: ``(n_samples, n_leads)`` millivolts (a 1-D array is one lead). NaNs
            count as gaps.
        fs: sampling rate in Hz (at least 50).
        settings: detector parameters.

    Returns:
        Sorted, unique int64 sample indices at ``fs``, each on the R extreme (the lead's
        dominant polarity) of the clearest lead; empty for records shorter than
        ``settings.min_duration_s``, flat lines and noise, and no beats inside stretches
        of noise.

    Raises:
        ValueError: if ``fs`` is below 50 Hz (too slow to resolve a QRS) or the array has
            more than two dimensions.

    Example:
        >>> peaks = detect_rpeaks_multilead(signals_mv, 500.0)
        >>> heart_rate_bpm = 60 * 500.0 / np.median(np.diff(peaks))
    """
    if not fs >= MIN_FS:
        raise ValueError(f"fs must be at least {MIN_FS:g} Hz to resolve a QRS, got {fs}")
    x = np.asarray(signals_mv, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"expected (n_samples, n_leads) or (n_samples,), got shape {x.shape}")
    if x.shape[0] < settings.min_duration_s * fs or x.shape[1] == 0:
        return _EMPTY
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    x = x - np.median(x, axis=0)
    alive = np.percentile(np.abs(_bandpass(x, fs, *settings.band_hz)), 99, axis=0)
    x = x[:, alive >= settings.min_lead_mv]
    if x.shape[1] == 0:
        return _EMPTY
    beats, fused, best = _detect_fused(x, fs, settings)
    if beats.size < 2:
        return _EMPTY
    clean = _bandpass(x[:, best], fs, 0.5, 40.0)
    peaks = _dedupe(
        _refine(clean, beats, fs, settings), np.abs(clean), int(settings.refractory_s * fs)
    )
    if 0.45 * fs > 40.0:
        high = sosfiltfilt(butter(2, 40.0, btype="highpass", fs=fs, output="sos"), x[:, best])
    else:  # nothing above 40 Hz to look at
        high = np.zeros_like(clean)
    peaks = _drop_noise_windows(peaks, high=high, clean=clean, env=fused, fs=fs, settings=settings)
    return peaks if peaks.size >= 2 else _EMPTY


def _dedupe(peaks: np.ndarray, magnitude: np.ndarray, refractory: int) -> np.ndarray:
    """Refinement can pull two detections together; keep the taller of any close pair."""
    keep = [int(peaks[0])] if peaks.size else []
    for p in peaks[1:].tolist():
        if p - keep[-1] >= refractory:
            keep.append(p)
        elif magnitude[p] > magnitude[keep[-1]]:
            keep[-1] = p
    return np.asarray(keep, dtype=np.int64)


def detect_rpeaks(
    signal_mv: np.ndarray, fs: float, *, settings: RPeakSettings = DEFAULT_SETTINGS
) -> np.ndarray:
    """R-peak sample indices of one lead (see :func:`detect_rpeaks_multilead`).

    Args:
        signal_mv: one lead, millivolts.
        fs: sampling rate in Hz.
        settings: detector parameters.

    Returns:
        Sorted int64 sample indices at ``fs``; empty for short, flat or noise-only input.

    Raises:
        ValueError: if ``fs`` is below 50 Hz.
    """
    return detect_rpeaks_multilead(np.ravel(signal_mv), fs, settings=settings)


def match_beats(
    detected_s: np.ndarray, reference_s: np.ndarray, tolerance_s: float = 0.15
) -> BeatMatch:
    """Match detected to reference beat times one-to-one within a tolerance.

    Each reference beat takes the earliest unused detection within ``tolerance_s``; for
    equal-width windows this greedy order gives the largest possible number of matches.

    Args:
        detected_s: detected beat times in seconds.
        reference_s: reference beat times in seconds.
        tolerance_s: largest allowed |detected - reference|.

    Returns:
        True positives, false positives and false negatives.
    """
    detected = np.sort(np.asarray(detected_s, dtype=np.float64).ravel())
    reference = np.sort(np.asarray(reference_s, dtype=np.float64).ravel())
    tp, j = 0, 0
    for r in reference.tolist():
        while j < detected.size and detected[j] < r - tolerance_s:
            j += 1
        if j < detected.size and detected[j] <= r + tolerance_s:
            tp += 1
            j += 1
    return BeatMatch(tp=tp, fp=int(detected.size - tp), fn=int(reference.size - tp))
