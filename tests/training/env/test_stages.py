"""Stages 1 and 2 on the synthetic gold lake: pinned reads, resume after a kill, distributed
runs, embeddings that resolve to MLflow models (training environment)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import torch
from deltalake import DeltaTable, write_deltalake

from cardiolake import tables
from cardiolake.domain import STANDARD_LEADS
from cardiolake.tracking import tracking_uri
from training.data import ecg_loader
from training.lake import pin
from training.settings import DataSettings

REPO = Path(__file__).resolve().parents[3]


def _env() -> dict[str, str]:
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: a child must log to its own lake
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


#: Small, fast stage settings for the synthetic lake.
FAST = ["run.batch_size=8", "data.reader_workers=1", "data.shuffle_capacity=16"]


def run_training(lake: Path, stage: str, *sets: str, extra: tuple[str, ...] = (),
                 timeout: int = 600) -> dict:  # fmt: skip
    out = lake / f"summary_{stage}.json"
    cmd = [sys.executable, "-m", "training", stage, "--lake", str(lake), "--summary-out", str(out)]
    for s in (*FAST, *sets):
        cmd += ["--set", s]
    proc = subprocess.run([*cmd, *extra], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=_env())  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def _ecg_rows(values: list[float], n: int = 1000) -> pa.Table:
    rows = []
    for v in values:
        leads = {f"lead_{x}": (np.full(n, v, np.float32).tolist() if x == "I" else None)
                 for x in STANDARD_LEADS}  # fmt: skip
        rows.append({"example_key": f"k{v}", "modality": "ecg", "record_key": f"k{v}",
                     "split": "train", "fs": 100, "n_samples": n, **leads})  # fmt: skip
    floats = pa.list_(pa.float32())
    leads = [(f"lead_{x}", floats) for x in STANDARD_LEADS]
    schema = pa.schema([("example_key", pa.string()), ("modality", pa.string()),
                        ("record_key", pa.string()), ("split", pa.string()), ("fs", pa.int32()),
                        ("n_samples", pa.int32()), *leads])  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schema)


def test_petastorm_reads_exactly_the_pinned_version(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    path = tables.EXAMPLES_PRETRAIN.path(root)
    path.mkdir(parents=True)
    write_deltalake(str(path), _ecg_rows([0.5, 1.0, 1.5]))  # v0
    write_deltalake(str(path), _ecg_rows([2.0, 2.5]), mode="append")  # v1
    write_deltalake(str(path), _ecg_rows([3.0]), mode="overwrite")  # v2: v0/v1 files removed
    assert len(list(path.glob("*.parquet"))) == 3  # removed files are still on disk
    data = DataSettings(reader_workers=1, shuffle_capacity=0)

    def values(version: int) -> list[float]:
        pinned = pin(tables.EXAMPLES_PRETRAIN, root, version=version)
        seen: list[float] = []
        with ecg_loader(pinned, data, split=None, batch_size=2, shuffle=False,
                        drop_last=False) as stream:  # fmt: skip
            for batch in stream:
                seen += batch["ecg"][:, 0, 0].tolist()
        return sorted(seen)

    assert values(0) == [0.5, 1.0, 1.5]  # (mV: signals are clipped at 5 mV)
    assert values(1) == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert values(2) == [3.0]
    assert pin(tables.EXAMPLES_PRETRAIN, root, version=1).rows == 5


def _checkpoint_epoch(lake: Path) -> int:
    path = lake / "_checkpoints" / "pretrain-ssl" / "last.pt"
    if not path.exists():
        return 0
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])
    except Exception:  # mid-rename
        return 0


def test_a_killed_run_resumes_into_the_same_mlflow_run(lake: Path) -> None:
    cmd = [sys.executable, "-m", "training", "pretrain", "--lake", str(lake)]
    for s in (*FAST, "run.epochs=4", "run.embed=false"):
        cmd += ["--set", s]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, env=_env())  # fmt: skip
    deadline = time.time() + 300
    while _checkpoint_epoch(lake) < 1:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
        assert time.time() < deadline, "no checkpoint after 300 s"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _checkpoint_epoch(lake)
    assert 1 <= killed_at < 4
    ckpt = torch.load(lake / "_checkpoints/pretrain-ssl/last.pt", weights_only=False)
    first_run = ckpt["run_id"]

    summary = run_training(lake, "pretrain", "run.epochs=4", "run.embed=false")
    assert summary["run_id"] == first_run
    mlflow.set_tracking_uri(tracking_uri(lake))
    client = mlflow.MlflowClient()
    run = client.get_run(first_run)
    assert run.info.status == "FINISHED"
    assert run.data.tags["cardiolake.resumed_at_epoch"] == str(killed_at)
    steps = sorted(m.step for m in client.get_metric_history(first_run, "ecg_loss"))
    assert steps[-1] == 4 and set(steps) == {1, 2, 3, 4}
    # a finished run is not resumed: the next invocation opens a new run
    again = run_training(lake, "pretrain", "run.epochs=1", "run.embed=false")
    assert again["run_id"] != first_run


def test_torch_distributor_runs_one_epoch_on_two_processes(lake: Path) -> None:
    summary = run_training(lake, "pretrain", "run.epochs=1", "run.embed=false",
                           "run.batch_size=3", extra=("--processes", "2"))  # fmt: skip
    mlflow.set_tracking_uri(tracking_uri(lake))
    run = mlflow.MlflowClient().get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["cardiolake.processes"] == "2"
    assert all(np.isfinite(v) for v in run.data.metrics.values())


def _rows(table: tables.Table, lake: Path) -> list[dict]:
    dt = DeltaTable(str(table.path(lake)))
    paths = [u.removeprefix("file://") for u in dt.file_uris()]
    cols = ["patient_key", "record_key", "model_version", "model_uri", "run_id", "encoder_stage",
            "embedding"]  # fmt: skip
    return ds.dataset(paths, format="parquet").to_table(columns=cols).to_pylist()


def test_stages_write_embeddings_whose_encoder_versions_resolve_to_mlflow_models(
    lake: Path,
) -> None:
    pre = run_training(lake, "pretrain", "run.epochs=1")
    align = run_training(lake, "align", "run.epochs=1", "beats_per_pair=2")
    assert align["parent_run_id"] == pre["run_id"]
    mlflow.set_tracking_uri(tracking_uri(lake))
    client = mlflow.MlflowClient()
    align_run = client.get_run(align["run_id"])
    assert align_run.data.tags["cardiolake.parent_run"] == pre["run_id"]
    version = DeltaTable(str(tables.EXAMPLES_ALIGN.path(lake))).version()
    assert align_run.data.tags["delta.gold.examples_align"] == str(version)
    assert "test_retrieval_top1" in align_run.data.metrics

    ecg = _rows(tables.ECG_EMBEDDING, lake)
    assert {r["encoder_stage"] for r in ecg} == {"pretrain", "align"}
    assert len(ecg) == 2 * 20  # 20 ECGs x two encoder versions side by side
    for uri in {r["model_uri"] for r in ecg}:
        name, version = uri.removeprefix("models:/").split("/")
        mv = client.get_model_version(name, version)
        assert mv.run_id in {pre["run_id"], align["run_id"]}
        model = mlflow.pytorch.load_model(uri)
        x = torch.randn(1, 12, 1000)
        x[:, 6:] = float("nan")
        assert model(x).shape == (1, len(ecg[0]["embedding"]))
    assert len(_rows(tables.ECHO_EMBEDDING, lake)) == 2 * 20
    fused = _rows(tables.FUSED_EMBEDDING, lake)
    assert len(fused) == 20 and all(len(r["embedding"]) == 128 for r in fused)
    assert not any("patient" in k and "key" not in k for r in fused for k in r)
