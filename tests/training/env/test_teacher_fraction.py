"""A student of label fraction f finds the teacher of fraction f (training environment)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest

from cardiolake.tracking import EXPERIMENTS
from training.labeled import withheld_patients
from training.teacher import LABEL_FRACTION_TAG, latest_teacher_run, teacher_fraction


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield tmp_path
    mlflow.set_tracking_uri(None)


def _teacher_run(tags: dict[str, str], status: str = "FINISHED") -> str:
    exp = mlflow.set_experiment(EXPERIMENTS["teacher"])
    with mlflow.start_run(experiment_id=exp.experiment_id) as run:
        mlflow.set_tags(tags)
    if status != "FINISHED":
        mlflow.MlflowClient().set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def test_the_newest_teacher_of_the_fraction_is_chosen(store: Path) -> None:
    assert latest_teacher_run(1.0) is None  # no teacher experiment yet
    legacy = _teacher_run({})  # from before the tag: all the labels
    quarter = _teacher_run({LABEL_FRACTION_TAG: "0.25"})
    _teacher_run({LABEL_FRACTION_TAG: "0.25"}, status="FAILED")
    assert latest_teacher_run(1.0) == legacy
    assert latest_teacher_run(0.25) == quarter
    assert latest_teacher_run(0.5) is None
    assert (teacher_fraction(legacy), teacher_fraction(quarter)) == ("1.0", "0.25")
    full = _teacher_run({LABEL_FRACTION_TAG: "1.0"})
    assert latest_teacher_run(1.0) == full


def test_withheld_patients_keep_the_fraction_and_are_reproducible() -> None:
    patients = np.array([f"p{i}" for i in range(40)] * 2)  # two label rows per patient
    withheld = withheld_patients(patients, 0.25, seed=0)
    assert len(withheld) == 30
    assert withheld == withheld_patients(patients[::-1], 0.25, seed=0)  # order-free
    assert withheld_patients(patients, 1.0, seed=0) == set()
