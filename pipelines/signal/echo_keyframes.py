"""LV cavity area and end-diastole / end-systole keyframes of an apical-4-chamber echo clip.

Plain numpy functions that a Spark task calls once per clip. The LV is found from the images
alone: blood is dark and walled in by bright myocardium, so a threshold between the two
classes and a connected-component search recover the cavity. The cavity is the dark region
that stays dark through the whole clip (its end-systolic core), is walled off from the sector
edge and sits in the upper part of the image where an apical view puts the ventricles; the
largest such region is the LV.

Its area curve peaks at end-diastole (ED) and dips at end-systole (ES). Both extrema are flat
and lopsided (ejection ends slowly, filling starts fast), and speckle moves the measured area
by about as much as one frame of motion near them, so picking the extreme frame is right only
~85 % of the time. Instead each extremum is located by fitting a kink model — area falling
monotonically on both sides of the keyframe, with a shape shared by all beats of the clip —
which times the keyframe from the steep flanks rather than from the noisy flat top.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage, optimize, signal

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
        max_area_ratio: a frame whose cavity exceeds this multiple of the clip's median has
            leaked through a wall drop-out into a neighbouring chamber; it is interpolated
            from its neighbours (the LV's own ED/ES ratio stays below 2.5, i.e. < 1.6 x median).
    """

    smooth_sigma_px: float = 1.5
    threshold_fraction: float = 0.5
    core_fraction: float = 0.97
    max_centroid_y: float = 0.6
    min_core_fraction: float = 0.003
    max_area_ratio: float = 2.0


@dataclass(frozen=True)
class KeyframeSettings:
    """Knobs of the ED/ES detection on an LV area curve.

    Attributes:
        smooth_frames: Savitzky-Golay window (frames) of the curve used to find candidates;
            they only need to land within ``search_frames`` of a keyframe, since the timing
            itself is fitted on the raw curve.
        min_cycle_s: shortest cardiac cycle searched for (200 bpm).
        max_cycle_s: longest cardiac cycle searched for (35 bpm).
        min_swing: smallest rise/fall that separates an ED from an ES, as a fraction of the
            curve's 5-95 % range; real beats swing the full range, speckle a few per cent.
        fit_cycles: half-width of the kink-fit window as a fraction of the dominant cycle;
            wide enough to reach the steep flanks, narrow enough to stay within one phase.
        fit_max_s: upper bound of that half-width in seconds (slow hearts).
        search_frames: the refined keyframe may move this far from its candidate.
        plateau_noise: a flat top (ED in atrial fibrillation, where there is no atrial kick)
            extends the forward search to where the curve leaves the candidate's value by
            this many noise standard deviations.
        plateau_max_s: longest forward extension in seconds.
        min_ejection: across the fit window a keyframe's ejection side (after ED, before
            ES) must fall by this fraction of ``min_swing``, which pins ED to the end of a
            flat top rather than its start.
        iterations: alternations of shared-shape fit and per-beat timing.
        edge_noise: a keyframe within a few frames of a clip end is reported only if the
            frames between it and the end have changed by this many noise standard
            deviations (as the clip's shared shape predicts), i.e. the next phase has begun.
        edge_frames: keyframes this close to either end of the clip are dropped.
    """

    smooth_frames: int = 7
    min_cycle_s: float = 0.3
    max_cycle_s: float = 1.7
    min_swing: float = 0.25
    fit_cycles: float = 0.2
    fit_max_s: float = 0.14
    search_frames: float = 1.5
    plateau_noise: float = 2.5
    plateau_max_s: float = 0.4
    min_ejection: float = 0.25
    iterations: int = 3
    edge_noise: float = 3.0
    edge_frames: int = 1


@dataclass(frozen=True)
class Keyframes:
    """ED and ES keyframes of one clip.

    Attributes:
        ed_idx: frame index of each end-diastole (largest LV area), ascending.
        es_idx: frame index of each end-systole (smallest LV area), ascending.
        ed_frame_s: time of each ED frame (``frame_times_s[ed_idx]``).
        es_frame_s: time of each ES frame.
        ed_s: ED times refined between frames (the fitted kink; ``ed_idx`` is its nearest frame).
        es_s: ES times refined likewise.
        cycle_s: dominant cycle length of the area curve in seconds (NaN if none found).
        noise: estimated standard deviation of the area measurement (curve units).
        smoothed_area: the smoothed curve the candidates were picked on.
    """

    ed_idx: np.ndarray
    es_idx: np.ndarray
    ed_frame_s: np.ndarray
    es_frame_s: np.ndarray
    ed_s: np.ndarray
    es_s: np.ndarray
    cycle_s: float
    noise: float
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
    _, h, w = dark.shape
    core: np.ndarray = dark.mean(axis=0) >= settings.core_fraction
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
    leaked = areas > settings.max_area_ratio * np.median(areas)
    if leaked.any() and not leaked.all():
        frame = np.arange(n)
        areas[leaked] = np.interp(frame[leaked], frame[~leaked], areas[~leaked])
    return areas


def _dominant_cycle(curve: np.ndarray, fps: float, settings: KeyframeSettings) -> float:
    """Cycle length (s) from the autocorrelation of the area curve (NaN if none is found)."""
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


def _noise_sd(curve: np.ndarray) -> float:
    """Robust standard deviation of frame-to-frame measurement noise.

    The residual from a short cubic Savitzky-Golay fit holds little signal; its median
    absolute value, rescaled for the Gaussian and for the fit's own leverage (0.486 at
    the centre of a 5-point cubic), estimates the noise.
    """
    if curve.size < 5:
        return 0.0
    residual = curve - signal.savgol_filter(curve, 5, 3)
    return float(1.4826 * np.median(np.abs(residual)) / np.sqrt(1.0 - 0.486))


def _kink_basis(x: np.ndarray, t0: float, width: float) -> np.ndarray:
    """Shape functions of a curve falling away from ``t0`` on both sides.

    Per side ``u**2`` and ``u**2 - 2/3 u**3`` (``u`` = distance / ``width``): non-negative
    combinations of the two start flat at ``t0`` with some curvature, may level off, and never
    turn back within the window. So a non-negative least-squares fit can neither bend into
    noise nor slide the kink along a plateau (a shape that stays flat after ``t0`` and only
    then falls is not in the family).
    """
    left = np.clip((t0 - x) / width, 0.0, None)
    right = np.clip((x - t0) / width, 0.0, None)
    return np.stack(
        [left**2, left**2 - left**3 * (2 / 3), right**2, right**2 - right**3 * (2 / 3)], axis=1
    )


def _kink_cost(
    y: np.ndarray, t0: float, width: float, shape: np.ndarray | None, ejection: slice, drop: float
) -> float:
    """Mean squared residual of the kink model at ``t0``.

    With ``shape`` None the beat gets its own shape, which must fall by at least ``drop``
    across the window on the ``ejection`` side (its basis columns): ED opens and ES closes
    the ejection, so a flat top's far corner (end of filling) is no keyframe.
    """
    x = np.arange(y.size, dtype=np.float64)
    inside = np.abs(x - t0) <= width
    if inside.sum() < 4:
        return float("inf")
    basis = _kink_basis(x[inside], t0, width)
    basis -= basis.mean(axis=0)  # the level of each beat is free
    yy = y[inside] - y[inside].mean()
    if shape is None:
        shape, _ = optimize.nnls(basis, -yy)
        coef = shape[ejection]
        if coef[0] + coef[1] / 3.0 < drop:  # the side's fall at the window edge
            return float("inf")
    return float(np.mean((yy + basis @ shape) ** 2))


def _best_offset(
    y: np.ndarray,
    c: float,
    offsets: np.ndarray,
    width: float,
    shape: np.ndarray | None,
    ejection: slice,
    drop: float,
) -> float | None:
    """The offset from ``c`` (within the clip) with the lowest kink cost, None if none fits."""
    offsets = offsets[(c + offsets >= 0) & (c + offsets <= y.size - 1)]
    costs = [_kink_cost(y, c + o, width, shape, ejection, drop) for o in offsets]
    if not costs or not np.isfinite(np.min(costs)):
        return None
    return float(offsets[int(np.argmin(costs))])


def _fit_kinks(
    y: np.ndarray,
    candidates: np.ndarray,
    reach: np.ndarray,
    width: float,
    ejection: slice,
    drop: float,
    settings: KeyframeSettings,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Sub-frame keyframe positions (in frames) of the maxima of ``y`` near ``candidates``.

    Alternates a per-beat timing search with a fit of one shape to all beats, so that the
    steep flanks of every beat inform the shape and the flat tops no longer decide timing.
    ``ejection`` and ``drop`` are passed to :func:`_kink_cost` for the first, per-beat pass.
    Returns the positions and the shared shape (None without candidates).
    """
    positions = candidates.astype(np.float64)
    step = 0.05
    shape: np.ndarray | None = None
    for it in range(settings.iterations + 1):
        for k, (c, ahead) in enumerate(zip(candidates, reach, strict=True)):
            # Coarse to fine: quarter frames over the whole range, then 0.05 frame steps.
            coarse = np.arange(-settings.search_frames, ahead + step / 2, 5 * step)
            best = _best_offset(y, c, coarse, width, shape, ejection, drop)
            if best is not None:
                fine = best + np.arange(-4, 5) * step
                refined = _best_offset(y, c, fine, width, shape, ejection, drop)
                positions[k] = c + (best if refined is None else refined)
        if it == settings.iterations:
            break
        x = np.arange(y.size, dtype=np.float64)
        blocks, targets = [], []
        for t0 in positions:
            inside = np.abs(x - t0) <= width
            basis = _kink_basis(x[inside], t0, width)
            blocks.append(basis - basis.mean(axis=0))
            targets.append(y[inside] - y[inside].mean())
        if blocks:
            shape, _ = optimize.nnls(np.vstack(blocks), -np.concatenate(targets))
    return positions, shape


def _edge_kink(
    y: np.ndarray,
    shape: np.ndarray,
    width: float,
    search: tuple[float, float],
    outer: float,
    min_change: float,
) -> float | None:
    """A keyframe near a clip end, timed with the clip's shared shape, or None.

    The search runs past the clip end, and a kink inside the clip counts only if the shape
    predicts the curve to have moved by ``min_change`` between the kink and the clip end:
    the frames beyond the keyframe must show that the next phase has begun. ``outer`` is
    the clip's first or last frame index.
    """
    offsets = np.arange(search[0], search[1] + 1e-9, 0.05)
    x = np.arange(y.size, dtype=np.float64)
    costs = []
    for t0 in offsets:
        inside = np.abs(x - t0) <= width
        if inside.sum() < 4:
            costs.append(np.inf)
            continue
        basis = _kink_basis(x[inside], t0, width)
        model = -(basis - basis.mean(axis=0)) @ shape
        costs.append(float(np.mean((y[inside] - y[inside].mean() - model) ** 2)))
    if not np.isfinite(np.min(costs)):
        return None
    best = float(offsets[int(np.argmin(costs))])
    # The shape's change from the kink to the clip end (no further than the window).
    end = float(np.clip(outer, best - width, best + width))
    change = float(_kink_basis(np.array([end]), best, width)[0] @ shape)
    return best if 0.0 <= best <= y.size - 1 and change >= min_change else None


def _plateau_reach(smooth: np.ndarray, idx: np.ndarray, tolerance: float, limit: int) -> np.ndarray:
    """Frames after each maximum over which ``smooth`` stays within ``tolerance`` of it."""
    reach = np.empty(idx.size)
    for k, c in enumerate(idx):
        j = c
        while j + 1 < smooth.size and smooth[c] - smooth[j + 1] <= tolerance and j - c < limit:
            j += 1
        reach[k] = j - c + 1.0
    return reach


def _complete_edges(
    area: np.ndarray,
    smooth: np.ndarray,
    positions: list[list[float]],
    shapes: list[np.ndarray | None],
    width: float,
    delta: float,
    noise: float,
    settings: KeyframeSettings,
) -> None:
    """Add the ED or ES that sits within a few frames of a clip end, if the data show one.

    The turning-point walk needs a flank on both sides, which a keyframe in the first or
    last frames lacks. When the curve between the clip end and the outermost keyframe has
    swung fully (so the next keyframe is due), that keyframe is timed with the shape its
    kind shares across the clip, searching up to the frames beyond the end.
    """
    kinds = sorted((p, k) for k in (0, 1) for p in positions[k])  # 0 = ED, 1 = ES
    if not kinds:
        return
    n, reach = area.size, 3.0 + settings.search_frames
    for at_end in (True, False):
        pos, kind = kinds[-1] if at_end else kinds[0]
        want = 1 - kind
        shape = shapes[want]
        if shape is None:
            continue
        sign = 1.0 if want == 0 else -1.0
        part = sign * (smooth[int(np.ceil(pos)) :] if at_end else smooth[: int(pos) + 1])
        if part.size < 3:
            continue
        # The curve must have swung from the known keyframe toward the missing one.
        swing = part.max() - (part[0] if at_end else part[-1])
        if swing < delta:
            continue
        peak = (int(np.ceil(pos)) if at_end else 0) + int(np.argmax(part))
        if at_end:
            search, outer = (peak - settings.search_frames, n - 1 + reach), n - 1.0
        else:
            search, outer = (-reach, peak + settings.search_frames), 0.0
        t0 = _edge_kink(sign * area, shape, width, search, outer, settings.edge_noise * noise)
        if t0 is not None and abs(t0 - pos) > width:
            positions[want].append(t0)


def detect_keyframes(
    area: np.ndarray,
    frame_times_s: np.ndarray,
    *,
    settings: KeyframeSettings | None = None,
) -> Keyframes:
    """Find end-diastole (area maxima) and end-systole (area minima) frames.

    Candidates are the alternating turning points of a smoothed curve; each is then timed to
    sub-frame precision by :func:`_fit_kinks` on the raw curve. A flat top extends the search
    forward, because ED is where ejection starts, not where filling ends. Keyframes on the
    first or last ``edge_frames`` frames are dropped (their far flank is outside the clip).

    Args:
        area: LV area per frame (any unit), e.g. from :func:`lv_area_curve`.
        frame_times_s: time of each frame in seconds, increasing and evenly spaced.
        settings: detection knobs; defaults to :class:`KeyframeSettings`.

    Returns:
        The keyframes; empty arrays when the curve has no usable cardiac cycle.

    Raises:
        ValueError: if ``area`` and ``frame_times_s`` are not 1-D arrays of equal length.

    Example:
        >>> kf = detect_keyframes(lv_area_curve(frames), np.arange(len(frames)) / fps)
        >>> kf.ed_s, kf.es_s  # seconds from the first frame
    """
    settings = settings or KeyframeSettings()
    area = np.asarray(area, dtype=np.float64)
    times = np.asarray(frame_times_s, dtype=np.float64)
    if area.shape != times.shape or area.ndim != 1:
        raise ValueError(f"area {area.shape} and frame_times_s {times.shape} must be 1-D, equal")
    empty = np.zeros(0, dtype=np.int64)
    if area.size < 7 or not np.all(np.isfinite(area)) or np.ptp(area) == 0:
        return Keyframes(empty, empty, *(np.zeros(0),) * 4, float("nan"), 0.0, area.copy())
    fps = 1.0 / float(np.median(np.diff(times)))
    window = min(settings.smooth_frames | 1, area.size - 1 + area.size % 2)
    smooth = signal.savgol_filter(area, window, 2)
    cycle = _dominant_cycle(smooth, fps, settings)
    noise = _noise_sd(area)
    lo, hi = np.percentile(smooth, [5, 95])
    delta = settings.min_swing * max(hi - lo, 1e-9)
    ed_cand, es_cand = _turning_points(smooth, delta)
    width = settings.fit_cycles * (cycle if np.isfinite(cycle) else 0.8)  # 75 bpm if unknown
    width = max(min(width, settings.fit_max_s) * fps, 2.5)
    limit = int(settings.plateau_max_s * fps)
    tolerance = settings.plateau_noise * noise
    drop = settings.min_ejection * delta
    fits = []
    # Ejection follows ED (right-hand basis columns) and precedes ES (left-hand ones).
    for sign, cand, ejection in ((1.0, ed_cand, slice(2, 4)), (-1.0, es_cand, slice(0, 2))):
        reach = _plateau_reach(sign * smooth, cand, tolerance, limit)
        reach = np.maximum(reach, settings.search_frames)
        fits.append(_fit_kinks(sign * area, cand, reach, width, ejection, drop, settings))
    positions = [list(fits[0][0]), list(fits[1][0])]
    shapes = [fits[0][1], fits[1][1]]
    _complete_edges(area, smooth, positions, shapes, width, delta, noise, settings)
    found = []
    for pos_list in positions:
        pos = np.sort(np.asarray(pos_list, dtype=np.float64))
        idx = np.clip(np.round(pos).astype(np.int64), 0, area.size - 1)
        keep = (idx >= settings.edge_frames) & (idx < area.size - settings.edge_frames)
        idx, pos = idx[keep], pos[keep]
        idx, first = np.unique(idx, return_index=True)  # two candidates may meet on one frame
        found.append((idx, np.interp(pos[first], np.arange(times.size), times)))
    (ed_idx, ed_s), (es_idx, es_s) = found
    return Keyframes(
        ed_idx=ed_idx,
        es_idx=es_idx,
        ed_frame_s=times[ed_idx],
        es_frame_s=times[es_idx],
        ed_s=ed_s,
        es_s=es_s,
        cycle_s=cycle,
        noise=noise,
        smoothed_area=smooth,
    )
