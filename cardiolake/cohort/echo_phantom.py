"""Apical-4-chamber echo phantom whose LV motion is locked to the concurrent 12-lead ECG.

The phantom is deliberately simple but *measurable*: the LV cavity is a dark, closed region
(myocardium around it, a bright mitral annulus below it), so a threshold-and-seed
segmentation recovers its area curve. End-diastole (largest area) falls at R peak +
electromechanical delay and end-systole (smallest area) at the T-wave end, which is exactly
the coupling the ECG/echo aligner has to learn. Surrounding anatomy is drawn as sub-pixel
polygons per frame (cheap), the LV cavity is sampled analytically (its pixel count is the
truth) and speckle, blur and display mapping run vectorised over the whole clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from cardiolake.cohort.latent import PatientState
from cardiolake.cohort.signals import EchoSimulation

#: Displayed depth of the sector in cm; sets the physical pixel size of every clip.
DEPTH_CM = 18.0
#: A point (x, y as fractions of the image size) inside the LV cavity in every frame, for
#: seeded segmentation in tests and QC; the cavity never contracts past it.
LV_SEED = (0.58, 0.34)

_APEX = np.array([0.54, 0.14])  # LV apex, just below the transducer as in an apical view
_TILT = np.deg2rad(12.0)  # LV long axis leans right: base lower-right, RV to its left
_L_ED = 0.42  # LV long axis at end-diastole (fraction of size) for a normal heart
_W_ED = 0.135  # LV half-width at end-diastole
_WALL = 0.05  # LV wall thickness at end-diastole
_ANNULUS = 0.035  # mitral annulus band between LV base and left atrium
_SUBPIXEL = 4  # fractional bits for cv2 polygon vertices
_N_OUTLINE = 18  # outline points per chamber side, apex to base
_BLOOD, _MYO, _RV_WALL, _VALVE, _PERI = 0.03, 0.5, 0.42, 0.78, 0.85
_LUT_SIZE = 4096
_GAMMA_LUT = (np.linspace(0.0, 1.0, _LUT_SIZE) ** 0.65 * 255.0).round().astype(np.uint8)


@dataclass(frozen=True)
class PhantomEcho(EchoSimulation):
    """An :class:`EchoSimulation` that also carries the LV geometry behind each frame.

    Attributes:
        lv_apex_px: ``(n_frames, 2)`` LV cavity apex (x, y) in pixels.
        lv_axis: ``(2,)`` unit vector from apex towards the mitral plane (x, y).
        lv_length_px: ``(n_frames,)`` apex-to-mitral-plane length in pixels.
        lv_half_width_px: ``(n_frames,)`` half-width scale in pixels (``lv_profile`` = 1).
        ed_length_px: LV length at true end-diastole (the largest it gets).
        ed_half_width_px: LV half-width scale at true end-diastole.
        pixel_spacing_cm: physical size of one (square) pixel.
    """

    lv_apex_px: np.ndarray
    lv_axis: np.ndarray
    lv_length_px: np.ndarray
    lv_half_width_px: np.ndarray
    ed_length_px: float
    ed_half_width_px: float
    pixel_spacing_cm: float


def lv_profile(x: np.ndarray) -> np.ndarray:
    """Cavity half-width (fraction of the maximum) at fraction ``x`` of the apex→base axis.

    An elliptic apex that narrows slightly toward the annulus, i.e. the bullet shape an
    A4C LV has; beyond the base (``x > 1``) the width stays at its base value.
    """
    x = np.clip(x, 0.0, 1.0)
    taper = 1.0 - 0.12 * _smoothstep((x - 0.7) / 0.3)
    return np.sqrt(np.clip(1.0 - (1.0 - x) ** 2, 0.0, 1.0)) * taper


def lv_chords(
    apex: np.ndarray, axis: np.ndarray, length: float, half_width: float, n_discs: int = 20
) -> np.ndarray:
    """Method-of-discs chords across the LV cavity, apex to base.

    Args:
        apex: cavity apex (x, y) in pixels.
        axis: unit vector from apex to the mitral plane.
        length: apex-to-mitral-plane length in pixels.
        half_width: half-width scale in pixels.
        n_discs: number of equally spaced discs.

    Returns:
        ``(n_discs, 4)`` rows ``x1, y1, x2, y2``: chord ends on the right then left wall,
        each chord perpendicular to the long axis at the centre of its disc.
    """
    normal = np.array([axis[1], -axis[0]])
    x = (np.arange(n_discs) + 0.5) / n_discs
    centre = apex[None, :] + (x * length)[:, None] * axis
    half = (half_width * lv_profile(x))[:, None] * normal
    return np.hstack([centre + half, centre - half])


def disc_volume_ml(length_cm: float, half_width_cm: float, n_discs: int = 20) -> float:
    """LV volume by the single-plane method of discs for the phantom's cavity shape."""
    x = (np.arange(n_discs) + 0.5) / n_discs
    radius = half_width_cm * lv_profile(x)
    return float(np.sum(np.pi * radius**2) * length_cm / n_discs)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.asarray(x * x * (3.0 - 2.0 * x))


def _beats(
    state: PatientState, r_peaks_s: np.ndarray, t_end_s: np.ndarray, t0: float, t1: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R peaks, ED and ES times covering ``[t0, t1]``, extrapolated with the mean RR."""
    r = np.asarray(r_peaks_s, dtype=np.float64)
    te = np.asarray(t_end_s, dtype=np.float64)
    if r.shape != te.shape:
        raise ValueError(f"r_peaks_s {r.shape} and t_end_s {te.shape} must have one T end per R")
    if r.size == 0:  # no ECG beats at all: fall back to the patient's mean rhythm
        r, te = np.array([t0]), np.array([t0 + state.qt_ms / 1000.0])
    rr = float(np.mean(np.diff(r))) if r.size > 1 else state.rr_s
    known = np.isfinite(te)  # a T wave cut off by the record end may come without its end
    qt = float(np.median(te[known] - r[known])) if known.any() else state.qt_ms / 1000.0
    te = np.where(known, te, r + qt)
    n_before = max(int(np.ceil((r[0] - (t0 - 2 * rr)) / rr)), 0)
    n_after = max(int(np.ceil((t1 + 2 * rr - r[-1]) / rr)), 0)
    before = r[0] - rr * np.arange(n_before, 0, -1)
    r = np.concatenate([before, r, r[-1] + rr * np.arange(1, n_after + 1)])
    te = np.concatenate([r[:n_before] + qt, te, r[r.size - n_after :] + qt])
    ed = r + state.emd_ms / 1000.0
    # Keep systole and diastole non-degenerate even when QT crowds a short (AF) RR interval.
    rr_next = np.append(np.diff(ed), rr)
    es = np.clip(te, ed + 0.15 * rr_next, ed + rr_next - np.minimum(0.08, 0.2 * rr_next))
    return r, ed, es


def _area_ratio(t: np.ndarray, ed: np.ndarray, es: np.ndarray, rho: float, af: bool) -> np.ndarray:
    """LV area relative to end-diastole at times ``t`` (1 at each ED, ``rho`` at each ES)."""
    i = np.searchsorted(ed, t, side="right") - 1
    ed_i, es_i, ed_next = ed[i], es[i], ed[i + 1]
    systole = t < es_i
    # Ejection: smooth fall with zero slope at ED and ES, so ED/ES are the true extrema.
    tau = np.clip((t - ed_i) / (es_i - ed_i), 0.0, 1.0) ** 0.85
    fall = 0.5 * (1.0 - np.cos(np.pi * tau))
    # Diastole: rapid filling, diastasis, then the atrial kick (absent in AF).
    dia = ed_next - es_i
    d1 = np.clip(0.35 * dia, 0.08, 0.20)
    d3 = np.zeros_like(dia) if af else np.clip(0.25 * dia, 0.06, 0.14)
    d2 = np.maximum(dia - d1 - d3, 1e-3)
    f1, f2, f3 = (0.85, 0.15, 0.0) if af else (0.72, 0.08, 0.20)
    s = t - es_i
    rise = (
        f1 * _smoothstep(s / d1)
        + f2 * _smoothstep((s - d1) / d2)
        + f3 * _smoothstep((s - d1 - d2) / np.maximum(d3, 1e-3))
    )
    return np.where(systole, 1.0 - (1.0 - rho) * fall, rho + (1.0 - rho) * rise)


def _chamber_polygon(
    apex: np.ndarray, axis: np.ndarray, length: np.ndarray, half_width: np.ndarray, ext: float
) -> np.ndarray:
    """``(F, P, 2)`` bullet-shaped outline per frame, extended ``ext`` past the base."""
    normal = np.array([axis[1], -axis[0]])
    x = 1.0 - np.cos(np.linspace(0.0, np.pi / 2, _N_OUTLINE))  # dense where the apex curves
    along = x[None, :] * length[:, None]
    across = half_width[:, None] * lv_profile(x)[None, :]
    base = (length + ext)[:, None] * np.ones((1, 1))
    along = np.concatenate([along, base], axis=1)
    across = np.concatenate([across, across[:, -1:]], axis=1)
    right = apex[:, None, :] + along[..., None] * axis + across[..., None] * normal
    left = apex[:, None, :] + along[..., None] * axis - across[..., None] * normal
    return np.concatenate([right, left[:, ::-1]], axis=1)


def _ellipse_polygon(
    centre: np.ndarray, axis: np.ndarray, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """``(F, P, 2)`` ellipse outline with semi-axis ``a`` along ``axis`` and ``b`` across."""
    normal = np.array([axis[1], -axis[0]])
    phi = np.linspace(0.0, 2 * np.pi, 32, endpoint=False)
    along = a[:, None] * np.cos(phi)[None, :]
    across = b[:, None] * np.sin(phi)[None, :]
    return np.asarray(centre[:, None, :] + along[..., None] * axis + across[..., None] * normal)


def _lv_masks(
    outline: np.ndarray, apex: np.ndarray, axis: np.ndarray, length: np.ndarray, half_w: np.ndarray
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Pixel-centre-inside-cavity masks ``(F, h, w)`` over a bounding box, and that box.

    cv2.fillPoly also claims pixels its edges merely touch, which inflates the area by a few
    per cent and makes it jitter with sub-pixel motion; sampling pixel centres is unbiased.
    Only the bounding box of ``outline`` (the cavity polygons) is evaluated.
    """
    lo = np.maximum(np.floor(outline.reshape(-1, 2).min(axis=0)).astype(int), 0)
    hi = np.ceil(outline.reshape(-1, 2).max(axis=0)).astype(int) + 1
    ys, xs = np.mgrid[lo[1] : hi[1], lo[0] : hi[0]].astype(np.float32)
    dx = xs[None] - apex[:, 0, None, None].astype(np.float32)
    dy = ys[None] - apex[:, 1, None, None].astype(np.float32)
    d = dx * axis[0] + dy * axis[1]
    v = dx * axis[1] - dy * axis[0]
    rel = d / length[:, None, None].astype(np.float32)
    inside = (rel >= 0) & (rel <= 1) & (np.abs(v) <= half_w[:, None, None] * lv_profile(rel))
    return inside, (slice(lo[1], hi[1]), slice(lo[0], hi[0]))


# Outline vertices bounding the extension past the base: right base, right end, left end,
# left base. Filled bright, they are the mitral annulus that closes the LV off from the LA.
_ANNULUS_BAND = [_N_OUTLINE - 1, _N_OUTLINE, _N_OUTLINE + 1, _N_OUTLINE + 2]


def _fill(img: np.ndarray, poly: np.ndarray, value: float) -> None:
    pts = np.round(poly * (1 << _SUBPIXEL)).astype(np.int32)
    cv2.fillPoly(img, [pts], value, lineType=cv2.LINE_8, shift=_SUBPIXEL)


def _speckle(rng: np.random.Generator, shape: tuple[int, int, int], scale: float) -> np.ndarray:
    """Rayleigh speckle (mean 1), correlated like a beam PSF and decorrelating frame to frame.

    The complex field is drawn at half lateral resolution and stretched, because the lateral
    PSF is wider than the axial one anyway; that halves the cost of the random draws.
    """
    n, h, w = shape
    half = (w + 1) // 2
    z = rng.standard_normal((2, n * h, half), dtype=np.float32)
    z = np.stack([cv2.resize(part, (w, n * h), interpolation=cv2.INTER_LINEAR) for part in z], -1)
    z = z.reshape(n, h, w, 2)
    z[1:] = 0.8 * z[1:] + 0.6 * z[:-1]  # partial persistence of speckle between frames
    for k in range(n):
        z[k] = cv2.GaussianBlur(z[k], (0, 0), sigmaX=0.5 * scale, sigmaY=0.55 * scale)
    flat = z.reshape(-1, 2)
    mag: np.ndarray = cv2.magnitude(flat[:, 0].copy(), flat[:, 1].copy()).reshape(n, h, w)
    return np.asarray(mag / float(mag.mean()))


def _static_layers(
    rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sector mask, depth gain and the textured background (lung/soft tissue) of the clip."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    x = (xx + 0.5) / size - 0.5
    y = (yy + 0.5) / size + 0.01  # transducer sits just above the top edge
    depth = np.hypot(x, y)
    angle = np.arctan2(x, y)
    fan = ((np.abs(angle) < np.deg2rad(44.0)) & (depth < 0.97) & (depth > 0.03)).astype(np.uint8)
    gain = np.exp(-0.55 * depth)  # mild attenuation left over after time-gain compensation
    gain += 0.25 * np.exp(-((depth / 0.05) ** 2))  # near-field reverberation clutter
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), 4.0 * size / 128)
    background = 0.07 + 0.05 * noise / (np.abs(noise).max() + 1e-9)
    return fan, gain.astype(np.float32), background.astype(np.float32)


def simulate_echo(
    state: PatientState,
    rng: np.random.Generator,
    *,
    r_peaks_s: np.ndarray,
    t_end_s: np.ndarray,
    clip_start_s: float,
    duration_s: float,
    fps: float,
    size: int = 128,
) -> PhantomEcho:
    """Simulate an apical-4-chamber clip whose LV beats in step with the patient's ECG.

    Args:
        state: latent patient state (``lvef``, ``emd_ms``, ``af``, ``lvh``, rhythm).
        rng: generator for speckle, background texture and respiratory phase.
        r_peaks_s: true R peaks of the concurrent 12-lead ECG, seconds on the ECG's axis.
        t_end_s: true T-wave ends, one per R peak, on the same axis.
        clip_start_s: clip start on the ECG axis; beats outside the ECG are extrapolated.
        duration_s: clip length in seconds.
        fps: frame rate in Hz.
        size: image height and width in pixels.

    Returns:
        The clip with clip-relative truth (first frame at t=0). It is a
        :class:`PhantomEcho`, i.e. an ``EchoSimulation`` plus the LV geometry per frame.

    Raises:
        ValueError: if ``r_peaks_s`` and ``t_end_s`` differ in length or the clip is empty.
    """
    n_frames = int(round(duration_s * fps))
    if n_frames < 1:
        raise ValueError(f"clip of {duration_s} s at {fps} fps has no frames")
    times = np.arange(n_frames) / fps
    t_abs = clip_start_s + times
    r_all, ed, es = _beats(state, r_peaks_s, t_end_s, clip_start_s, clip_start_s + duration_s)
    rho = (1.0 - state.lvef / 100.0) ** (2.0 / 3.0)  # volume ∝ area^1.5
    ratio = _area_ratio(t_abs, ed, es, rho, state.af)

    # Geometry in pixels. Dilation grows with falling EF (remodelling), the wall with LVH.
    dil = 1.0 + 0.22 * float(np.clip((55.0 - state.lvef) / 35.0, 0.0, 1.0))
    axis = np.array([np.sin(_TILT), np.cos(_TILT)])
    normal = np.array([axis[1], -axis[0]])
    resp_phase = rng.uniform(0.0, 2 * np.pi)
    sway = 0.006 * np.sin(2 * np.pi * state.resp_rate_hz * t_abs + resp_phase)
    apex = (_APEX[None, :] + sway[:, None] * np.array([0.4, 1.0])) * size
    # Self-similar scaling (base descends toward the fixed apex): disc volume ∝ area^1.5
    # holds exactly, so volumes from the EchoNet chords reproduce the latent EF.
    length = _L_ED * dil * np.sqrt(ratio) * size
    half_w = _W_ED * dil * np.sqrt(ratio) * size
    wall = _WALL * (1.35 if state.lvh else 1.0) * ratio**-0.45 * size  # systolic thickening
    annulus = _ANNULUS * size

    lv_cav = _chamber_polygon(apex, axis, length, half_w, 0.0)
    outer_apex = apex - (0.8 * wall)[:, None] * axis
    lv_out = _chamber_polygon(outer_apex, axis, length + 0.8 * wall, half_w + wall, annulus)
    rim = 0.025 * size
    peri = _chamber_polygon(
        outer_apex - rim * axis, axis, length + 0.8 * wall + rim, half_w + wall + rim, 0.0
    )
    # RV: narrower, apex lower, hugging the septum from the left; it shortens less.
    rv_ratio = 1.0 - 0.6 * (1.0 - ratio)
    rv_w = 0.8 * _W_ED * dil * rv_ratio**0.6 * size
    rv_off = half_w + wall + rv_w
    rv_apex = apex + (0.22 * length)[:, None] * axis - rv_off[:, None] * normal
    rv_len = length * 0.78
    rv_cav = _chamber_polygon(rv_apex, axis, rv_len, rv_w, 0.0)
    rv_wall = 0.025 * size
    rv_out = _chamber_polygon(
        rv_apex - rv_wall * axis, axis, rv_len + rv_wall, rv_w + rv_wall, annulus
    )
    # Atria hang from the annuli and fill while the ventricles empty.
    atrial = 1.0 + 0.12 * (1.0 - ratio) / max(1.0 - rho, 1e-3)
    base = apex + length[:, None] * axis
    la_a, la_b = 0.12 * dil * atrial * size, 1.0 * _W_ED * dil * atrial * size
    la_c = base + (annulus + la_a)[:, None] * axis
    rv_base = rv_apex + rv_len[:, None] * axis
    ra_a, ra_b = 0.11 * dil * atrial * size, rv_w * 1.25 * atrial
    ra_c = rv_base + (annulus + ra_a)[:, None] * axis
    la = _ellipse_polygon(la_c, axis, la_a, la_b)
    ra = _ellipse_polygon(ra_c, axis, ra_a, ra_b)
    la_out = _ellipse_polygon(la_c, axis, la_a + 0.02 * size, la_b + 0.02 * size)
    ra_out = _ellipse_polygon(ra_c, axis, ra_a + 0.02 * size, ra_b + 0.02 * size)

    fan, gain, background = _static_layers(rng, size)
    scale = size / 128.0
    echo = np.empty((n_frames, size, size), dtype=np.float32)
    lv_mask, (rows, cols) = _lv_masks(lv_cav, apex, axis, length, half_w)
    area = lv_mask.sum(axis=(1, 2)).astype(np.float64)
    for k in range(n_frames):
        img = echo[k]
        img[:] = background
        # Painter's order: later layers win, so the LV (drawn last) is never cut by neighbours.
        _fill(img, peri[k], _PERI)
        # Each chamber's wall is painted over its predecessor's blood, leaving a septum.
        for wall_poly, blood_poly in ((rv_out, rv_cav), (ra_out, ra), (la_out, la)):
            _fill(img, wall_poly[k], _RV_WALL)
            _fill(img, blood_poly[k], _BLOOD)
        _fill(img, lv_out[k], _MYO)
        _fill(img, lv_out[k][_ANNULUS_BAND], _VALVE)
        img[rows, cols][lv_mask[k]] = _BLOOD
        cv2.GaussianBlur(img, (0, 0), 0.7 * scale, dst=img)  # soft tissue/blood borders

    echo *= _speckle(rng, echo.shape, scale)
    echo *= gain
    # Display mapping: gamma (a cheap stand-in for log compression) through a 12-bit LUT.
    echo *= 1.25 * (_LUT_SIZE - 1)
    np.minimum(echo, _LUT_SIZE - 1, out=echo)
    frames = _GAMMA_LUT[echo.astype(np.uint16)]
    frames *= fan

    end = clip_start_s + duration_s

    def inside(t: np.ndarray) -> np.ndarray:
        return t[(t >= clip_start_s) & (t < end)] - clip_start_s

    return PhantomEcho(
        frames=frames,
        fps=float(fps),
        frame_times_s=times,
        lv_area_px=area,
        ed_s=inside(ed),
        es_s=inside(es),
        r_wave_s=inside(r_all),
        lv_apex_px=apex,
        lv_axis=axis,
        lv_length_px=length,
        lv_half_width_px=half_w,
        ed_length_px=_L_ED * dil * size,
        ed_half_width_px=_W_ED * dil * size,
        pixel_spacing_cm=DEPTH_CM / size,
    )
