"""Per-row derived columns the suites check: one function per table, pandas in, pandas out.

Great Expectations checks columns row by row, but several gates are about arrays (frame
times, R-peaks, lead signals) or about groups (a batch's reader agreement, a pair's aligned
beats). Each function here turns those into plain scalar columns on a copy of the frame, so a
row expectation on the derived column catches the violation and names the row that caused it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from cardiolake.domain import LAB_CATALOGUE, STANDARD_LEADS
from pipelines.schemas import lead_column
from pipelines.tabular.labels import fleiss_kappa

#: Big array columns dropped once their derived columns exist (GE never needs the arrays).
_ECG_ARRAYS = [lead_column(lead) for lead in STANDARD_LEADS]
_ECHO_ARRAYS = ["frames", "lv_area", "frame_times_s"]


def _array(value: Any) -> np.ndarray:
    return np.asarray([] if value is None else value, dtype=float)


def ecg_derived(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``leads_known``, ``n_nonfinite``, ``peak_abs_mv`` and ``rpeak_hr_ratio``.

    ``peak_abs_mv`` is robust: the largest over leads of the 99.5th percentile of
    ``|x - median(x)|``, so baseline offset and a few artefact samples do not count, while a
    wrong gain (every sample 1000x) does.

    ``rpeak_hr_ratio`` is the R-peak count over HR x duration / 60: near 1 when the detected
    beats and the reported heart rate tell the same story.
    """
    out = frame.copy()
    known = set(STANDARD_LEADS)
    leads = out["leads"].map(lambda v: [] if v is None else list(v))
    out["leads_known"] = leads.map(lambda v: len(v) > 0 and set(v) <= known)
    nonfinite, peak = [], []
    for i, row_leads in enumerate(leads):
        signals = [_array(out[lead_column(lead)].iat[i]) for lead in row_leads if lead in known]
        nonfinite.append(int(sum((~np.isfinite(s)).sum() for s in signals)))
        finite = [s[np.isfinite(s)] for s in signals]
        peak.append(
            max(
                (float(np.percentile(np.abs(s - np.median(s)), 99.5)) for s in finite if s.size),
                default=np.nan,
            )
        )
    out["n_nonfinite"] = nonfinite
    out["peak_abs_mv"] = peak
    n_peaks = out["rpeaks"].map(lambda v: 0 if v is None else len(v)).astype(float)
    expected = out["heart_rate_bpm"].astype(float) * out["duration_s"].astype(float) / 60.0
    out["rpeak_hr_ratio"] = n_peaks / expected.where(expected > 0)
    return out.drop(columns=[c for c in _ECG_ARRAYS if c in out.columns])


def echo_derived(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``frame_times_increasing``, ``n_frame_times``, ``keyframes_in_clip``, ``lv_area_ratio``.

    ``lv_area_ratio`` is the smallest over the largest LV cavity area of the clip (ES over ED
    area); it is missing when no LV was measured (a quality flag already says so).
    """
    out = frame.copy()
    times = out["frame_times_s"].map(_array)
    out["n_frame_times"] = times.map(len)
    out["frame_times_increasing"] = times.map(
        lambda t: bool(t.size >= 2 and np.all(np.diff(t) > 0))
    )

    def inside(row: pd.Series) -> bool:
        idx = np.concatenate([_array(row["ed_frames"]), _array(row["es_frames"])])
        return bool(np.all((idx >= 0) & (idx < row["n_frames"])))

    out["keyframes_in_clip"] = out.apply(inside, axis=1) if len(out) else []

    def ratio(value: Any) -> float:
        area = _array(value)
        area = area[np.isfinite(area)]
        return float(area.min() / area.max()) if area.size and area.max() > 0 else np.nan

    out["lv_area_ratio"] = out["lv_area"].map(ratio)
    return out.drop(columns=[c for c in _ECHO_ARRAYS if c in out.columns])


def labs_derived(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the catalogue's ``canonical_unit``, ``limit_low``/``limit_high`` and ``value_in_limits``.

    A value in the wrong unit (creatinine in umol/L labelled mg/dL) lands far outside the
    analyte's limits, which are what a living patient can show in the canonical unit.
    """
    out = frame.copy()
    analyte = out["loinc"].map(LAB_CATALOGUE.get)
    out["canonical_unit"] = analyte.map(lambda a: None if a is None else a.unit)
    # an unknown LOINC has its own expectation; the unit and limit checks must not fail twice
    out["unit_is_canonical"] = analyte.isna() | (out["unit"] == out["canonical_unit"])
    out["limit_low"] = analyte.map(lambda a: np.nan if a is None else a.low)
    out["limit_high"] = analyte.map(lambda a: np.nan if a is None else a.high)
    value = out["value"].astype(float)
    out["value_in_limits"] = analyte.isna() | value.between(out["limit_low"], out["limit_high"])
    return out


def labels_derived(
    frame: pd.DataFrame,
    known_patients: Iterable[str] | None = None,
    *,
    kappa_min_exams: int = 1,
) -> pd.DataFrame:
    """Add ``readers_disagree``, ``disagreement_resolved``, ``batch_kappa``, ``patient_known``.

    Args:
        frame: silver labels.
        known_patients: patient keys with any exam in silver (None: only non-null is checked).
        kappa_min_exams: exams read by two or more readers a batch needs before its kappa
            is judged.

    ``batch_kappa`` is Fleiss' kappa of the triage votes of the row's ingestion batch
    (``run_id``). A batch where every reader agreed on every exam has no kappa (NaN), and a
    batch with fewer than ``kappa_min_exams`` multi-reader exams cannot show disagreement
    beyond chance (kappa's standard error on 7 exams is ~0.3); both count as agreement.
    ``batch_rated_exams`` says how many exams the kappa rests on.
    """
    out = frame.copy()
    votes = out["reader_triage_urgent"].map(
        lambda v: [bool(x) for x in (v if v is not None else [])]
    )
    # a disagreement on any field counts: triage votes, or a finding (silver sets
    # needs_adjudication when readers differ on a finding and nobody adjudicated)
    finding_conflict = (
        out["needs_adjudication"].fillna(False).astype(bool)
        if "needs_adjudication" in out
        else False
    )
    out["readers_disagree"] = votes.map(lambda v: len(set(v)) > 1) | finding_conflict
    out["disagreement_resolved"] = ~out["readers_disagree"] | out["adjudicated"].fillna(
        False
    ).astype(bool)
    kappa: dict[Any, float] = {}
    rated: dict[Any, int] = {}
    batches = out["run_id"].fillna("")
    for batch, idx in out.groupby(batches).groups.items():
        table = [[len(v) - sum(v), sum(v)] for v in votes.loc[idx]]
        rated[batch] = sum(1 for v in votes.loc[idx] if len(v) >= 2)
        k = fleiss_kappa(table) if rated[batch] >= max(1, kappa_min_exams) else float("nan")
        kappa[batch] = 1.0 if np.isnan(k) else k
    out["batch_kappa"] = batches.map(kappa).astype(float)
    out["batch_rated_exams"] = batches.map(rated).astype(int)
    if known_patients is None:
        out["patient_known"] = out["patient_key"].notna()
    else:
        known = set(known_patients)
        out["patient_known"] = out["patient_key"].map(lambda p: p is not None and p in known)
    return out


def alignment_derived(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``abs_lag_ed_s``, ``hr_disagreement``, ``beat_times_monotone``, ``pair_aligned_share``.

    A beat is aligned when it found an ED keyframe (``ed_s`` present). Beat times are monotone
    when, within the (ECG, echo) pair ordered by beat number, R-peak times strictly increase
    and the ED times that exist strictly increase too.
    """
    out = frame.copy()
    out["abs_lag_ed_s"] = out["lag_ed_s"].astype(float).abs()
    ecg_hr = out["ecg_hr_bpm"].astype(float)
    out["hr_disagreement"] = (ecg_hr - out["echo_cycle_bpm"].astype(float)).abs() / ecg_hr.where(
        ecg_hr > 0
    )
    pair = ["ecg_record_key", "echo_record_key"]
    out["pair_aligned_share"] = (
        out["ed_s"].notna().groupby([out[c] for c in pair]).transform("mean")
    )
    monotone: dict[tuple[Any, ...], bool] = {}
    for key, group in out.groupby(pair):
        g = group.sort_values("beat")
        r = g["r_peak_s"].to_numpy(dtype=float)
        ed = g["ed_s"].dropna().to_numpy(dtype=float)
        monotone[key] = bool(np.all(np.diff(r) > 0) and np.all(np.diff(ed) > 0))
    out["beat_times_monotone"] = [
        monotone[(a, b)] for a, b in zip(out["ecg_record_key"], out["echo_record_key"], strict=True)
    ]
    return out
