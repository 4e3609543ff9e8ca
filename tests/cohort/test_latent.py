"""The latent model: calibration of prevalence and attainable AUCs, determinism, validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cardiolake.cohort.describe import ECG12_FEATURES, LEAD1_FEATURES, _ceiling_auc, split_of
from cardiolake.cohort.latent import sample_patient, truth_row
from cardiolake.cohort.settings import CohortSettings


@pytest.fixture(scope="module")
def population() -> pd.DataFrame:
    settings = CohortSettings(seed=2024)
    truth = pd.DataFrame([truth_row(sample_patient(settings, i)) for i in range(4000)])
    return truth.assign(
        split=truth["mrn"].map(split_of),
        lbbb=(truth["conduction"] == "LBBB").astype(int),
        rbbb=(truth["conduction"] == "RBBB").astype(int),
        af=truth["af"].astype(int),
        lead1_r_mv=truth["r_amp_mv"] * np.cos(np.radians(truth["axis_deg"])),
    )


def test_oracle_auc_and_ecg_ceilings_are_in_the_designed_bands(population: pd.DataFrame) -> None:
    test = population[population["split"] == "test"]
    oracle = roc_auc_score(test["urgent"], test["oracle_p"])
    ecg12 = _ceiling_auc(population, ECG12_FEATURES)
    lead1 = _ceiling_auc(population, LEAD1_FEATURES)
    assert 0.93 <= oracle <= 0.97
    assert 0.83 <= ecg12 <= 0.91
    assert lead1 < ecg12 < oracle


def test_prevalences_are_clinically_plausible(population: pd.DataFrame) -> None:
    assert 0.12 <= population["urgent"].mean() <= 0.30
    assert 0.08 <= population["finding_reduced_lvef"].mean() <= 0.25
    assert 0.003 <= population["finding_hyperkalaemia"].mean() <= 0.05  # the rare one
    assert population["lvef"].between(10, 80).all()
    assert population["hr_bpm"].between(40, 150).all()
    assert population["qrs_ms"].between(70, 180).all()
    assert population["qtc_ms"].between(350, 520).all()


def test_clock_offsets_are_zero_only_for_synchronised_devices(population: pd.DataFrame) -> None:
    sync = population[population["synchronized"]]
    assert (sync["echo_clock_offset_s"] == 0).all()
    assert (population[~population["synchronized"]]["echo_clock_offset_s"].abs() > 0).all()


def test_same_seed_same_state_and_independent_of_order() -> None:
    s = CohortSettings(seed=9)
    assert sample_patient(s, 17) == sample_patient(s, 17)
    assert sample_patient(s, 17) != sample_patient(CohortSettings(seed=10), 17)


@pytest.mark.parametrize(
    "kwargs", [{"labeled_fraction": 1.5}, {"patients": 0}, {"workers": 0}, {"echo_size": 64}]
)
def test_settings_reject_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CohortSettings(**kwargs)  # type: ignore[arg-type]
