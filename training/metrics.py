"""Discrimination metrics with patient-bootstrap intervals (numpy and scikit-learn only).

Both environments import this module: the training environment's evaluation and the platform
environment's benchmarks report AUCs the same way. Every row is one patient, so resampling
rows is resampling patients.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from sklearn.metrics import roc_auc_score


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC over the known labels (NaN when a class is missing)."""
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    ok = np.isfinite(y) & np.isfinite(s)
    if len(np.unique(y[ok])) < 2:
        return float("nan")
    return float(roc_auc_score(y[ok].astype(int), s[ok]))


def _resamples(y: np.ndarray, n: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of ``n`` patient resamples, skipping those with a single class."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(y[idx])) == 2:
            yield idx


def bootstrap_auc(
    y: np.ndarray, p: np.ndarray, *, n: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile interval of the AUC over patient resamples (NaN when undefined)."""
    y, p = np.asarray(y), np.asarray(p)
    aucs = [roc_auc_score(y[idx], p[idx]) for idx in _resamples(y, n, seed)]
    if not aucs:
        return float("nan"), float("nan")
    lo, hi = np.percentile(aucs, [2.5, 97.5])
    return float(lo), float(hi)


def paired_difference(
    y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, *, n: int = 2000, seed: int = 0
) -> dict[str, float | list[float]]:
    """AUC(b) - AUC(a) on the same patients, with a paired patient-bootstrap 95 % CI.

    Both scores are evaluated on each resample, so what the CI measures is the gap itself, not
    the two (much wider, strongly correlated) intervals side by side.

    Returns:
        ``delta``, ``ci95`` ([lo, hi]) and ``share_positive`` (resamples where b beats a).
    """
    y = np.asarray(y)
    diffs = [roc_auc_score(y[idx], p_b[idx]) - roc_auc_score(y[idx], p_a[idx])
             for idx in _resamples(y, n, seed)]  # fmt: skip
    if not diffs:
        return {"delta": float("nan"), "ci95": [float("nan")] * 2, "share_positive": float("nan")}
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    delta = roc_auc_score(y, p_b) - roc_auc_score(y, p_a)
    return {
        "delta": float(delta),
        "ci95": [float(lo), float(hi)],
        "share_positive": float(np.mean(np.array(diffs) > 0)),
    }
