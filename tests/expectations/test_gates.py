"""Quality gates on a lake built from the tiny cohort: clean data passes, violations are caught."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from cardiolake import lake, tables
from cardiolake.cli.validate import validate
from expectations.runner import GateRunner, known_patients, run_gates
from expectations.settings import GateSettings
from pipelines.job import run_ingest
from pipelines.settings import IngestSettings

pytestmark = [pytest.mark.spark, pytest.mark.integration]


@pytest.fixture(scope="module")
def lake_root(spark, tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cohort ingested once into a lake."""
    work = tmp_path_factory.mktemp("gates")
    shutil.copytree(tiny_cohort, work / "landing" / "site_a")
    settings = IngestSettings(landing=work / "landing", lake_root=work / "lake", task_slices=2)
    run_ingest(spark, settings)
    return settings.lake_root


@pytest.fixture(scope="module")
def runner() -> GateRunner:
    """One Great Expectations context for the frame-level checks (no docs)."""
    return GateRunner(settings=GateSettings())


def _failed(runner: GateRunner, table: tables.Table, frame: pd.DataFrame, **kw) -> dict[str, int]:
    outcome, _ = runner.validate(table, frame, **kw)
    return {e.expectation: e.unexpected_count for e in outcome.expectations if not e.success}


def test_clean_lake_passes_every_suite(spark, lake_root: Path) -> None:
    report = run_gates(spark, lake_root, data_docs=False)
    assert {s.table for s in report.suites} == {
        tables.ECG, tables.ECHO, tables.LABS, tables.LABELS, tables.ALIGNMENT,
    }  # fmt: skip
    failures = {s.suite: s.failed() for s in report.suites if not s.success}
    assert failures == {}
    assert all(s.rows > 0 for s in report.suites)
    assert report.quarantined == {}


def test_shuffled_frame_times_are_caught(runner: GateRunner, lake_root: Path) -> None:
    echo = lake.read_pandas(tables.ECHO, lake_root=lake_root)
    times = np.asarray(echo.at[0, "frame_times_s"], dtype=float)
    echo.at[0, "frame_times_s"] = np.random.default_rng(0).permutation(times)
    assert _failed(runner, tables.ECHO, echo) == {"echo_frame_times_increasing": 1}


def test_lab_in_wrong_unit_is_caught(runner: GateRunner, lake_root: Path) -> None:
    labs = lake.read_pandas(tables.LABS, lake_root=lake_root)
    row = labs.index[labs["loinc"] == "2160-0"][0]
    labs.loc[row, "value"] = labs.loc[row, "value"] * 88.42  # umol/L number, mg/dL label
    assert _failed(runner, tables.LABS, labs) == {"labs_value_within_limits": 1}


def test_contradictory_readers_without_adjudication_are_caught(
    runner: GateRunner, lake_root: Path
) -> None:
    labels = lake.read_pandas(tables.LABELS, lake_root=lake_root)
    patients = known_patients(lake_root)
    assert _failed(runner, tables.LABELS, labels, known_patients=patients) == {}
    row = labels.index[labels["n_readers"] == 2][0]
    labels.at[row, "reader_triage_urgent"] = [True, False]
    labels.loc[row, "adjudicated"] = False
    assert _failed(runner, tables.LABELS, labels, known_patients=patients) == {
        "labels_adjudicated_where_readers_disagree": 1
    }


def test_label_before_exam_and_unknown_patient_are_caught(
    runner: GateRunner, lake_root: Path
) -> None:
    labels = lake.read_pandas(tables.LABELS, lake_root=lake_root)
    patients = known_patients(lake_root)
    early = labels.copy()
    early.loc[0, "label_time"] = early.loc[0, "exam_time"] - pd.Timedelta(days=1)
    assert _failed(runner, tables.LABELS, early, known_patients=patients) == {
        "labels_label_after_exam": 1
    }
    orphan = labels.copy()
    orphan.loc[0, "patient_key"] = "no-such-patient"
    assert _failed(runner, tables.LABELS, orphan, known_patients=patients) == {
        "labels_patient_present": 1
    }


def test_200ms_alignment_lag_is_caught(runner: GateRunner, lake_root: Path) -> None:
    align = lake.read_pandas(tables.ALIGNMENT, lake_root=lake_root)
    row = align.index[align["ed_s"].notna()][0]
    align.loc[row, "lag_ed_s"] = 0.2
    align.loc[row, "ed_s"] = align.loc[row, "r_peak_s"] + 0.2
    assert _failed(runner, tables.ALIGNMENT, align) == {"alignment_lag_within_bound": 1}


def test_ecg_nan_is_caught(runner: GateRunner, lake_root: Path) -> None:
    ecg = lake.read_pandas(tables.ECG, lake_root=lake_root)
    signal = np.asarray(ecg.at[0, "lead_I"], dtype=np.float32).copy()
    signal[100] = np.nan
    ecg.at[0, "lead_I"] = signal
    assert _failed(runner, tables.ECG, ecg) == {"ecg_no_nan": 1}


def test_runner_quarantines_failing_rows_and_builds_docs(spark, lake_root: Path) -> None:
    echo = lake.read_pandas(tables.ECHO, lake_root=lake_root)
    times = np.asarray(echo.at[1, "frame_times_s"], dtype=float)
    echo.at[1, "frame_times_s"] = times[::-1]
    report = run_gates(spark, lake_root, layer="silver", frames={tables.ECHO: echo})
    assert report.blocked() == [tables.ECHO]
    assert report.suite(tables.ECHO).failed() == ["echo_frame_times_increasing"]
    assert report.quarantined == {"echo_frame_times_increasing": 1}
    q = lake.read_pandas(tables.QUARANTINE, lake_root=lake_root)
    gate = q[q["stage"] == "gate_echo"]
    assert list(gate["reason"]) == ["echo_frame_times_increasing"]
    assert gate["row_id"].iloc[0] == echo.at[1, "record_key"]
    assert "frame_times_increasing=False" in gate["detail"].iloc[0]
    # re-running on the same bad batch adds nothing
    again = run_gates(spark, lake_root, layer="silver", frames={tables.ECHO: echo}, data_docs=False)
    assert again.quarantined == {}
    assert report.data_docs == lake_root / "_gx" / "data_docs" / "index.html"
    assert report.data_docs.exists()


def test_cli_prints_every_suite(lake_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the package attribute becomes the command once cli/__init__ imports it: patch the module
    monkeypatch.setattr(sys.modules[validate.__module__], "console", Console(width=200))
    app = typer.Typer()
    app.command()(validate)
    result = CliRunner().invoke(app, ["--lake", str(lake_root), "--layer", "gold", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "gold_alignment" in result.output
    assert "alignment_lag_within_bound" in result.output
    assert "silver_ecg" not in result.output
