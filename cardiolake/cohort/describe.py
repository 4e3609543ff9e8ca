"""Summaries of a generated cohort: counts, prevalence, reader agreement and attainable AUCs.

The AUCs tell ML scientists what to expect before training anything: the oracle (the true
probability given the full latent state) bounds every model, and gradient-boosted models on
the latent signs the ECG can show bound the 12-lead and 1-lead models.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from cardiolake.domain import FINDINGS

#: Latent signs a 12-lead ECG expresses (rate, rhythm, conduction, intervals, voltage, ST/T).
ECG12_FEATURES = (
    "hr_bpm", "af", "qrs_ms", "lbbb", "rbbb", "qtc_ms", "axis_deg", "r_amp_mv",
    "st_shift_mv", "t_amp_mv", "pr_ms",
)  # fmt: skip
#: What lead I alone shows: rate, rhythm, QRS width, the lead-I projection of the QRS, T.
LEAD1_FEATURES = ("hr_bpm", "af", "qrs_ms", "lead1_r_mv", "t_amp_mv")


def split_of(mrn: str, test_share: float = 0.3) -> str:
    """Deterministic patient-level split from a hash of the patient's identifier."""
    bucket = int(hashlib.sha256(mrn.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < test_share else "train"


@dataclass
class CohortSummary:
    """What ``cardiolake cohort describe`` reports."""

    counts: dict[str, int] = field(default_factory=dict)
    prevalence: dict[str, float] = field(default_factory=dict)
    kappa: dict[str, float] = field(default_factory=dict)
    auc: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form for JSON output."""
        return {
            "counts": self.counts,
            "prevalence": self.prevalence,
            "kappa": self.kappa,
            "auc": self.auc,
        }


def resolve_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """One label per exam: the adjudicated row where present, else the unanimous readers."""
    adjudicated = labels[labels["reader"] == "adjudicated"]
    readers = labels[labels["reader"] != "adjudicated"]
    consensus = (
        readers[~readers["mrn"].isin(adjudicated["mrn"])].groupby("mrn", as_index=False).first()
    )
    return pd.concat([adjudicated, consensus], ignore_index=True)


def _kappas(labels: pd.DataFrame) -> dict[str, float]:
    wide = labels[labels["reader"].isin(["reader_1", "reader_2"])]
    out: dict[str, float] = {}
    for target in ("triage", *FINDINGS):
        pivot = wide.pivot_table(index="mrn", columns="reader", values=target, aggfunc="first")
        pivot = pivot.dropna()
        if len(pivot) > 1 and pivot.nunique().min() > 1:
            out[target] = float(cohen_kappa_score(pivot["reader_1"], pivot["reader_2"]))
    return out


def latent_signs(truth: pd.DataFrame) -> pd.DataFrame:
    """The truth table with every ECG-observable latent sign as a number.

    Conduction becomes LBBB/RBBB flags and lead I's projection of the R amplitude is added, so
    :data:`ECG12_FEATURES` and :data:`LEAD1_FEATURES` are all columns.
    """
    return truth.assign(
        lbbb=(truth["conduction"] == "LBBB").astype(int),
        rbbb=(truth["conduction"] == "RBBB").astype(int),
        af=truth["af"].astype(int),
        lead1_r_mv=truth["r_amp_mv"] * np.cos(np.radians(truth["axis_deg"])),
    )


def patient_truth(cohort_dir: Path, secret: str) -> pd.DataFrame:
    """A cohort's latent truth keyed by the lake's pseudonym (``patient_key``).

    For measuring models against what each input could know. Never leaves a benchmark: it
    holds MRNs.
    """
    from cardiolake.pseudonym import patient_key

    truth = latent_signs(pd.read_parquet(cohort_dir / "truth" / "patients.parquet"))
    return truth.assign(patient_key=[patient_key(str(m), secret) for m in truth["mrn"]])


def ceiling_model(truth: pd.DataFrame, features: tuple[str, ...]) -> HistGradientBoostingClassifier:
    """Boosted trees from latent signs to the latent urgent state (a ceiling's read-out)."""
    model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=0)
    return model.fit(truth[list(features)], truth["urgent"])


def _ceiling_auc(truth: pd.DataFrame, features: tuple[str, ...]) -> float:
    train, test = truth[truth["split"] == "train"], truth[truth["split"] == "test"]
    if train["urgent"].nunique() < 2 or test["urgent"].nunique() < 2:
        return float("nan")
    model = ceiling_model(train, features)
    return float(roc_auc_score(test["urgent"], model.predict_proba(test[list(features)])[:, 1]))


def describe_cohort(cohort_dir: Path) -> CohortSummary:
    """Summarise a generated cohort directory.

    Args:
        cohort_dir: the folder ``cardiolake cohort generate`` wrote.

    Returns:
        Counts, prevalences, reader kappas and AUCs on a held-out patient split.

    Raises:
        FileNotFoundError: when the folder is not a generated cohort.
    """
    truth_dir = cohort_dir / "truth"
    if not (truth_dir / "patients.parquet").exists():
        raise FileNotFoundError(f"{cohort_dir}: not a cohort (no truth/patients.parquet)")
    truth = pd.read_parquet(truth_dir / "patients.parquet")
    recordings = pd.read_parquet(truth_dir / "recordings.parquet")
    labels = pd.read_csv(cohort_dir / "labels" / "labels.csv", dtype={"mrn": str})
    labels = labels[labels["mrn"].isin(truth["mrn"])]  # the corrupt corpus adds strangers
    labels["triage"] = (labels["triage"] == "urgent").astype(int)
    corrupt_path = truth_dir / "corrupt.csv"
    corrupt = pd.read_csv(corrupt_path) if corrupt_path.exists() else pd.DataFrame()

    summary = CohortSummary()
    c = summary.counts
    c["patients"] = len(truth)
    c["mobile_only"] = int(truth["mobile_only"].sum())
    c["labeled"] = int(truth["labeled"].sum())
    for kind, n in recordings["kind"].value_counts().sort_index().items():
        c[f"recordings_{kind}"] = int(n)
    rich = truth[~truth["mobile_only"]]
    c["ecg12_dicom"] = int((rich["ecg_format"] == "dicom").sum())
    for comp, n in rich["echo_compression"].value_counts().sort_index().items():
        c[f"echo_{comp}"] = int(n)
    c["echo_echonet_copies"] = int(rich["echonet"].sum())
    c["mobile_1_lead"] = int((truth["mobile_leads"] == 1).sum())
    c["mobile_6_lead"] = int((truth["mobile_leads"] == 6).sum())
    c["label_rows"] = len(labels)
    c["corrupt_inputs"] = len(corrupt)

    resolved = resolve_labels(labels)
    p = summary.prevalence
    p["urgent_latent_all"] = float(truth["urgent"].mean())
    if len(resolved):
        p["urgent_labeled"] = float(resolved["triage"].mean())
        for f in FINDINGS:
            p[f] = float(resolved[f].mean())
    summary.kappa = _kappas(labels)

    truth = latent_signs(truth).assign(split=truth["mrn"].map(split_of))
    test = truth[truth["split"] == "test"]
    a = summary.auc
    if test["urgent"].nunique() == 2:
        a["oracle_heldout_all"] = float(roc_auc_score(test["urgent"], test["oracle_p"]))
    labeled_test = resolved.merge(truth[["mrn", "oracle_p", "split"]], on="mrn")
    labeled_test = labeled_test[labeled_test["split"] == "test"]
    if labeled_test["triage"].nunique() == 2:
        a["oracle_heldout_labeled"] = float(
            roc_auc_score(labeled_test["triage"], labeled_test["oracle_p"])
        )
    a["ecg12_latent_ceiling"] = _ceiling_auc(truth, ECG12_FEATURES)
    a["lead1_latent_ceiling"] = _ceiling_auc(truth, LEAD1_FEATURES)
    return summary
