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
import pandas as pd
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from cardiolake import lake, tables
from cardiolake.cli import app
from cardiolake.cli.train import _REPO
from cardiolake.cohort.describe import patient_truth
from cardiolake.pseudonym import resolve_secret
from cardiolake.tracking import ENCODER_MODELS, tracking_uri
from tests.fixtures.trained import TRAIN_PYTHON

pytestmark = [pytest.mark.spark, pytest.mark.integration]


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


def test_embedding_quality_benchmark_runs_on_a_small_lake(trained: dict, learning_cohort: Path,
                                                          tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "quality.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/embedding_quality.py", "--lake", str(trained["lake"]),
         "--landing", str(learning_cohort), "--out", str(out)],
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


@pytest.fixture(scope="module")
def external_lake(spark, external_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another cohort ingested into a lake of its own (an external test set)."""
    from expectations.promotion import ingest_with_gates
    from expectations.settings import GateSettings
    from pipelines.settings import IngestSettings

    work = tmp_path_factory.mktemp("external")
    shutil.copytree(external_cohort, work / "landing" / "site_b")
    root = work / "lake"
    ingest_with_gates(spark, IngestSettings(landing=work / "landing", lake_root=root),
                      gate_settings=GateSettings(), data_docs=False)  # fmt: skip
    return root


def test_teacher_and_student_train_from_feast_sets_with_lineage(trained: dict, stage3: dict
                                                                ) -> None:  # fmt: skip
    root = trained["lake"]
    code, output = stage3["student_before_teacher"]
    assert code == 2 and "cardiolake train teacher" in output
    summaries = {"teacher": stage3["teacher"], "student": stage3["student"]}
    client = _client(root)
    teacher = client.get_run(summaries["teacher"]["run_id"])
    assert teacher.data.tags["cardiolake.parent_run"] == trained["align"]["run_id"]
    assert teacher.data.tags["feast.feature_service"] == "teacher_training"
    assert "delta.features.teacher_training_set" in teacher.data.tags
    assert 0.0 <= summaries["teacher"]["calibration"]["threshold"] <= 1.0
    # the operating point keeps >= 90 % of urgent validation exams flagged
    assert teacher.data.metrics["validation_sensitivity"] >= 0.90
    targets = lake.read_pandas(tables.TEACHER_TARGETS, lake_root=root)
    labeled = lake.read_pandas(tables.EXAMPLES_LABELED, lake_root=root, columns=["exam_key"])
    assert (targets["source"] == "labels").sum() == len(labeled)
    # every 12-lead ECG (the unlabelled pool's too) has the teacher's soft targets
    examples = lake.read_pandas(tables.EXAMPLES_PRETRAIN, lake_root=root,
                                columns=["modality", "device_kind"])  # fmt: skip
    twelve = int(((examples["modality"] == "ecg")
                  & (examples["device_kind"] == "resting_12lead")).sum())  # fmt: skip
    assert (targets["source"] == "ecg").sum() == twelve
    assert targets["logits"].map(len).unique().tolist() == [6]
    student = client.get_run(summaries["student"]["run_id"])
    assert student.data.tags["cardiolake.teacher"] == summaries["teacher"]["teacher"].removeprefix(
        "models:/"
    )
    assert "delta.features.teacher_targets" in student.data.tags
    thresholds = summaries["student"]["calibration"]["thresholds_by_lead_count"]
    assert set(thresholds) == {"1", "2", "3", "6"}
    assert summaries["student"]["weight_kb"] < 300  # the device budget
    # it trains: the label and embedding-matching losses fall over the epochs (its AUCs on a
    # 160-patient cohort are noise-sized; benchmarks/model_quality.py judges them at scale)
    for key in ("hard", "embed"):
        curve = [m.value for m in sorted(client.get_metric_history(student.info.run_id, key),
                                         key=lambda m: m.step)]  # fmt: skip
        assert len(curve) >= 2 and min(curve[1:]) < 0.8 * curve[0], (key, curve)
    assert np.isfinite(student.data.metrics["best_train_auc"])
    name, version = summaries["student"]["student"].removeprefix("models:/").split("/")
    assert client.get_model_version(name, version).run_id == student.info.run_id
    assert stage3["labels_only"]["kind"] == "labels_only"


def _auc(metrics: dict, model: str, input_name: str) -> float:
    rows = [r for r in metrics["results"] if r["model"] == model and r["input"] == input_name
            and not r["variant"].startswith("labels_only/")]  # fmt: skip
    assert len(rows) == 1, (model, input_name)
    return rows[0]["auc"]


def test_evaluate_scores_an_external_cohort_with_the_trained_models(
    stage3: dict, external_lake: Path, external_cohort: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", "--lake", str(external_lake), "--split", "all",
                                      "--models-lake", str(stage3["lake"]),
                                      "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    predictions = pd.read_parquet(out / "predictions.parquet")
    metrics = json.loads((out / "metrics.json").read_text())
    labeled = lake.read_pandas(tables.EXAMPLES_LABELED, lake_root=external_lake,
                               columns=["patient_key"])  # fmt: skip
    # one row per patient x model x input, every labelled patient of the external cohort
    assert not predictions.duplicated(["patient_key", "model", "variant", "input"]).any()
    teacher = predictions[predictions["model"] == "teacher"]
    assert set(teacher["patient_key"]) == set(labeled["patient_key"])
    assert set(predictions["model"]) == {"teacher", "student", "student_labels_only"}
    inputs = set(predictions.loc[predictions["model"] == "student", "input"])
    assert inputs == {"limb:I", "limb:I,II", "limb:I,II,III", "limb:I,II,III,aVR,aVL,aVF",
                      "mobile"}  # fmt: skip
    assert predictions["score"].between(0, 1).all()
    mobile = predictions[predictions["input"] == "mobile"]
    assert set(mobile["n_leads"]) <= {1, 6} and len(mobile)
    # Learning, not chance, judged against the cohort's Bayes-optimal risk (truth/oracle_p) over
    # all 100 patients: an AUC on their ~9 urgent patients has a standard error ~0.1 (the
    # teacher's read 0.79 and 0.73 in two runs of this same test), a rank correlation with the
    # oracle ~0.07. The teacher sees echo and labs: it tracks the oracle (0.61-0.70 measured).
    teacher_auc = _auc(metrics, "teacher", "12lead")
    six = "limb:I,II,III,aVR,aVL,aVF"
    truth = patient_truth(external_cohort, resolve_secret(None, external_lake))
    scored = teacher[["patient_key", "score"]].merge(truth[["patient_key", "oracle_p"]])
    assert len(scored) == len(teacher)
    assert spearmanr(scored["score"], scored["oracle_p"]).statistic >= 0.35
    assert teacher_auc > 0.5
    # The students' AUCs here are reported, not judged: trained on 160 patients, even boosted
    # trees on the *latent* 12-lead signs reach only ~0.75 on these 100 patients, so a threshold
    # would test the seed. Their quality is judged at scale by benchmarks/model_quality.py;
    # their training by the training test above.
    derived = ["limb:I", "limb:I,II", "limb:I,II,III", six]
    for name in ("student", "student_labels_only"):
        assert all(np.isfinite(_auc(metrics, name, s)) for s in [*derived, "mobile"])
    assert {"distillation_lift_6lead", "mobile_minus_derived"} <= set(metrics["comparisons"])
    for row in metrics["results"]:
        assert set(row["finding_auc"]) >= {"hyperkalaemia", "reduced_lvef"}
    for png in ("roc.png", "calibration.png"):
        assert (out / png).stat().st_size > 10_000
    # the external lake serves the embeddings of the teacher's own encoders
    echo = lake.read_pandas(tables.ECHO_EMBEDDING, lake_root=external_lake)
    assert echo["run_id"].unique().tolist() == [stage3["teacher"]["parent_run_id"]]
    client = _client(stage3["lake"])
    run = client.get_run(metrics["run_id"])
    assert run.data.tags["cardiolake.model.teacher"] == stage3["teacher"]["teacher"].removeprefix(
        "models:/"
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/roc.png", "plots/calibration.png"} <= artifacts


def test_model_quality_benchmark_runs_on_small_lakes(
    stage3: dict, external_lake: Path, learning_cohort: Path, external_cohort: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    out = tmp_path / "quality.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/model_quality.py", "--train-lake", str(stage3["lake"]),
         "--train-landing", str(learning_cohort), "--eval-lake", str(external_lake),
         "--eval-landing", str(external_cohort), "--train-missing", "--curve-fractions", "1.0",
         "--set", "run.epochs=1", "--out", str(out)],
        cwd=_REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {g["goal"] for g in result["goals"]} >= {
        "teacher >= oracle - 0.02",
        "distillation lift (6-lead) >= +0.02",
    }
    assert 0.5 < result["ceilings"]["oracle"]["auc"] <= 1.0
    curve = {(c["init"], c["label_fraction"]) for c in result["evaluation"]["label_efficiency"]}
    assert {("align", 1.0), ("random", 1.0)} <= curve
