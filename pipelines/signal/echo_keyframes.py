"""LV cavity area and end-diastole / end-systole keyframes of an apical-4-chamber echo clip.

Plain numpy functions that a Spark task calls once per clip. The LV is found from the images
alone: blood is dark and walled in by bright myocardium, so a threshold between the two
classes and a connected-component search recover the cavity. The cavity is the dark region
that stays dark through the whole clip (its end-systolic core), is walled off from the sector
edge and sits in the upper part of the image where an apical view puts the ventricles; the
largest such region is the LV. Its area curve peaks at end-diastole (ED) and dips at
end-systole (ES); peaks are found by prominence with a minimum spacing set by the clip's own
dominant cycle length.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage, signal

#: Reference image size the pixel-valued settings are expressed at (silver resizes to 112).
_REF_SIZE = 112


@dataclass(frozen=True)
class SegmentationSettings:
    """Knobs of the image-only LV segmentation (pixel values are at 112×112).

    Attributes:
        smooth_sigma_px: Gaussian blur that averages speckle before thresholding.
        threshold_fraction: where the threshold sits between the blood level and the Otsu
            split of the sector (0 = blood, 1 = Otsu); low values hug the cavity border and
            keep the cavity from leaking through thin walls.
        core_fraction: share of frames in which a pixel must be dark to belong to a
            chamber's core, i.e. the part never reached by contracting walls.
        max_centroid_y: chamber cores centred below this fraction of the height are atria.
        min_core_fraction: smallest core considered, as a fraction of the image area.
    """

    smooth_sigma_px: float = 1.5
    threshold_fraction: float = 0.5
    core_fraction: float = 0.97
    max_centroid_y: float = 0.6
    min_core_fraction: float = 0.003


@dataclass(frozen=True)
class KeyframeSettings:
    """Knobs of the ED/ES detection on an LV area curve.

    Attributes:
        smooth_s: Savitzky-Golay window length in seconds; spans a few frames so speckle
            noise averages out while the short ES trough keeps its position.
        min_cycle_s: shortest cardiac cycle searched for (200 bpm).
        max_cycle_s: longest cardiac cycle searched for (35 bpm).
        min_distance_cycles: minimum spacing of two ED (or ES) frames, in dominant cycles;
            well below one because AF shortens single cycles to about 60 % of the mean.
        min_prominence: smallest peak prominence as a fraction of the curve's robust range.
        edge_frames: extrema this close to either end of the clip are not trusted.
    """

    smooth_s: float = 0.06
    min_cycle_s: float = 0.3
    max_cycle_s: float = 1.7
    min_distance_cycles: float = 0.5
    min_prominence: float = 0.25
    edge_frames: int = 1


@dataclass(frozen=True)
class Keyframes:
    """ED and ES keyframes of one clip.

    Attributes:
        ed_idx: frame index of each end-diastole (largest LV area), ascending.
        es_idx: frame index of each end-systole (smallest LV area), ascending.
        ed_frame_s: time of each ED frame (``frame_times_s[ed_idx]``).
        es_frame_s: time of each ES frame.
        ed_s: ED times refined between frames by parabolic interpolation.
        es_s: ES times refined likewise.
        cycle_s: dominant cycle length of the area curve in seconds (NaN if none found).
        smoothed_area: the smoothed curve the extrema were picked on.
    """

    ed_idx: np.ndarray
    es_idx: np.ndarray
    ed_frame_s: np.ndarray
    es_frame_s: np.ndarray
    ed_s: np.ndarray
    es_s: np.ndarray
    cycle_s: float
    smoothed_area: np.ndarray


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of grey values (any float range within 0..255)."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 256.0))
    p = hist.astype(np.float64) / max(hist.sum(), 1)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(p)
    mu = np.cumsum(p * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * w0 - mu) ** 2 / (w0 * (1.0 - w0))
    return float(edges[int(np.nanargmax(between)) + 1])


def _lv_core(dark: np.ndarray, fan: np.ndarray, settings: SegmentationSettings) -> np.ndarray:
    """Mask of the LV's always-dark core, or an empty mask when no chamber is found."""
    n, h, w = dark.shape
    core = dark.mean(axis=0) >= settings.core_fraction
    labels, count = ndimage.label(core)
    if count == 0:
        return core
    idx = np.arange(1, count + 1)
    sizes = np.asarray(ndimage.sum(core, labels, idx))
    rows = np.mgrid[0:h, 0:w][0]
    centroid_y = np.asarray(ndimage.mean(rows, labels, idx)) / h
    # Background between the heart and the sector edge is dark too; chambers are walled in.
    rim = ~ndimage.binary_erosion(fan, iterations=3, border_value=0)
    touches_rim = np.asarray(ndimage.maximum(rim, labels, idx)).astype(bool)
    ok = (
        ~touches_rim
        & (centroid_y < settings.max_centroid_y)
        & (sizes >= settings.min_core_fraction * h * w)
    )
    if not ok.any():
        return np.zeros_like(core)
    best = idx[ok][np.argmax(sizes[ok])]
    return np.asarray(labels == best)


def lv_area_curve(
    frames: np.ndarray, *, settings: SegmentationSettings | None = None
) -> np.ndarray:
    """LV cavity area in pixels for every frame, measured from the images alone.

    Args:
        frames: ``(n_frames, height, width)`` grayscale clip (uint8 or float in 0..255), an
            apical-4-chamber view with the apex at the top.
        settings: segmentation knobs; defaults to :class:`SegmentationSettings`.

    Returns:
        ``(n_frames,)`` float64 areas in pixels of ``frames``; all zeros when no LV-like
        chamber is found (e.g. a blank or non-apical clip).

    Raises:
        ValueError: if ``frames`` is not a 3-D stack.
    """
    settings = settings or SegmentationSettings()
    if frames.ndim != 3:
        raise ValueError(f"frames must be (n_frames, height, width), got {frames.shape}")
    n, h, w = frames.shape
    if n == 0:
        return np.zeros(0)
    sigma = settings.smooth_sigma_px * h / _REF_SIZE
    smooth = np.empty((n, h, w), dtype=np.float32)
    for k in range(n):
        cv2.GaussianBlur(frames[k].astype(np.float32), (0, 0), sigma, dst=smooth[k])
    fan = ndimage.binary_erosion(frames.max(axis=0) > 0, iterations=2)
    if not fan.any():
        return np.zeros(n)
    sample = smooth[:: max(n // 20, 1)][:, fan]
    split = _otsu(sample)
    blood = float(np.percentile(sample[sample < split], 10)) if (sample < split).any() else 0.0
    threshold = blood + settings.threshold_fraction * (split - blood)
    dark = (smooth < threshold) & fan
    core = _lv_core(dark, fan, settings)
    if not core.any():
        return np.zeros(n)
    areas = np.zeros(n)
    for k in range(n):
        labels, _ = ndimage.label(dark[k])
        # The LV is the component overlapping most of the core, robust to a speckle hole.
        hits = np.bincount(labels[core], minlength=2)
        hits[0] = 0
        if hits.max() > 0:
            areas[k] = np.count_nonzero(labels == int(np.argmax(hits)))
    return areas


def _dominant_cycle(curve: np.ndarray, fps: float, settings: KeyframeSettings) -> float:
    """Cycle length (s) at the highest autocorrelation peak within the searched range."""
    x = curve - curve.mean()
    n = x.size
    lo = max(int(np.floor(settings.min_cycle_s * fps)), 1)
    hi = min(int(np.ceil(settings.max_cycle_s * fps)), int(0.8 * n))
    if hi <= lo + 1 or not np.any(x):
        return float("nan")
    acf = np.correlate(x, x, mode="full")[n - 1 :] / float(np.dot(x, x))
    peaks, _ = signal.find_peaks(acf[: hi + 1])
    peaks = peaks[(peaks >= lo) & (acf[peaks] > 0)]
    if peaks.size == 0:
        return float("nan")
    # The biased ACF decays with the lag, yet a multiple of the cycle can still edge out the
    # cycle itself in irregular rhythms: take the first peak that is nearly as high as the best.
    best = int(peaks[np.argmax(acf[peaks] >= 0.7 * acf[peaks].max())])
    return best / fps


def _refine(curve: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Sub-frame extremum positions by fitting a parabola through each extremum's neighbours."""
    out = idx.astype(np.float64)
    inner = (idx > 0) & (idx < curve.size - 1)
    i = idx[inner]
    left, mid, right = curve[i - 1], curve[i], curve[i + 1]
    denom = left - 2.0 * mid + right
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.where(denom != 0, 0.5 * (left - right) / denom, 0.0)
    out[inner] = i + np.clip(delta, -0.5, 0.5)
    return out


def _turning_points(curve: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Alternating maxima and minima that each stand ``delta`` above/below their neighbours.

    A hysteresis (zig-zag) walk: a running maximum is confirmed once the curve has fallen
    ``delta`` below it, then a running minimum once it has risen ``delta`` above that, and
    so on. Wiggles smaller than ``delta`` never confirm, so speckle noise on a plateau does
    not split one extremum into two. At the clip ends only the inner flank can be complete,
    so there an extremum needs a third of ``delta`` on its cut-off side.
    """
    maxima: list[int] = []
    minima: list[int] = []
    edge = delta / 3.0
    hi_i = lo_i = 0
    trend = 0  # +1 rising (tracking a maximum), -1 falling (tracking a minimum), 0 unknown
    for i in range(1, curve.size):
        v = curve[i]
        if trend >= 0 and v > curve[hi_i]:
            hi_i = i
        if trend <= 0 and v < curve[lo_i]:
            lo_i = i
        if trend >= 0 and curve[hi_i] - v >= delta:
            if trend == 1 or curve[hi_i] - curve[: hi_i + 1].min() >= edge:
                maxima.append(hi_i)
            trend, lo_i = -1, i
        elif trend <= 0 and v - curve[lo_i] >= delta:
            if trend == -1 or curve[: lo_i + 1].max() - curve[lo_i] >= edge:
                minima.append(lo_i)
            trend, hi_i = 1, i
    last = curve.size - 1
    if trend == 1 and curve[hi_i] - curve[last] >= edge:
        maxima.append(hi_i)
    elif trend == -1 and curve[last] - curve[lo_i] >= edge:
        minima.append(lo_i)
    return np.asarray(maxima, dtype=np.int64), np.asarray(minima, dtype=np.int64)


def detect_keyframes(
    area: np.ndarray,
    frame_times_s: np.ndarray,
    *,
    settings: KeyframeSettings | None = None,
) -> Keyframes:
    """Find end-diastole (area maxima) and end-systole (area minima) frames.

    Args:
        area: LV area per frame (any unit), e.g. from :func:`lv_area_curve`.
        frame_times_s: time of each frame in seconds, increasing.
        settings: detection knobs; defaults to :class:`KeyframeSettings`.

    Returns:
        The keyframes; empty arrays when the curve has no usable cardiac cycle.

    Raises:
        ValueError: if ``area`` and ``frame_times_s`` differ in length.
    """
    settings = settings or KeyframeSettings()
    area = np.asarray(area, dtype=np.float64)
    times = np.asarray(frame_times_s, dtype=np.float64)
    if area.shape != times.shape or area.ndim != 1:
        raise ValueError(f"area {area.shape} and frame_times_s {times.shape} must be 1-D, equal")
    empty = np.zeros(0, dtype=np.int64)
    if area.size < 5 or not np.all(np.isfinite(area)) or np.ptp(area) == 0:
        return Keyframes(empty, empty, *(np.zeros(0),) * 4, float("nan"), area.copy())
    fps = 1.0 / float(np.median(np.diff(times)))
    window = max(int(round(settings.smooth_s * fps)) | 1, 3)
    window = min(window, area.size - (1 - area.size % 2))
    smooth = signal.savgol_filter(area, window, polyorder=2, mode="interp")
    cycle = _dominant_cycle(smooth, fps, settings)
    lo, hi = np.percentile(smooth, [5, 95])
    ed, es = _turning_points(smooth, settings.min_prominence * max(hi - lo, 1e-9))
    edge = settings.edge_frames
    ed = ed[(ed >= edge) & (ed < area.size - edge)]
    es = es[(es >= edge) & (es < area.size - edge)]

    def refined(idx: np.ndarray) -> np.ndarray:
        return np.interp(_refine(smooth, idx), np.arange(times.size), times)

    return Keyframes(
        ed_idx=ed,
        es_idx=es,
        ed_frame_s=times[ed],
        es_frame_s=times[es],
        ed_s=refined(ed),
        es_s=refined(es),
        cycle_s=cycle,
        smoothed_area=smooth,
    )
