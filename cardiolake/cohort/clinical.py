"""Tabular hospital exports of a synthetic patient: labs, notes, reader labels, demographics.

Each function turns one :class:`PatientState` into the rows a hospital system would export,
with the quirks ingestion must handle: mixed units, draws after the label time, identifiers
inside free text, disagreeing readers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from cardiolake.cohort.latent import PatientState
from cardiolake.domain import FINDINGS


@dataclass(frozen=True)
class Analyte:
    """A lab analyte as the hospital reports it."""

    loinc: str
    name: str
    canonical_unit: str
    alt_unit: str | None  # a second unit some sites report in
    alt_factor: float  # value_in_alt_unit = value_in_canonical * alt_factor
    alt_share: float  # share of results reported in the alternative unit
    bio_cv: float  # within-patient biological variation (coefficient of variation)


#: The six analytes of the cohort, keyed by LOINC code.
ANALYTES: dict[str, Analyte] = {
    a.loinc: a
    for a in (
        Analyte("33762-6", "NT-proBNP", "pg/mL", "ng/L", 1.0, 0.3, 0.25),
        Analyte("67151-1", "Troponin T, high-sensitivity", "ng/L", None, 1.0, 0.0, 0.15),
        Analyte("2160-0", "Creatinine", "mg/dL", "umol/L", 88.42, 0.4, 0.06),
        Analyte("2823-3", "Potassium", "mmol/L", "mEq/L", 1.0, 0.3, 0.04),
        Analyte("718-7", "Hemoglobin", "g/dL", "g/L", 10.0, 0.3, 0.04),
        Analyte("2951-2", "Sodium", "mmol/L", None, 1.0, 0.0, 0.01),
    )
}

LAB_COLUMNS = ("specimen_id", "mrn", "loinc", "test_name", "value", "unit", "draw_time")
NOTE_COLUMNS = ("note_id", "mrn", "note_time", "author", "text")
LABEL_COLUMNS = ("label_id", "mrn", "exam_time", "label_time", "reader", "triage", *FINDINGS)
PATIENT_COLUMNS = ("mrn", "name", "birth_date", "sex")


def _latent_lab_value(state: PatientState, loinc: str) -> float:
    return {
        "33762-6": state.ntprobnp_pg_ml,
        "67151-1": state.troponin_t_ng_l,
        "2160-0": state.creatinine_mg_dl,
        "2823-3": state.potassium_mmol_l,
        "718-7": state.hemoglobin_g_dl,
        "2951-2": state.sodium_mmol_l,
    }[loinc]


def _fmt_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def lab_rows(state: PatientState, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Lab results of one patient: 1–4 panel draws from 30 days before to 5 days after the exam.

    Values scatter around the latent level by the analyte's biological variation; some draws
    fall after the label time on purpose (point-in-time joins must drop them).
    """
    rows: list[dict[str, Any]] = []
    n_draws = int(rng.integers(1, 5))
    offsets_h = np.sort(rng.uniform(-30 * 24, 5 * 24, size=n_draws))
    for draw, offset_h in enumerate(offsets_h):
        draw_time = state.exam_time + timedelta(hours=float(offset_h))
        for loinc, analyte in ANALYTES.items():
            if rng.uniform() < 0.2:  # not every panel orders every analyte
                continue
            value = _latent_lab_value(state, loinc) * math.exp(analyte.bio_cv * rng.normal())
            unit = analyte.canonical_unit
            if analyte.alt_unit is not None and rng.uniform() < analyte.alt_share:
                value, unit = value * analyte.alt_factor, analyte.alt_unit
            rows.append(
                {
                    "specimen_id": f"S{state.index:06d}{draw:02d}{loinc.replace('-', '')}",
                    "mrn": state.mrn,
                    "loinc": loinc,
                    "test_name": analyte.name,
                    "value": round(value, 2 if value < 100 else 1),
                    "unit": unit,
                    "draw_time": _fmt_time(draw_time),
                }
            )
    return rows


def _ef_phrase(lvef: float) -> str:
    if lvef >= 52:
        return "preserved LV systolic function"
    if lvef >= 40:
        return "mildly reduced LV systolic function"
    return "reduced LV systolic function"


def note_rows(state: PatientState, rng: np.random.Generator) -> list[dict[str, Any]]:
    """One cardiologist note per exam, carrying the identifiers a real note carries."""
    note_time = state.exam_time + timedelta(hours=float(rng.uniform(1, 24)))
    first_last = state.name.split("^")
    display_name = f"{first_last[1]} {first_last[0]}" if len(first_last) == 2 else state.name
    rhythm = "atrial fibrillation" if state.af else "sinus rhythm"
    conduction = {"none": "normal conduction", "LBBB": "LBBB", "RBBB": "RBBB"}[state.conduction]
    ef_estimate = 5 * round(state.lvef / 5 + rng.normal(0, 0.6))
    text = (
        f"Patient {display_name} (MRN {state.mrn}, DOB {state.birth_date:%m/%d/%Y}) seen on "
        f"{state.exam_time:%m/%d/%Y}. ECG: {rhythm}, rate about {round(state.hr_bpm)} bpm, "
        f"{conduction}. Echo: {_ef_phrase(state.lvef)}, EF visually ~{ef_estimate}%. "
        f"Follow-up with {display_name.split()[0]} in clinic; call {state.mrn[-4:]}-ext if worse."
    )
    return [
        {
            "note_id": f"N{state.index:06d}",
            "mrn": state.mrn,
            "note_time": _fmt_time(note_time),
            "author": f"cardiologist_{int(rng.integers(1, 9))}",
            "text": text,
        }
    ]


def _reader_vote(truth: bool, p: float, rng: np.random.Generator, skill: float) -> bool:
    # Readers err mostly where the case is ambiguous (p near 0.5), and less skilled ones more.
    ambiguity = 1.0 - abs(2.0 * p - 1.0)
    flip = (0.03 + 0.30 * ambiguity) * skill
    return truth != bool(rng.uniform() < flip)


def label_rows(state: PatientState, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Reader labels of a labeled patient: 2–3 readers, plus the adjudicated value.

    The adjudicated value is the patient's true label. Adjudication is recorded whenever the
    readers disagree on anything and for a share of unanimous cases (panels often confirm).
    """
    if not state.labeled:
        return []
    n_readers = int(rng.integers(2, 4))
    skills = rng.uniform(0.6, 1.6, size=n_readers)
    rows: list[dict[str, Any]] = []
    votes: list[tuple[bool, ...]] = []
    for r, skill in enumerate(skills):
        triage = _reader_vote(state.urgent, state.oracle_p, rng, skill)
        finding_votes = tuple(
            _reader_vote(state.findings[f], state.oracle_p_findings[f], rng, skill)
            for f in FINDINGS
        )
        votes.append((triage, *finding_votes))
        minutes = float(rng.uniform(0, 120))
        rows.append(_label_row(state, f"reader_{r + 1}", triage, finding_votes, minutes))
    unanimous = all(v == votes[0] for v in votes)
    if not unanimous or rng.uniform() < 0.3:
        truth = tuple(state.findings[f] for f in FINDINGS)
        rows.append(_label_row(state, "adjudicated", state.urgent, truth, 180.0))
    return rows


def _label_row(
    state: PatientState, reader: str, triage: bool, findings: tuple[bool, ...], minutes: float
) -> dict[str, Any]:
    return {
        "label_id": f"L{state.index:06d}_{reader}",
        "mrn": state.mrn,
        "exam_time": _fmt_time(state.exam_time),
        "label_time": _fmt_time(state.label_time + timedelta(minutes=minutes)),
        "reader": reader,
        "triage": "urgent" if triage else "routine",
        **{f: int(v) for f, v in zip(FINDINGS, findings, strict=True)},
    }


def patient_row(state: PatientState) -> dict[str, Any]:
    """The master patient index row: the only place names and birth dates are listed."""
    return {
        "mrn": state.mrn,
        "name": state.name.replace("^", ", "),
        "birth_date": state.birth_date.isoformat(),
        "sex": state.sex,
    }
