"""Quality gates on a lake built from the tiny cohort: clean data passes, violations are caught.

The lake is ingested the way the CLI does it (:func:`expectations.promotion.ingest_with_gates`),
so the cohort's bad-input corpus meets the gates for real; the hand-made violations are
validated as frames.
"""

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
from expectations.promotion import GatedIngest, ingest_with_gates
from expectations.runner import GateRunner, known_patients, run_gates
from expectations.settings import GateSettings
from pipelines.job import run_ingest
from pipelines.quarantine import gate_failed_keys, gate_stage
from pipelines.settings import IngestSettings
from tests.fixtures.corpus import GATE_EXPECTATION, corpus, silver_key

pytestmark = [pytest.mark.spark, pytest.mark.integration]


@pytest.fixture(scope="module")
def gated(
    spark, tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[IngestSettings, GatedIngest]:
    """The tiny cohort (bad-input corpus included) ingested once with the gates."""
    work = tmp_path_factory.mktemp("gates")
    shutil.copytree(tiny_cohort, work / "landing" / "site_a")
    settings = IngestSettings(landing=work / "landing", lake_root=work / "lake", task_slices=2)
    return settings, ingest_with_gates(spark, settings, data_docs=False)


@pytest.fixture(scope="module")
def lake_root(gated) -> Path:
    """The gated lake's root."""
    return gated[0].lake_root


@pytest.fixture(scope="module")
def runner() -> GateRunner:
    """One Great Expectations context for the frame-level checks (no docs)."""
    return GateRunner(settings=GateSettings())


def _promoted(table: tables.Table, lake_root: Path) -> pd.DataFrame:
    """A silver/gold table without the rows the gates held back (the lake's clean data)."""
    frame = lake.read_pandas(table, lake_root=lake_root)
    key = {tables.LABELS: "exam_key", tables.ALIGNMENT: "alignment_key"}.get(table, "record_key")
    return frame[~frame[key].isin(gate_failed_keys(lake_root))].reset_index(drop=True)


def _failed(runner: GateRunner, table: tables.Table, frame: pd.DataFrame, **kw) -> dict[str, int]:
    outcome, _ = runner.validate(table, frame, **kw)
    return {e.expectation: e.unexpected_count for e in outcome.expectations if not e.success}


def test_corpus_defects_are_caught_by_the_expectation_meant_for_them(gated) -> None:
    settings, result = gated
    site = settings.landing / "site_a"
    q = lake.read_pandas(tables.QUARANTINE, lake_root=settings.lake_root)
    defects = corpus(site)
    caught = defects[defects["defect"].isin(GATE_EXPECTATION)]
    assert set(caught["defect"]) == set(GATE_EXPECTATION)
    for _, row in caught.iterrows():
        table, expectation = GATE_EXPECTATION[row["defect"]]
        key = silver_key(row, site, settings.lake_root)
        hits = q[q["row_id"] == key]
        assert list(zip(hits["stage"], hits["reason"], strict=True)) == [
            (gate_stage(table), expectation)
        ], row["defect"]
        assert hits["detail"].iloc[0].startswith("expect_")  # the GE type and observed values
    silver = result.reports[0]
    assert set(silver.blocked()) == {t for t, _ in GATE_EXPECTATION.values()}
    assert silver.quarantined == {
        e: int((caught["defect"].map(lambda d: GATE_EXPECTATION[d][1]) == e).sum())
        for _, e in GATE_EXPECTATION.values()
    }


def test_clean_data_passes_every_suite(spark, gated) -> None:
    settings, result = gated
    root, site = settings.lake_root, settings.landing / "site_a"
    # the silver gates held back exactly the corpus rows: no clean row was quarantined
    defects = corpus(site)
    corpus_keys = {
        silver_key(row, site, root)
        for _, row in defects[defects["defect"].isin(GATE_EXPECTATION)].iterrows()
    }
    assert gate_failed_keys(root) == corpus_keys
    # ... gold was built from the rest, and its gates passed
    gold = result.reports[1]
    assert [s.table for s in gold.suites] == [tables.ALIGNMENT] and gold.success
    # ... and what was promoted passes every suite
    frames = {t: _promoted(t, root) for t in (tables.ECG, tables.ECHO, tables.LABS, tables.LABELS)}
    report = run_gates(spark, root, frames=frames, quarantine=False, data_docs=False)
    assert {s.table for s in report.suites} == {*frames, tables.ALIGNMENT}
    assert {s.suite: s.failed() for s in report.suites if not s.success} == {}
    assert all(s.rows > 0 for s in report.suites)


def test_shuffled_frame_times_are_caught(runner: GateRunner, lake_root: Path) -> None:
    echo = _promoted(tables.ECHO, lake_root)
    times = np.asarray(echo.at[0, "frame_times_s"], dtype=float)
    echo.at[0, "frame_times_s"] = np.random.default_rng(0).permutation(times)
    assert _failed(runner, tables.ECHO, echo) == {"echo_frame_times_increasing": 1}


def test_lab_in_wrong_unit_is_caught(runner: GateRunner, lake_root: Path) -> None:
    labs = _promoted(tables.LABS, lake_root)
    row = labs.index[labs["loinc"] == "2160-0"][0]
    labs.loc[row, "value"] = labs.loc[row, "value"] * 88.42  # umol/L number, mg/dL label
    assert _failed(runner, tables.LABS, labs) == {"labs_value_within_limits": 1}


def test_contradictory_readers_without_adjudication_are_caught(
    runner: GateRunner, lake_root: Path
) -> None:
    labels = _promoted(tables.LABELS, lake_root)
    patients = known_patients(lake_root)
    assert _failed(runner, tables.LABELS, labels, known_patients=patients) == {}
    row = labels.index[labels["n_readers"] == 2][0]
    labels.at[row, "reader_triage_urgent"] = [True, False]
    labels.loc[row, "adjudicated"] = False
    assert _failed(runner, tables.LABELS, labels, known_patients=patients) == {
        "labels_adjudicated_where_readers_disagree": 1
    }


def _batch_of_readers(labels: pd.DataFrame, n: int, agree: bool) -> pd.DataFrame:
    """``n`` adjudicated two-reader exams in one new batch, readers agreeing or coin-flipping."""
    rng = np.random.default_rng(5)
    rows = labels.iloc[[i % len(labels) for i in range(n)]].copy().reset_index(drop=True)
    first = rng.random(n) < 0.5
    second = first if agree else rng.random(n) < 0.5
    rows["reader_triage_urgent"] = [[bool(a), bool(b)] for a, b in zip(first, second, strict=True)]
    rows["n_readers"], rows["adjudicated"], rows["run_id"] = 2, True, "batch-under-test"
    rows["exam_key"] = [f"exam-{i}" for i in range(n)]
    return rows


def test_reader_kappa_below_the_floor_holds_the_batch_back(
    runner: GateRunner, lake_root: Path
) -> None:
    labels = _promoted(tables.LABELS, lake_root)
    patients = known_patients(lake_root)
    noisy = pd.concat([labels, _batch_of_readers(labels, 40, agree=False)], ignore_index=True)
    # readers flipping coins: kappa ~0 over 40 exams, every exam of that batch is held back
    assert _failed(runner, tables.LABELS, noisy, known_patients=patients) == {
        "labels_reader_kappa_above_floor": 40
    }
    sound = pd.concat([labels, _batch_of_readers(labels, 40, agree=True)], ignore_index=True)
    assert _failed(runner, tables.LABELS, sound, known_patients=patients) == {}
    # five exams cannot show disagreement beyond chance (kappa_min_exams): not judged
    small = pd.concat([labels, _batch_of_readers(labels, 5, agree=False)], ignore_index=True)
    assert _failed(runner, tables.LABELS, small, known_patients=patients) == {}
    eager = GateRunner(settings=GateSettings(kappa_min_exams=1))
    assert _failed(eager, tables.LABELS, small, known_patients=patients) == {
        "labels_reader_kappa_above_floor": 5
    }


def test_label_before_exam_and_unknown_patient_are_caught(
    runner: GateRunner, lake_root: Path
) -> None:
    labels = _promoted(tables.LABELS, lake_root)
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
    align = _promoted(tables.ALIGNMENT, lake_root)
    row = align.index[align["ed_s"].notna()][0]
    align.loc[row, "lag_ed_s"] = 0.2
    align.loc[row, "ed_s"] = align.loc[row, "r_peak_s"] + 0.2
    assert _failed(runner, tables.ALIGNMENT, align) == {"alignment_lag_within_bound": 1}


def test_ecg_nan_is_caught(runner: GateRunner, lake_root: Path) -> None:
    ecg = _promoted(tables.ECG, lake_root)
    signal = np.asarray(ecg.at[0, "lead_I"], dtype=np.float32).copy()
    signal[100] = np.nan
    ecg.at[0, "lead_I"] = signal
    assert _failed(runner, tables.ECG, ecg) == {"ecg_no_nan": 1}


def test_runner_quarantines_failing_rows_and_builds_docs(spark, lake_root: Path) -> None:
    echo = _promoted(tables.ECHO, lake_root)
    times = np.asarray(echo.at[1, "frame_times_s"], dtype=float)
    echo.at[1, "frame_times_s"] = times[::-1]
    clean = {t: _promoted(t, lake_root) for t in (tables.ECG, tables.LABS, tables.LABELS)}
    report = run_gates(spark, lake_root, layer="silver", frames={**clean, tables.ECHO: echo})
    assert report.blocked() == [tables.ECHO]
    assert report.suite(tables.ECHO).failed() == ["echo_frame_times_increasing"]
    assert report.quarantined == {"echo_frame_times_increasing": 1}
    q = lake.read_pandas(tables.QUARANTINE, lake_root=lake_root)
    gate = q[q["run_id"] == report.run_id]
    assert list(zip(gate["stage"], gate["reason"], strict=True)) == [
        ("gate_echo", "echo_frame_times_increasing")
    ]
    assert gate["row_id"].iloc[0] == echo.at[1, "record_key"]
    assert "frame_times_increasing=False" in gate["detail"].iloc[0]
    # re-running on the same bad batch adds nothing
    again = run_gates(
        spark, lake_root, layer="silver", frames={**clean, tables.ECHO: echo}, data_docs=False
    )
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


def test_examples_read_only_beats_that_passed_the_alignment_gate(spark, gated) -> None:
    settings, _ = gated
    root = settings.lake_root
    align = _promoted(tables.ALIGNMENT, root)
    row = align.index[align["ed_s"].notna()][0]
    align.loc[row, "lag_ed_s"] = 0.2
    report = run_gates(spark, root, frames={tables.ALIGNMENT: align}, data_docs=False)
    assert report.quarantined.get("alignment_lag_within_bound") == 1
    # rebuild the example tables from scratch: the held-back beat is not in its pair's beats
    shutil.rmtree(tables.EXAMPLES_ALIGN.path(root))
    run_ingest(spark, settings, stages=("examples",))
    examples = lake.read_pandas(tables.EXAMPLES_ALIGN, lake_root=root)
    beats = lake.read_pandas(tables.ALIGNMENT, lake_root=root)
    held = gate_failed_keys(root, tables.ALIGNMENT)
    assert examples["n_beats"].sum() == len(beats) - len(held) and len(held) >= 1
    pair = examples[
        (examples["ecg_record_key"] == align.at[row, "ecg_record_key"])
        & (examples["echo_record_key"] == align.at[row, "echo_record_key"])
    ]
    assert align.at[row, "r_peak_s"] not in list(pair["r_peaks_s"].iloc[0])
