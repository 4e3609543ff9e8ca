"""The evaluation's pictures: ROC curves, reliability diagrams, the label-efficiency curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cardiolake.domain import EVALUATION_LEAD_SETS

#: (model, input) pairs drawn on the ROC and calibration plots, with their legend names.
_SHOWN = {
    ("teacher", "12lead"): "teacher (12-lead + echo + labs)",
    ("student", f"limb:{','.join(EVALUATION_LEAD_SETS[6])}"): "student, 6 limb leads",
    ("student", f"limb:{','.join(EVALUATION_LEAD_SETS[1])}"): "student, lead I",
    ("student", "mobile"): "student, own mobile recording",
    ("student_labels_only", f"limb:{','.join(EVALUATION_LEAD_SETS[6])}"): "labels only, 6 leads",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, ax: Any, path: Path, legend: str) -> Path:
    plt = _pyplot()
    ax.legend(fontsize=7, loc=legend)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _shown(predictions: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    main = predictions[~predictions["variant"].str.startswith("labels_only/")]
    out = []
    for (model, input_name), label in _SHOWN.items():
        sel = main[(main["model"] == model) & (main["input"] == input_name)]
        if len(sel) and sel["label"].nunique() == 2:
            out.append((label, sel))
    return out


def roc_plot(predictions: pd.DataFrame, path: Path) -> Path:
    """ROC curves of the urgent score, one line per model x input, AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    for label, sel in _shown(predictions):
        y, p = sel["label"].to_numpy(int), sel["score"].to_numpy(float)
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{label}: AUC {roc_auc_score(y, p):.3f}")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="urgent triage: ROC")
    return _save(fig, ax, path, "lower right")


def calibration_plot(predictions: pd.DataFrame, path: Path, bins: int = 10) -> Path:
    """Reliability diagram: observed urgent rate against the calibrated probability."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    edges = np.linspace(0, 1, bins + 1)
    for label, sel in _shown(predictions):
        p, y = sel["score"].to_numpy(float), sel["label"].to_numpy(float)
        which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
        xs = [p[which == b].mean() for b in range(bins) if (which == b).any()]
        ys = [y[which == b].mean() for b in range(bins) if (which == b).any()]
        ax.plot(xs, ys, marker="o", ms=3, label=label)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(
        xlabel="predicted probability (calibrated)",
        ylabel="observed urgent rate",
        title="calibration",
    )
    return _save(fig, ax, path, "upper left")


def label_efficiency_plot(curve: list[dict[str, Any]], path: Path) -> Path:
    """AUC against the share of labels used, SSL-initialised against random students."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    frame = pd.DataFrame(curve)
    for (init, input_name), sel in frame.groupby(["init", "input"]):
        sel = sel.sort_values("label_fraction")
        name = "SSL (stage 2)" if init == "align" else init
        leads = len(input_name.split(","))
        ax.plot(
            100 * sel["label_fraction"],
            sel["auc"],
            marker="o",
            ls="-" if init == "align" else "--",
            label=f"{name}, {leads} lead(s)",
        )
    ax.set(xlabel="labels used (%)", ylabel="AUC, urgent", title="label efficiency")
    return _save(fig, ax, path, "best")
