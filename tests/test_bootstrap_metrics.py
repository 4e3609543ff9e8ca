"""The patient-bootstrap AUC intervals: one weighted pass equals resampling row by row."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training.metrics import (
    _resample_counts,
    _weighted_aucs,
    bootstrap_auc,
    paired_difference,
)


@pytest.mark.parametrize("patients", [5, 60, 400])
def test_weighted_aucs_equal_roc_auc_on_the_resampled_rows(patients: int) -> None:
    rng = np.random.default_rng(patients)
    y = (rng.random(patients) < 0.25).astype(float)
    s = np.round(rng.random(patients) * 4) / 4 + 0.3 * y  # many ties
    checked = 0
    for counts in _resample_counts(patients, 40, seed=1):
        assert counts.sum(axis=1).tolist() == [patients] * len(counts)
        for row, got in zip(counts, _weighted_aucs(y, s, counts), strict=True):
            idx = np.repeat(np.arange(patients), row.astype(int))
            if len(np.unique(y[idx])) < 2:
                assert np.isnan(got)
                continue
            assert got == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)
            checked += 1
    assert checked > 20


def test_intervals_cover_the_point_estimate_and_skip_unknown_rows() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.1).astype(float)
    p = rng.random(300) + 0.4 * y
    lo, hi = bootstrap_auc(y, p)
    assert lo < roc_auc_score(y, p) < hi
    with_nan = np.r_[p, np.nan]
    assert bootstrap_auc(np.r_[y, 1.0], with_nan) == (lo, hi)
    gap = paired_difference(y, p, p)
    assert gap["delta"] == 0 and gap["ci95"] == [0.0, 0.0]
    better = paired_difference(y, rng.random(300), p)
    assert better["delta"] > 0 and better["share_positive"] > 0.95
    assert np.isnan(bootstrap_auc(np.zeros(10), np.arange(10.0))[0])
