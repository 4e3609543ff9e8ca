"""Calibration and the operating point: what a triage score means and where it triggers.

* Temperature scaling (Guo et al., 2017): one scalar ``T`` per head, fitted on the validation
  split by minimising the negative log-likelihood of ``sigmoid(logit / T)``; it changes no
  ranking (AUC is untouched), only what a probability of 0.7 means.
* The operating point: the highest threshold on calibrated validation probabilities whose
  sensitivity for the urgent label is at least the target (0.90 by default), so as few routine
  exams as possible are flagged while nine in ten urgent ones are.
* Expected calibration error over equal-width probability bins, reported with both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the binary NLL of ``labels`` under ``logits / T``.

    Args:
        logits: (N,) raw logits.
        labels: (N,) 0/1.

    Returns:
        ``T`` in [0.05, 20]; 1.0 when the labels hold one class only (nothing to fit).
    """
    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return 1.0

    def nll(log_t: float) -> float:
        p = np.clip(_sigmoid(z / np.exp(log_t)), 1e-7, 1 - 1e-7)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE: the bin-size-weighted mean |accuracy - confidence| over equal-width bins."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if len(p) == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    err = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            err += sel.mean() * abs(y[sel].mean() - p[sel].mean())
    return float(err)


def threshold_for_sensitivity(probs: np.ndarray, labels: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity (``probs >= t`` among positives) is >= target.

    Raises:
        ValueError: no positive example to measure sensitivity on.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    pos = np.sort(p[y])[::-1]
    if len(pos) == 0:
        raise ValueError("no positive (urgent) example to set the operating point on")
    # the k-th highest positive score keeps k positives at or above it
    k = int(np.ceil(target * len(pos)))
    return float(pos[max(k, 1) - 1])


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold and what it does on a split.

    Attributes:
        threshold: calibrated probability at or above which an exam is flagged urgent.
        sensitivity: share of urgent exams flagged.
        specificity: share of routine exams not flagged.
        ppv: share of flagged exams that are urgent.
        flagged: share of all exams flagged.
    """

    threshold: float
    sensitivity: float
    specificity: float
    ppv: float
    flagged: float


def operating_point(probs: np.ndarray, labels: np.ndarray, threshold: float) -> OperatingPoint:
    """Sensitivity, specificity and PPV of a threshold on some predictions."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    flag = p >= threshold
    tp, fp = int((flag & y).sum()), int((flag & ~y).sum())
    fn, tn = int((~flag & y).sum()), int((~flag & ~y).sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return OperatingPoint(threshold, ratio(tp, tp + fn), ratio(tn, tn + fp), ratio(tp, tp + fp),
                          ratio(tp + fp, len(p)))  # fmt: skip


def calibrated(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities of logits under a fitted temperature."""
    return _sigmoid(np.asarray(logits, dtype=np.float64) / temperature)
