"""`cardiolake train` from the platform environment on a really ingested lake.

The stages run in the training environment (a subprocess), so this is the path a user takes:
ingest -> train pretrain -> train align -> features apply/materialize -> online embedding.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from typer.testing import CliRunner

from cardiolake import lake, tables
from cardiolake.cli import app
from cardiolake.cli.train import _REPO
from cardiolake.tracking import ENCODER_MODELS, tracking_uri

pytestmark = [pytest.mark.spark, pytest.mark.integration]

TRAIN_PYTHON = _REPO / ".venv-train" / "bin" / "python"
FAST = ["--set", "run.epochs=1", "--set", "run.batch_size=8", "--set", "data.reader_workers=1",
        "--set", "data.shuffle_capacity=16"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(spark, tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny cohort ingested with its gates, then both stages trained for one epoch."""
    if not TRAIN_PYTHON.exists():
        pytest.fail(f"training environment missing at {TRAIN_PYTHON}: run `make train-env`")
    from expectations.promotion import ingest_with_gates
    from expectations.settings import GateSettings
    from pipelines.settings import IngestSettings

    work = tmp_path_factory.mktemp("train")
    landing = work / "landing"
    shutil.copytree(tiny_cohort, landing / "site_a")
    root = work / "lake"
    ingest_with_gates(spark, IngestSettings(landing=landing, lake_root=root, task_slices=2),
                      gate_settings=GateSettings(), data_docs=False)  # fmt: skip
    runner = CliRunner()
    out = {"lake": root}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        for stage in ("pretrain", "align"):
            result = runner.invoke(app, ["train", stage, "--lake", str(root), *FAST])
            assert result.exit_code == 0, result.output
            out[stage] = json.loads((root / "_mlflow" / f"last_{stage}.json").read_text())
    return out


def _client(root: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=tracking_uri(root), registry_uri=tracking_uri(root))


def test_stages_log_runs_with_lineage_and_registered_encoders(trained: dict) -> None:
    root = trained["lake"]
    client = _client(root)
    pre = client.get_run(trained["pretrain"]["run_id"])
    align = client.get_run(trained["align"]["run_id"])
    version = lake.table_version(tables.EXAMPLES_PRETRAIN, lake_root=root)
    assert pre.data.tags["delta.gold.examples_pretrain"] == str(version)
    assert align.data.tags["cardiolake.parent_run"] == pre.info.run_id
    assert "ecg_loss" in pre.data.metrics and "contrastive" in align.data.metrics
    artifacts = {a.path for a in client.list_artifacts(pre.info.run_id, "plots")}
    assert "plots/pretrain_curves.png" in artifacts
    for kind, name in ENCODER_MODELS.items():
        versions = {v.run_id for v in client.search_model_versions(f"name = '{name}'")}
        assert {pre.info.run_id, align.info.run_id} <= versions, kind


def test_every_embedding_row_names_a_registered_model_version(trained: dict) -> None:
    root = trained["lake"]
    client = _client(root)
    ecg = lake.read_pandas(tables.ECG_EMBEDDING, lake_root=root)
    examples = lake.read_pandas(tables.EXAMPLES_PRETRAIN, lake_root=root,
                                columns=["record_key", "modality"])  # fmt: skip
    n_ecg = int((examples["modality"] == "ecg").sum())
    assert ecg.groupby("encoder_stage").size().to_dict() == {"align": n_ecg, "pretrain": n_ecg}
    for table in (tables.ECG_EMBEDDING, tables.ECHO_EMBEDDING, tables.FUSED_EMBEDDING):
        frame = lake.read_pandas(table, lake_root=root)
        assert len(frame) and frame["embedding"].map(len).nunique() == 1
        for uri, run_id in frame[["model_uri", "run_id"]].drop_duplicates().itertuples(index=False):
            name, version = uri.removeprefix("models:/").split("/")
            assert client.get_model_version(name, version).run_id == run_id
    # patient keys are the lake's pseudonyms, never identifiers from the landing zone
    assert set(ecg["patient_key"]) <= set(examples.merge(ecg, on="record_key")["patient_key"])


def test_feast_serves_the_newest_encoder_and_any_chosen_one(trained: dict) -> None:
    root = trained["lake"]
    from feature_repo.store import (
        ENCODER_TAG,
        FeatureSettings,
        apply,
        get_online,
        materialize,
        open_store,
    )

    settings = FeatureSettings(lake_root=root)
    store = open_store(settings)
    snaps = apply(store, settings)
    assert snaps[tables.ECG_EMBEDDING].model_version == f"{ENCODER_MODELS['ecg']}/2"
    materialize(store)
    emb = lake.read_pandas(tables.ECG_EMBEDDING, lake_root=root)
    newest = emb[emb["model_version"] == f"{ENCODER_MODELS['ecg']}/2"]
    latest = newest.sort_values("event_time").groupby("patient_key").tail(1).iloc[0]
    got = get_online(store, [latest["patient_key"]],
                     features=["ecg_embedding:ecg_embedding",
                               "ecg_embedding:ecg_model_version"])  # fmt: skip
    np.testing.assert_allclose(np.asarray(got["ecg_embedding"].iloc[0]), latest["embedding"],
                               rtol=1e-6)  # fmt: skip
    assert got["ecg_model_version"].iloc[0] == f"{ENCODER_MODELS['ecg']}/2"
    result = CliRunner().invoke(app, ["features", "apply", "--lake", str(root), "--no-build",
                                      "--encoder",
                                      f"ecg_embedding={ENCODER_MODELS['ecg']}/1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    view = open_store(settings).get_feature_view("ecg_embedding")
    assert view.tags[ENCODER_TAG] == f"{ENCODER_MODELS['ecg']}/1"


def test_mlflow_ui_command_points_at_the_lake_store(trained: dict) -> None:
    root = trained["lake"]
    result = CliRunner().invoke(app, ["mlflow", "ui", "--lake", str(root), "--print"])
    assert result.exit_code == 0
    assert f"sqlite:///{root.resolve()}/_mlflow/mlflow.db" in result.output.replace("\n", "")


def test_train_explains_a_missing_environment_or_lake(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["train", "pretrain", "--lake", str(tmp_path),
                                 "--python", str(tmp_path / "nope" / "python")])  # fmt: skip
    assert result.exit_code == 2
    assert "make train-env" in result.output
    result = runner.invoke(app, ["train", "pretrain", "--lake", str(tmp_path / "empty"),
                                 "--python", str(TRAIN_PYTHON)])  # fmt: skip
    assert result.exit_code == 2
    assert "gold.examples_pretrain" in result.output and "cardiolake ingest" in result.output


def test_embedding_quality_benchmark_runs_on_a_small_lake(trained: dict, tiny_cohort: Path,
                                                          tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "quality.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/embedding_quality.py", "--lake", str(trained["lake"]),
         "--landing", str(tiny_cohort), "--out", str(out)],
        cwd=_REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"pretrain", "align", "latent_ceiling"} <= set(result["probes"])
    assert result["retrieval"]["run_id"] == trained["align"]["run_id"]
    assert result["retrieval"]["chance"] == pytest.approx(1 / 32)


def test_training_set_is_a_point_in_time_delta_table(trained: dict) -> None:
    root = trained["lake"]
    runner = CliRunner()
    fresh = root.parent / "unapplied"
    shutil.copytree(root, fresh, ignore=shutil.ignore_patterns("_feast"))
    result = runner.invoke(app, ["features", "training-set", "--lake", str(fresh)])
    assert result.exit_code == 2 and "cardiolake features apply" in " ".join(result.output.split())
    result = runner.invoke(app, ["features", "apply", "--lake", str(root)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["features", "training-set", "--lake", str(root)])
    assert result.exit_code == 0, result.output
    frame = lake.read_pandas(tables.TEACHER_TRAINING_SET, lake_root=root)
    labeled = lake.read_pandas(tables.EXAMPLES_LABELED, lake_root=root,
                               columns=["exam_key", "triage_urgent"])  # fmt: skip
    assert sorted(frame["exam_key"]) == sorted(labeled["exam_key"])
    assert {"ecg_embedding", "ntprobnp_pg_ml", "heart_rate_bpm", "triage_urgent"} <= set(frame)
    emb = lake.read_pandas(tables.ECG_EMBEDDING, lake_root=root)
    served = frame.dropna(subset=["ecg_embedding"])
    # point in time: an ECG embedding is joined only when its ECG was taken before the label
    times = emb.groupby("patient_key")["event_time"].min()
    for row in served.itertuples():
        assert times[row.patient_key] <= row.event_timestamp
    history = lake.table_history(tables.TEACHER_TRAINING_SET, lake_root=root, limit=1)
    assert history[0]["operation"]


def test_teacher_and_student_train_from_feast_sets_with_lineage(trained: dict) -> None:
    root = trained["lake"]
    runner = CliRunner()
    result = runner.invoke(app, ["train", "student", "--lake", str(root), *FAST])
    assert result.exit_code == 2 and "cardiolake train teacher" in " ".join(result.output.split())
    for args in (
        ["features", "apply", "--lake", str(root)],
        ["features", "training-set", "--lake", str(root)],
        ["features", "training-set", "--lake", str(root), "--entities", "ecg"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        summaries = {}
        for stage in ("teacher", "student"):
            result = runner.invoke(app, ["train", stage, "--lake", str(root), *FAST])
            assert result.exit_code == 0, result.output
            summaries[stage] = json.loads((root / "_mlflow" / f"last_{stage}.json").read_text())
    client = _client(root)
    teacher = client.get_run(summaries["teacher"]["run_id"])
    assert teacher.data.tags["cardiolake.parent_run"] == trained["align"]["run_id"]
    assert teacher.data.tags["feast.feature_service"] == "teacher_training"
    assert "delta.features.teacher_training_set" in teacher.data.tags
    assert 0.0 <= summaries["teacher"]["calibration"]["threshold"] <= 1.0
    targets = lake.read_pandas(tables.TEACHER_TARGETS, lake_root=root)
    labeled = lake.read_pandas(tables.EXAMPLES_LABELED, lake_root=root, columns=["exam_key"])
    assert (targets["source"] == "labels").sum() == len(labeled)
    assert (targets["source"] == "ecg").sum() > 0
    assert targets["logits"].map(len).unique().tolist() == [6]
    student = client.get_run(summaries["student"]["run_id"])
    assert student.data.tags["cardiolake.teacher"] == summaries["teacher"]["teacher"].removeprefix(
        "models:/"
    )
    assert "delta.features.teacher_targets" in student.data.tags
    thresholds = summaries["student"]["calibration"]["thresholds_by_lead_count"]
    assert set(thresholds) == {"1", "2", "3", "6"}
    name, version = summaries["student"]["student"].removeprefix("models:/").split("/")
    assert client.get_model_version(name, version).run_id == student.info.run_id
