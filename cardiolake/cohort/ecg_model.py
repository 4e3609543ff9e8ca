"""Physiological 12-lead and mobile ECG simulator driven by the latent patient state.

The heart is modelled as one moving current dipole (a vectorcardiogram). Every wave of every
beat — P (right, then left atrium), the QRS components, the ST segment and T — is a kernel in
time with its own 3-D direction in Frank coordinates (X to the left, Y to the feet, Z to the
back): ECGSYN's sum of Gaussians, extended to three dimensions. The Dower matrix projects the
dipole onto I, II and V1-V6; III, aVR, aVL and aVF follow from Einthoven and Goldberger, so all
leads show the same heart from different angles and a mobile recording of the same patient
shows the same dipole. Noise is generated per electrode (RA, LA, LL, V1-V6) and combined as an
amplifier combines electrodes, so III = II - I holds for the noise too.

Randomness: the recording (beat sequence, respiration phase, noise) comes from the ``rng`` the
caller passes; the patient's anatomy (fine QRS/T/P geometry) comes from a generator keyed by the
patient's identity, so every recording of one patient shows the same heart.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, lfilter, sosfiltfilt

from cardiolake.cohort.latent import PatientState
from cardiolake.cohort.signals import EcgSimulation
from cardiolake.domain import STANDARD_LEADS

#: Beats are simulated this far before and after the record so edge waves are complete.
MARGIN_S = 2.0

# Dower et al. (1980): rows I, II, V1..V6; columns Frank X, Y, Z.
_DOWER = np.array([
    [0.632, -0.235, 0.059],
    [0.235, 1.066, -0.132],
    [-0.515, 0.157, -0.917],
    [0.044, 0.164, -1.387],
    [0.882, 0.098, -1.277],
    [1.213, 0.127, -0.601],
    [1.125, 0.127, -0.086],
    [0.831, 0.076, 0.230],
])  # fmt: skip
_I, _II = _DOWER[0], _DOWER[1]
#: Dipole (X, Y, Z) -> STANDARD_LEADS; the limb leads derived from I and II as devices do.
_LEAD_MATRIX = np.vstack(
    [_I, _II, _II - _I, -(_I + _II) / 2, _I - _II / 2, _II - _I / 2, _DOWER[2:]]
)
# Electrodes RA, LA, LL, V1..V6 -> STANDARD_LEADS (chest leads against Wilson's terminal).
_ELECTRODES = np.zeros((12, 9))
_ELECTRODES[:6, :3] = np.array([
    [-1, 1, 0], [-1, 0, 1], [0, -1, 1], [1, -0.5, -0.5], [-0.5, 1, -0.5], [-0.5, -0.5, 1],
])  # fmt: skip
_ELECTRODES[6:, :3] = -1 / 3
_ELECTRODES[6:, 3:] = np.eye(6)
# The direction lateral leads (I, V5, V6) look along, for the lateral ST deviation.
_LATERAL = _DOWER[[0, 6, 7]].sum(axis=0)
_LATERAL_DIR = _LATERAL / np.linalg.norm(_LATERAL)
_LATERAL_GAIN = float((_DOWER[[0, 6, 7]] @ _LATERAL_DIR).mean())

# QRS kernels per conduction: (centre, width) in units of the QRS duration relative to the R
# peak, direction (X, Y, Z) and magnitude relative to the main R vector. Rescaled below so the
# kernels span exactly one QRS duration.
_QRS_TEMPLATES: dict[str, tuple[tuple[float, float, tuple[float, float, float], float], ...]] = {
    "none": (
        (-0.30, 0.07, (-0.35, 0.15, -0.60), 0.12),  # septum, left to right: q in I/V6, r in V1
        # The free-wall R is two kernels turning through the frontal plane: an open QRS loop,
        # so a lead perpendicular to the axis still shows an RS complex, as real ones do.
        (-0.09, 0.11, (0.85, 0.20, 0.10), 0.60),
        (0.09, 0.11, (0.20, 0.85, 0.45), 0.60),
        (0.31, 0.08, (-0.45, -0.50, 0.55), 0.30),  # posterobasal, last: s
    ),
    "LBBB": (
        (-0.30, 0.08, (0.50, 0.05, 0.70), 0.25),  # septum right to left: no lateral q, QS in V1
        (0.00, 0.10, (0.45, 0.50, 0.65), 0.85),  # first peak of the notched lateral R
        (0.27, 0.10, (0.80, -0.05, 0.55), 1.00),  # slow cell-to-cell spread: the second peak
    ),
    "RBBB": (
        (-0.30, 0.06, (-0.35, 0.15, -0.60), 0.18),
        (-0.08, 0.085, (0.85, 0.20, -0.05), 0.60),
        (0.08, 0.085, (0.20, 0.85, 0.20), 0.60),
        (0.22, 0.07, (-0.30, -0.50, 0.30), 0.15),  # the s between r and R' in V1
        (0.48, 0.12, (-0.65, -0.05, -0.75), 0.65),  # late right ventricle: R' V1, slurred S I/V6
    ),
}
_QRS_EXTENT_SD = 2.0  # a kernel "starts" this many widths before its centre (~14 % of peak)
_T_END_SD = 2.5  # T end lies this many right-hand widths after the T peak (~4 % of the peak)


def _unit(v: np.ndarray | tuple[float, ...]) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    out: np.ndarray = a / np.linalg.norm(a, axis=-1, keepdims=True)
    return out


def _rotation(i: int, j: int, deg: np.ndarray | float) -> np.ndarray:
    """Rotation(s) turning axis ``i`` towards axis ``j`` by ``deg`` degrees, shape (..., 3, 3)."""
    rad = np.deg2rad(np.asarray(deg, dtype=float))
    m = np.zeros((*rad.shape, 3, 3))
    m[..., 0, 0] = m[..., 1, 1] = m[..., 2, 2] = 1.0
    m[..., i, i] = m[..., j, j] = np.cos(rad)
    m[..., j, i] = np.sin(rad)
    m[..., i, j] = -np.sin(rad)
    return m


def _turn_to_axis(net: np.ndarray, target_deg: float) -> float:
    """Frontal-plane rotation (degrees) that gives the net QRS vector the target lead axis.

    The Dower limb rows are not orthonormal, so the dipole angle differs from the axis seen
    in the leads; solve for the dipole direction whose projection has the target axis.
    """
    m = np.array([_I[:2], (2 * _II[:2] - _I[:2]) / math.sqrt(3)])
    c = np.array([_I[2], (2 * _II[2] - _I[2]) / math.sqrt(3)]) * net[2]
    inv = np.linalg.inv(m)
    rad = math.radians(target_deg)
    p, q = inv @ np.array([math.cos(rad), math.sin(rad)]), inv @ c
    rho2 = float(net[0] ** 2 + net[1] ** 2)
    a, b, cc = p @ p, p @ q, q @ q - rho2
    disc = b * b - a * cc
    if disc <= 0:  # a nearly sagittal vector: keep it as it is
        return 0.0
    xy = p * (b + math.sqrt(disc)) / a - q
    return math.degrees(math.atan2(xy[1], xy[0]) - math.atan2(net[1], net[0]))


def _soft_cap(x: float, knee: float = 2.2, ceiling: float = 2.8) -> float:
    """Compress very large voltages so the tallest R stays below ~3 mV."""
    if x <= knee:
        return x
    return knee + (ceiling - knee) * math.tanh((x - knee) / (ceiling - knee))


@dataclass(frozen=True)
class _Morphology:
    """One patient's wave geometry; QRS timing in units of the QRS duration."""

    qrs_mu: np.ndarray  # (K,) kernel centres relative to the R peak
    qrs_sd: np.ndarray  # (K,) kernel widths
    qrs_vec: np.ndarray  # (K, 3) mV
    t_vec: np.ndarray  # (3,) mV
    t_asym: float  # left/right width ratio of T (slow upstroke, fast downstroke)
    t_narrow: float  # <1 narrows T (peaked T of hyperkalaemia)
    st_vec: np.ndarray  # (3,) mV, ST-segment deviation
    p_vec: np.ndarray  # (2, 3) mV: right then left atrium
    p_scale: float  # P duration relative to 115 ms
    af_vec: np.ndarray  # (2, 3) mV: f-wave directions the atrial vector drifts between
    af_hz: float


def _qrs_layout(conduction: str) -> tuple[np.ndarray, np.ndarray, float]:
    tpl = _QRS_TEMPLATES[conduction]
    mu = np.array([k[0] for k in tpl])
    sd = np.array([k[1] for k in tpl])
    lo, hi = (mu - _QRS_EXTENT_SD * sd).min(), (mu + _QRS_EXTENT_SD * sd).max()
    return mu / (hi - lo), sd / (hi - lo), float(-lo / (hi - lo))


def _anatomy_rng(state: PatientState) -> np.random.Generator:
    # Keyed by identity, not by the recording rng, so 12-lead and mobile show the same heart.
    key = zlib.crc32(f"{state.patient_id}|{state.mrn}|{state.birth_date}".encode())
    return np.random.default_rng([key, state.index])


def _morphology(state: PatientState) -> _Morphology:
    arng = _anatomy_rng(state)
    g = arng.standard_normal(6)
    af_hz, af_amp = float(arng.uniform(4.5, 8.0)), float(arng.uniform(0.04, 0.1))
    mu, sd, _ = _qrs_layout(state.conduction)
    tpl = _QRS_TEMPLATES[state.conduction]
    gains = np.array([k[3] for k in tpl])
    gains = np.where(gains < 0.5, gains * np.exp(0.25 * arng.standard_normal(len(tpl))), gains)
    # Horizontal rotation moves the precordial transition zone; LVH turns QRS posteriorly.
    horizontal = _rotation(0, 2, 10.0 * g[0] + (12.0 if state.lvh else 0.0))
    vec = _unit(np.array([k[2] for k in tpl])) @ horizontal.T * gains[:, None] * state.r_amp_mv
    turn = _turn_to_axis((vec * sd[:, None]).sum(0), state.axis_deg)
    vec = vec @ _rotation(0, 1, turn).T

    # Peak QRS vector magnitude = r_amp, then keep the tallest R of the 12 leads in 0.4-2.8 mV.
    x = np.linspace(-0.8, 0.8, 641)
    shape = np.exp(-0.5 * ((x[:, None] - mu) / sd) ** 2) @ vec
    scale = state.r_amp_mv / float(np.linalg.norm(shape, axis=1).max())
    r_max = float((shape @ _LEAD_MATRIX.T).max()) * scale
    vec = vec * (scale * _soft_cap(max(r_max, 0.4)) / r_max)
    net = _unit((vec * sd[:, None]).sum(0))

    t_base = (0.55, 0.45, 0.35) if state.conduction == "RBBB" else (0.6, 0.5, -0.35)
    # The T axis follows the QRS axis only halfway: a wide QRS-T angle is itself abnormal.
    t_dir = _unit(t_base) @ horizontal.T @ _rotation(0, 1, 0.5 * turn + 8.0 * g[1]).T
    t_amp = state.t_amp_mv
    if state.conduction == "LBBB":  # secondary repolarisation: T opposite to the QRS
        t_dir, t_amp = -net, 1.4 * t_amp
    elif state.lvh:  # strain: lateral T inversion
        t_dir, t_amp = _unit(-net + 0.25 * t_dir), 1.2 * t_amp
    t_vec = t_amp * _unit(t_dir)

    st_vec = state.st_shift_mv / _LATERAL_GAIN * _LATERAL_DIR
    if state.conduction == "LBBB":
        st_vec = st_vec + 0.25 * t_vec
    hyper_k = float(np.clip((state.potassium_mmol_l - 5.2) / 0.8, 0.0, 1.0))
    p_fade = float(np.clip((state.potassium_mmol_l - 5.8) / 1.2, 0.0, 1.0))  # P flattens first
    p_gain = math.exp(0.15 * g[2]) * (1.0 - 0.6 * p_fade)
    p_vec = np.array([0.06 * _unit((0.25, 0.75, -0.45)), 0.06 * _unit((0.75, 0.45, 0.45))])
    p_scale = min(1.0 + 0.06 * g[3], (state.pr_ms / 1000 - 0.02) / 0.115)
    af_vec = af_amp * _unit(np.array([(-0.25, 0.6, -0.75), (0.1, 0.8, -0.5)]))
    return _Morphology(
        qrs_mu=mu, qrs_sd=sd, qrs_vec=vec, t_vec=t_vec,
        t_asym=1.6 - 0.6 * hyper_k, t_narrow=1.0 - 0.2 * hyper_k, st_vec=st_vec,
        p_vec=p_vec * p_gain, p_scale=float(p_scale), af_vec=af_vec, af_hz=af_hz,
    )  # fmt: skip


@dataclass(frozen=True)
class BeatTimes:
    """Ground-truth timing of every simulated beat, seconds from the record start.

    Includes the beats in the margins before 0 and after the record end.

    Attributes:
        r_s: R-peak times.
        rr_s: the RR interval preceding each beat.
        qrs_on_s: QRS onsets.
        qrs_off_s: QRS ends (J points).
        t_end_s: T-wave ends (QT = t_end - qrs_on = QTc * sqrt(RR), Bazett).
        p_on_s: P-wave onsets (NaN in atrial fibrillation).
        resp_phase_rad: phase of respiration at time 0.
    """

    r_s: np.ndarray
    rr_s: np.ndarray
    qrs_on_s: np.ndarray
    qrs_off_s: np.ndarray
    t_end_s: np.ndarray
    p_on_s: np.ndarray
    resp_phase_rad: float

    def inside(self, duration_s: float) -> np.ndarray:
        """Mask of the beats whose R peak lies in ``[0, duration_s)``."""
        return (self.r_s >= 0.0) & (self.r_s < duration_s)


def simulate_beats(
    state: PatientState, rng: np.random.Generator, *, duration_s: float
) -> BeatTimes:
    """Draw the beat sequence of one recording: the first thing a simulation takes from ``rng``.

    Sinus rhythm: mean RR ``state.rr_s`` with respiratory sinus arrhythmia and AR(1) beat-to-beat
    variability, together of standard deviation ``state.hrv_sd`` (fraction of RR). Atrial
    fibrillation: independent, irregular RRs.

    Args:
        state: the patient.
        rng: the recording's generator.
        duration_s: record length; beats cover ``[-MARGIN_S, duration_s + MARGIN_S]``.

    Returns:
        The beat times; :func:`simulate_12lead` with an identically seeded ``rng`` uses these.
    """
    rr, sd = state.rr_s, state.hrv_sd
    resp_phase = float(rng.uniform(0.0, 2 * math.pi))
    t0 = -MARGIN_S - float(rng.uniform(0.0, rr))
    rr_min = max(0.55 * rr, 0.28)  # refractoriness bounds how early a beat can come
    n = int(math.ceil((duration_s + 2 * MARGIN_S + rr) / rr_min)) + 2
    if state.af:
        s2 = math.log1p(sd * sd)
        rr_i = rr * np.exp(math.sqrt(s2) * rng.standard_normal(n) - s2 / 2)
    else:
        phi = 0.6  # slow (Mayer-wave-like) drift plus RSA, each carrying half the variance
        ar = lfilter([math.sqrt(1 - phi * phi)], [1.0, -phi], rng.standard_normal(n + 20))[20:]
        t = t0 + rr * np.arange(n)
        for _ in range(2):  # RSA depends on when the beat falls in the breath
            resp = np.sin(2 * math.pi * state.resp_rate_hz * t + resp_phase)
            rr_i = rr * (1.0 + sd / math.sqrt(2) * ar + sd * resp)
            t = t0 + np.cumsum(rr_i) - rr_i[0]
    rr_i = np.clip(rr_i, rr_min, 1.8 * rr)
    r = t0 + np.cumsum(rr_i) - rr_i[0]
    keep = r <= duration_s + MARGIN_S
    r, rr_i = r[keep], rr_i[keep]
    qrs = state.qrs_ms / 1000.0
    qrs_on = r - _qrs_layout(state.conduction)[2] * qrs
    qt = np.maximum(state.qtc_ms / 1000.0 * np.sqrt(rr_i), qrs + 0.12)
    p_on = np.full_like(r, np.nan) if state.af else qrs_on - state.pr_ms / 1000.0
    return BeatTimes(r, rr_i, qrs_on, qrs_on + qrs, qrs_on + qt, p_on, resp_phase)


@dataclass(frozen=True)
class _Kernel:
    """One wave of every beat: exp(-0.5 |x / width| ** power), width differs left/right."""

    centre: np.ndarray  # (B,) s
    sd_left: np.ndarray  # (B,) s
    sd_right: np.ndarray  # (B,) s
    vec: np.ndarray  # (B, 3) mV
    power: float = 2.0


def _render(kernels: list[_Kernel], t0: float, n: int, fs: int) -> np.ndarray:
    """Sum the kernels on the grid ``t0 + i / fs``, each only over its own window: (n, 3)."""
    idx_all, w_all = [], []
    for k in kernels:
        reach = 5.0 if k.power == 2.0 else 3.0
        half = int(math.ceil(reach * max(k.sd_left.max(), k.sd_right.max()) * fs)) + 1
        idx = np.rint((k.centre - t0) * fs).astype(np.int64)[:, None] + np.arange(-half, half + 1)
        x = idx / fs + t0 - k.centre[:, None]
        sd = np.where(x < 0, k.sd_left[:, None], k.sd_right[:, None])
        g = np.exp(-0.5 * np.abs(x / sd) ** k.power)
        ok = (idx >= 0) & (idx < n)
        idx_all.append(idx[ok])
        w_all.append((g[:, :, None] * k.vec[:, None, :])[ok])
    idx, w = np.concatenate(idx_all), np.concatenate(w_all)
    return np.stack([np.bincount(idx, weights=w[:, c], minlength=n) for c in range(3)], axis=1)


def _beat_kernels(
    state: PatientState, morph: _Morphology, beats: BeatTimes, rng: np.random.Generator
) -> list[_Kernel]:
    nb, qrs = len(beats.r_s), state.qrs_ms / 1000.0
    breath = np.sin(2 * math.pi * state.resp_rate_hz * beats.r_s + beats.resp_phase_rad)
    # Inspiration lowers the diaphragm: the heart turns vertical and its voltage changes.
    amp = 1.0 + 0.05 * breath + 0.015 * rng.standard_normal(nb)
    rot = _rotation(0, 1, 3.0 * breath) @ _rotation(1, 2, 2.0 * breath)

    def per_beat(v: np.ndarray) -> np.ndarray:
        out: np.ndarray = amp[:, None] * (rot @ v)
        return out

    def same(width: float) -> np.ndarray:
        return np.full(nb, width)

    kernels = [
        _Kernel(beats.r_s + m * qrs, same(s * qrs), same(s * qrs), per_beat(v))
        for m, s, v in zip(morph.qrs_mu, morph.qrs_sd, morph.qrs_vec, strict=True)
    ]
    sd_r = 0.1 * (beats.t_end_s - beats.qrs_on_s) * morph.t_narrow
    t_peak = beats.t_end_s - _T_END_SD * sd_r
    kernels.append(_Kernel(t_peak, morph.t_asym * sd_r, sd_r, per_beat(morph.t_vec)))
    st_sd = np.maximum(0.55 * (t_peak - beats.qrs_off_s), 0.02)
    st_mid = (beats.qrs_off_s + t_peak) / 2
    kernels.append(_Kernel(st_mid, st_sd, st_sd, per_beat(morph.st_vec), power=4.0))
    if not state.af:
        k = morph.p_scale
        for centre, width, v in ((0.04, 0.02, morph.p_vec[0]), (0.065, 0.02, morph.p_vec[1])):
            c = beats.p_on_s + centre * k
            kernels.append(_Kernel(c, same(width * k), same(width * k), per_beat(v)))
    return kernels


def _slow(rng: np.random.Generator, t: np.ndarray, step_s: float, cols: int = 1) -> np.ndarray:
    """Smooth standard-normal process(es) on ``t``: random knots every ``step_s``, (n, cols)."""
    knots = np.arange(t[0] - step_s, t[-1] + 2 * step_s, step_s)
    vals = rng.standard_normal((len(knots), cols))
    return np.stack([np.interp(t, knots, vals[:, c]) for c in range(cols)], axis=1)


def _fibrillation(
    morph: _Morphology, t: np.ndarray, fs: int, rng: np.random.Generator
) -> np.ndarray:
    """Atrial f-waves, 4-9 Hz, wandering in rate, size and direction: (n, 3) dipole."""
    slow = _slow(rng, t, 0.5, 3)
    freq = np.clip(morph.af_hz + 0.6 * slow[:, 0], 4.0, 9.0)
    phase = 2 * math.pi * np.cumsum(freq) / fs + rng.uniform(0, 2 * math.pi)
    wave = np.clip(1.0 + 0.3 * slow[:, 1], 0.3, None) * (
        np.sin(phase) + 0.3 * np.sin(2 * phase + rng.uniform(0, 2 * math.pi))
    )
    mix = (0.5 + 0.5 * np.tanh(slow[:, 2]))[:, None]
    dipole: np.ndarray = wave[:, None] * ((1 - mix) * morph.af_vec[0] + mix * morph.af_vec[1])
    return dipole


@dataclass(frozen=True)
class _Noise:
    """Per-electrode noise levels of a kind of recording (mV)."""

    wander: float  # each of three 0.05-0.5 Hz baseline components
    resp: float  # respiratory baseline swing
    hum: float  # largest differential mains amplitude
    emg: tuple[float, float]  # rms range of band-limited muscle noise
    emg_bursts: bool  # hand-held devices: bursts while the patient grips the device
    motion_per_s: float  # rate of motion artefacts
    motion: float  # their peak amplitude
    band_hz: tuple[float, float] | None  # the device's own band-pass filter, if any


_RESTING = _Noise(wander=0.03, resp=0.03, hum=0.006, emg=(0.002, 0.008), emg_bursts=False,
                  motion_per_s=0.0, motion=0.0, band_hz=None)  # fmt: skip
# Hand-held devices filter on board (AliveCor records arrive band-passed to 0.5-40 Hz).
_MOBILE = _Noise(wander=0.07, resp=0.05, hum=0.025, emg=(0.003, 0.01), emg_bursts=True,
                 motion_per_s=1 / 8, motion=0.3, band_hz=(0.5, 40.0))  # fmt: skip


def _electrode_noise(
    rng: np.random.Generator, t: np.ndarray, fs: int, resp: np.ndarray, lv: _Noise
) -> np.ndarray:
    """Wander, respiration, mains hum, EMG and motion per electrode: (n, 9) mV."""
    n, ne = len(t), 9
    f, ph = rng.uniform(0.05, 0.5, (3, ne)), rng.uniform(0, 2 * math.pi, (3, ne))
    a = rng.uniform(0.3, 1.0, (3, ne)) * lv.wander
    noise: np.ndarray = (a * np.sin(2 * math.pi * f * t[:, None, None] + ph)).sum(axis=1)
    noise += resp[:, None] * rng.uniform(-1.0, 1.0, ne) * lv.resp
    mains = 50.0 if rng.uniform() < 0.5 else 60.0
    hum_a, hum_ph = rng.uniform(0.0, lv.hum, ne), rng.uniform(0, 2 * math.pi, ne)
    if mains < 0.5 * fs:  # a device sampling slower than twice the mains frequency filters it out
        noise += hum_a * np.sin(2 * math.pi * mains * t[:, None] + hum_ph)

    spec = np.fft.rfft(rng.standard_normal((n, ne)), axis=0)
    freqs = np.fft.rfftfreq(n, 1.0 / fs)
    spec[(freqs < 20.0) | (freqs > min(150.0, 0.45 * fs))] = 0.0
    emg = np.fft.irfft(spec, n=n, axis=0)
    emg *= rng.uniform(*lv.emg, ne) / np.maximum(emg.std(axis=0), 1e-12)
    if lv.emg_bursts:
        emg *= 1.0 + 1.2 * np.clip(_slow(rng, t, 1.0, 1), 0.0, None)
    noise += emg

    k = int(rng.poisson(lv.motion_per_s * (t[-1] - t[0])))
    centre, width = rng.uniform(t[0], t[-1], k), rng.uniform(0.15, 0.5, k)
    freq, sign = rng.uniform(0.3, 2.0, k), rng.choice([-1.0, 1.0], k)
    amp = sign * rng.uniform(0.3, 1.0, k) * lv.motion
    x = t[:, None] - centre
    bumps = amp * np.exp(-0.5 * (x / width) ** 2) * np.cos(2 * math.pi * freq * x)
    noise[:, :3] += bumps @ np.eye(3)[rng.integers(0, 3, k)]  # limb electrodes move
    return noise


def _simulate(
    state: PatientState,
    rng: np.random.Generator,
    leads: tuple[str, ...],
    fs: int,
    duration_s: float,
    noise: _Noise,
) -> EcgSimulation:
    unknown = [lead for lead in leads if lead not in STANDARD_LEADS]
    if unknown or not leads:
        raise ValueError(f"leads must be non-empty names from {STANDARD_LEADS}, got {leads}")
    if fs <= 0 or duration_s <= 0:
        raise ValueError(f"fs and duration_s must be positive, got {fs}, {duration_s}")
    beats = simulate_beats(state, rng, duration_s=duration_s)
    morph = _morphology(state)
    n = int(round(duration_s * fs))
    pad = int(MARGIN_S * fs) if noise.band_hz is not None else 0  # lets the device filter settle
    t = (np.arange(n + 2 * pad) - pad) / fs
    dipole = _render(_beat_kernels(state, morph, beats, rng), float(t[0]), len(t), fs)
    if state.af:
        dipole += _fibrillation(morph, t, fs, rng)
    resp = np.sin(2 * math.pi * state.resp_rate_hz * t + beats.resp_phase_rad)
    cols = [STANDARD_LEADS.index(lead) for lead in leads]
    noise_mv = _electrode_noise(rng, t, fs, resp, noise) @ _ELECTRODES[cols].T
    signals = dipole @ _LEAD_MATRIX[cols].T + noise_mv
    if noise.band_hz is not None:
        lo, hi = noise.band_hz[0], min(noise.band_hz[1], 0.45 * fs)
        # Zero-phase, so the true R-peak times stay exact on the filtered trace.
        signals = sosfiltfilt(
            butter(2, [lo, hi], btype="band", fs=fs, output="sos"), signals, axis=0
        )
    signals = signals[pad : pad + n]
    inside = beats.inside(duration_s)
    return EcgSimulation(
        signals_mv=np.ascontiguousarray(signals, dtype=np.float32),
        lead_names=tuple(leads),
        fs=fs,
        r_peaks_s=beats.r_s[inside],
        t_end_s=beats.t_end_s[inside],
    )


def simulate_12lead(
    state: PatientState, rng: np.random.Generator, *, fs: int = 500, duration_s: float = 10.0
) -> EcgSimulation:
    """Simulate a resting 12-lead ECG of the patient.

    Args:
        state: the patient; rhythm, intervals, axis, voltages, conduction and ST/T come from it.
        rng: the recording's generator (e.g. ``patient_rng(seed, index, "ecg12")``); equal
            seeds give identical arrays.
        fs: sampling rate in Hz.
        duration_s: record length in seconds.

    Returns:
        Float32 millivolts in :data:`STANDARD_LEADS` order, with the true R peaks and T ends.
    """
    return _simulate(state, rng, STANDARD_LEADS, fs, duration_s, _RESTING)


def simulate_mobile(
    state: PatientState,
    rng: np.random.Generator,
    *,
    leads: tuple[str, ...],
    fs: int = 300,
    duration_s: float = 30.0,
) -> EcgSimulation:
    """Simulate a hand-held ECG: same heart as the 12-lead, new beats, more noise and motion.

    Args:
        state: the patient.
        rng: the recording's generator, independent of the 12-lead's.
        leads: lead names to record, e.g. ``MOBILE_LEAD_SETS[1]`` or ``MOBILE_LEAD_SETS[6]``.
        fs: sampling rate in Hz.
        duration_s: record length in seconds.

    Returns:
        Float32 millivolts in the order of ``leads``, with the true R peaks and T ends.

    Raises:
        ValueError: if a lead name is not a standard lead.
    """
    return _simulate(state, rng, tuple(leads), fs, duration_s, _MOBILE)
