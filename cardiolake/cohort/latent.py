"""Latent cardiac state of a synthetic patient: the one truth every modality is drawn from.

A patient's hidden *dysfunction* (plus independent renal, ischaemic and conduction factors)
sets the ejection fraction, the ECG intervals and voltages, the labs and, through a logistic
model, the probability that a cardiologist triages the exam as urgent. Because that
probability (``oracle_p``) is known, the best achievable AUC of any model is known too.

The echo shows the ejection fraction directly, NT-proBNP shows it partly, and the ECG only
through correlated signs (rate, QRS width, voltage, bundle branch block, AF, ST/T) — which is
what makes the teacher (ECG + echo + labs) beat the ECG-only student.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

import numpy as np

from cardiolake.cohort.settings import CohortSettings
from cardiolake.domain import FINDINGS

Conduction = Literal["none", "LBBB", "RBBB"]

_FIRST_NAMES = (
    "Anna", "Ben", "Clara", "David", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas",
    "Kaia", "Luca", "Maya", "Nils", "Olga", "Pavel", "Quinn", "Rosa", "Sami", "Tara",
)  # fmt: skip
_LAST_NAMES = (
    "Abara", "Brenner", "Castell", "Dvorak", "Eklund", "Fontaine", "Gallo", "Hartig",
    "Ivanova", "Jansen", "Kowalski", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov",
)  # fmt: skip
_COHORT_EPOCH = datetime(2024, 1, 1, 0, 0, 0)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True)
class PatientState:
    """The latent state and acquisition plan of one synthetic patient.

    Identifiers (``mrn``, ``name``, ``birth_date``) are synthetic PHI: they appear in the
    landing zone exactly where a hospital would put them and must never reach the lake.
    Times are on the patient's *true* clock; the ECG devices use that clock and the echo
    machine runs ``echo_clock_offset_s`` ahead of it (zero when synchronised).
    """

    index: int
    patient_id: str  # synthetic study id, used only in truth/ (never in landing files)
    mrn: str
    name: str
    birth_date: date
    sex: Literal["F", "M"]
    age: float
    # latent factors
    dysfunction: float
    lvef: float  # %
    hr_bpm: float
    hrv_sd: float  # beat-to-beat RR standard deviation, fraction of the mean RR
    af: bool
    conduction: Conduction
    lvh: bool
    pr_ms: float
    qrs_ms: float
    qtc_ms: float
    axis_deg: float  # frontal QRS axis
    r_amp_mv: float  # peak QRS vector magnitude
    st_shift_mv: float  # lateral ST deviation (negative = depression)
    t_amp_mv: float  # T-wave vector magnitude (peaked in hyperkalaemia)
    resp_rate_hz: float
    emd_ms: float  # electromechanical delay, R peak -> echo end-diastole
    # labs in canonical units
    ntprobnp_pg_ml: float
    troponin_t_ng_l: float
    creatinine_mg_dl: float
    potassium_mmol_l: float
    hemoglobin_g_dl: float
    sodium_mmol_l: float
    # outcome
    oracle_p: float
    oracle_p_findings: dict[str, float]
    urgent: bool
    findings: dict[str, bool]
    # acquisition plan
    labeled: bool
    mobile_only: bool
    ecg_format: Literal["wfdb", "dicom"]
    mobile_leads: int
    echo_compression: Literal["none", "jpeg2000", "rle"]
    echo_fps: int
    has_r_wave_vector: bool
    synchronized: bool
    echonet: bool
    # timeline (true clock)
    exam_time: datetime  # start of the 12-lead ECG
    echo_start_offset_s: float  # echo clip start, seconds after exam_time
    echo_clock_offset_s: float  # echo clock minus true clock
    mobile_time: datetime
    label_time: datetime

    @property
    def rr_s(self) -> float:
        """Mean RR interval in seconds."""
        return 60.0 / self.hr_bpm

    @property
    def qt_ms(self) -> float:
        """QT at the mean heart rate (Bazett inverted)."""
        return self.qtc_ms * math.sqrt(self.rr_s)

    @property
    def echo_start_time(self) -> datetime:
        """Echo clip start on the *echo machine's* clock (what its DICOM header says)."""
        return self.exam_time + timedelta(
            seconds=self.echo_start_offset_s + self.echo_clock_offset_s
        )


def patient_rng(seed: int, index: int, stream: str = "state") -> np.random.Generator:
    """A generator private to one patient and one purpose.

    Keyed by (seed, patient, stream) so patients are independent of generation order and of
    the number of workers, and adding a new stream never shifts existing ones.
    """
    stream_key = int.from_bytes(stream.encode()[:8].ljust(8, b"\0"), "little")
    return np.random.default_rng([seed, index, stream_key])


def triage_logit(
    *,
    lvef: float,
    af: bool,
    conduction: str,
    lvh: bool,
    potassium: float,
    troponin: float,
    hr_bpm: float,
) -> float:
    """Log-odds that an adjudicated cardiologist calls the exam urgent.

    Dominated by the ejection fraction (visible on echo), with rhythm, conduction,
    hyperkalaemia and myocardial injury adding risk.
    """
    return (
        -0.9
        + 0.22 * (42.0 - lvef)
        + 1.8 * af
        + 1.5 * (conduction == "LBBB")
        + 0.5 * lvh
        + 5.0 * max(potassium - 5.3, 0.0)
        + 1.3 * max(math.log(troponin / 14.0), 0.0)
        + 0.03 * (hr_bpm - 75.0)
    )


def finding_probabilities(
    *, lvef: float, af: bool, conduction: str, lvh: bool, potassium: float
) -> dict[str, float]:
    """Probability that the adjudicated label of each finding is positive.

    Near-deterministic for discrete states and soft around the thresholds of the
    continuous ones (EF 40 %, K 5.5 mmol/L), where readers genuinely disagree.
    """
    return {
        "reduced_lvef": _sigmoid((40.0 - lvef) / 2.0),
        "atrial_fibrillation": 0.97 if af else 0.01,
        "bundle_branch_block": 0.96 if conduction != "none" else 0.02,
        "lv_hypertrophy": 0.85 if lvh else 0.05,
        "hyperkalaemia": _sigmoid((potassium - 5.5) / 0.12),
    }


def sample_patient(settings: CohortSettings, index: int) -> PatientState:
    """Draw the latent state and acquisition plan of patient ``index``.

    Args:
        settings: the cohort settings (seed and modality shares are read from it).
        index: zero-based patient number; with ``settings.seed`` it fixes every draw.

    Returns:
        The patient's state; identical for identical ``(seed, index)``.
    """
    rng = patient_rng(settings.seed, index)
    n = rng.standard_normal
    u = rng.uniform

    sex: Literal["F", "M"] = "F" if u() < 0.5 else "M"
    age = float(np.clip(62 + 13 * n(), 22, 94))
    d = float(n() + 0.02 * (age - 62))  # latent myocardial dysfunction
    renal = float(n())
    ischaemia = float(n())
    mechanical = float(n())  # contractility loss the ECG does not show

    lvef = float(
        np.clip(
            61 + 4.0 * n() - 10.0 * max(d + 0.3, 0.0) ** 1.2 - 6.5 * max(mechanical + 0.2, 0.0),
            12,
            75,
        )
    )
    af = bool(u() < _sigmoid(-3.4 + 0.05 * (age - 62) + 0.9 * d))
    p_lbbb = _sigmoid(-4.0 + 1.1 * d)
    p_rbbb = 0.035
    r = u()
    conduction: Conduction = "LBBB" if r < p_lbbb else "RBBB" if r < p_lbbb + p_rbbb else "none"
    lvh = bool(u() < _sigmoid(-2.4 + 0.6 * d + 0.03 * (age - 62)))

    creatinine = float(np.clip(0.95 * math.exp(0.28 * renal + 0.08 * d), 0.4, 6.0))
    potassium = float(np.clip(4.3 + 0.32 * n() + 0.7 * max(renal - 0.8, 0.0) ** 1.3, 2.8, 7.5))
    troponin = float(np.clip(9.0 * math.exp(0.55 * ischaemia + 0.35 * max(d, 0.0)), 3, 5000))
    ntprobnp = float(
        np.clip(
            120 * math.exp(0.085 * (58 - lvef) + 0.02 * (age - 62) + 0.35 * n() + 0.2 * renal),
            10,
            35000,
        )
    )
    hemoglobin = float(np.clip((14.6 if sex == "M" else 13.2) + 1.2 * n() - 0.3 * renal, 7, 19))
    sodium = float(np.clip(139.5 + 2.5 * n() - 1.5 * max(d, 0.0), 122, 152))

    hr = float(np.clip(68 + 7 * d + 8 * n() + (18 if af else 0), 42, 145))
    hrv_sd = float(0.18 if af else np.clip(0.035 + 0.01 * n() - 0.008 * d, 0.01, 0.08))
    pr = float(np.clip(158 + 18 * n() + 4 * d, 110, 240))
    qrs_base = 90 + 9 * max(d, 0.0) + 6 * n()
    qrs = {"none": qrs_base, "LBBB": qrs_base + 55, "RBBB": qrs_base + 42}[conduction]
    qrs = float(np.clip(qrs, 72, 178))
    qtc = float(
        np.clip(
            412
            + 14 * d
            + 12 * n()
            + (25 if conduction != "none" else 0)
            - 20 * max(potassium - 5, 0),
            360,
            510,
        )
    )
    axis = float(np.clip(50 + 22 * n() - 14 * d - (35 if conduction == "LBBB" else 0), -60, 110))
    r_amp = 1.35 * math.exp(0.18 * n()) * (1.7 if lvh else 1.0) * (0.8 if d > 1.2 else 1.0)
    r_amp = float(np.clip(r_amp, 0.5, 3.2))
    st = float(-0.07 * max(ischaemia - 0.6, 0.0) - (0.06 if lvh else 0.0))
    t_amp = float(
        np.clip(0.32 * math.exp(0.15 * n()) * (1 + 1.6 * max(potassium - 5.0, 0)), 0.1, 1.4)
    )

    oracle_logit = triage_logit(
        lvef=lvef, af=af, conduction=conduction, lvh=lvh, potassium=potassium,
        troponin=troponin, hr_bpm=hr,
    )  # fmt: skip
    oracle_p = _sigmoid(oracle_logit)
    urgent = bool(u() < oracle_p)
    p_findings = finding_probabilities(
        lvef=lvef, af=af, conduction=conduction, lvh=lvh, potassium=potassium
    )
    findings = {name: bool(u() < p_findings[name]) for name in FINDINGS}

    # acquisition plan
    mobile_only = bool(u() < settings.mobile_only_fraction)
    labeled = bool(not mobile_only and u() < settings.labeled_fraction)
    ecg_format: Literal["wfdb", "dicom"] = "dicom" if u() < settings.dicom_ecg_fraction else "wfdb"
    mobile_leads = 6 if u() < settings.six_lead_fraction else 1
    shares = settings.compression_shares
    kinds = list(shares)
    compression = kinds[
        int(rng.choice(len(kinds), p=np.array(list(shares.values())) / sum(shares.values())))
    ]
    lo, hi = settings.echo_fps_range
    fps = int(rng.integers(lo, hi + 1))
    has_r_wave = bool(u() < settings.r_wave_vector_fraction)
    synchronized = bool(u() < settings.synchronized_fraction)
    echonet = bool(u() < settings.echonet_fraction)

    exam_time = _COHORT_EPOCH + timedelta(
        days=int(rng.integers(0, 730)), hours=int(rng.integers(8, 18)),
        minutes=int(rng.integers(0, 60)), seconds=int(rng.integers(0, 60)),
    )  # fmt: skip
    echo_seconds = max(settings.echo_min_seconds, 2.3 * 60.0 / hr)
    latest_start = settings.ecg_seconds - echo_seconds - 0.5
    echo_start = float(u(1.0, max(latest_start, 1.0)))
    clock_offset = 0.0 if synchronized else float(u(-1.0, 1.0) * settings.max_clock_offset_s)
    mobile_time = exam_time + timedelta(hours=float(u(2, 72)))
    label_time = exam_time + timedelta(hours=float(u(4, 96)))

    first = _FIRST_NAMES[int(rng.integers(len(_FIRST_NAMES)))]
    last = _LAST_NAMES[int(rng.integers(len(_LAST_NAMES)))]
    birth_date = (exam_time - timedelta(days=age * 365.25)).date()
    mrn = f"{int(rng.integers(10_000_000, 99_999_999)):08d}"

    return PatientState(
        index=index, patient_id=f"CL{index:06d}", mrn=mrn, name=f"{last}^{first}",
        birth_date=birth_date, sex=sex, age=round(age, 1), dysfunction=d, lvef=lvef,
        hr_bpm=hr, hrv_sd=hrv_sd, af=af, conduction=conduction, lvh=lvh, pr_ms=pr,
        qrs_ms=qrs, qtc_ms=qtc, axis_deg=axis, r_amp_mv=r_amp, st_shift_mv=st,
        t_amp_mv=t_amp, resp_rate_hz=float(u(0.18, 0.35)), emd_ms=float(u(30, 70)),
        ntprobnp_pg_ml=ntprobnp, troponin_t_ng_l=troponin, creatinine_mg_dl=creatinine,
        potassium_mmol_l=potassium, hemoglobin_g_dl=hemoglobin, sodium_mmol_l=sodium,
        oracle_p=oracle_p, oracle_p_findings=p_findings, urgent=urgent, findings=findings,
        labeled=labeled, mobile_only=mobile_only, ecg_format=ecg_format,
        mobile_leads=mobile_leads, echo_compression=compression,  # type: ignore[arg-type]
        echo_fps=fps, has_r_wave_vector=has_r_wave, synchronized=synchronized,
        echonet=echonet, exam_time=exam_time, echo_start_offset_s=echo_start,
        echo_clock_offset_s=clock_offset, mobile_time=mobile_time, label_time=label_time,
    )  # fmt: skip


def echo_duration_s(state: PatientState, settings: CohortSettings) -> float:
    """Length of the patient's echo clip: at least two full cardiac cycles."""
    return max(settings.echo_min_seconds, 2.3 * state.rr_s)


def truth_row(state: PatientState) -> dict[str, Any]:
    """The patient's row of ``truth/patients.parquet`` (latent state, oracle, plan; no name/DOB)."""
    row = {
        k: v
        for k, v in asdict(state).items()
        if k not in {"name", "birth_date", "oracle_p_findings", "findings"}
    }
    row.update({f"oracle_p_{f}": state.oracle_p_findings[f] for f in FINDINGS})
    row.update({f"finding_{f}": state.findings[f] for f in FINDINGS})
    row["qt_ms"] = state.qt_ms
    return row
