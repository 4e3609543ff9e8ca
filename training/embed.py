"""Encoders as MLflow models, and the embedding tables they write for the feature store.

Each stage ends by logging its encoders as registered MLflow models (a single-input wrapper
with a signature: absent ECG leads are NaN) and writing ``features.ecg_embedding`` (one row per
ECG recording), ``features.echo_embedding`` (one per echo) and, after stage 2,
``features.fused_embedding`` (one per aligned ECG/echo pair). Rows of several encoder versions
live side by side; ``model_version`` (``name/version`` of the registered model) selects one and
``model_uri`` loads it. Re-running with the same version adds nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import torch
from torch import nn

from cardiolake import tables
from cardiolake.tables import Table
from cardiolake.tracking import ENCODER_MODELS
from training.cache import ecg_at_rate
from training.data import iter_rows
from training.encoders import EcgEncoder, EchoEncoder
from training.lake import PinnedTable, latest, merge_rows, pin, read_columns
from training.runner import Context
from training.settings import DataSettings, EmbedSettings
from training.tracking import DELTA_TAG, STAGE_TAG, LoggedModel, log_encoder
from training.transforms import LEAD_COLUMNS, decode_frames, ecg_matrices, frames_at, resize_frames

logger = logging.getLogger(__name__)

#: Arrow schema of the three embedding tables.
EMBEDDING_SCHEMA = pa.schema(
    [
        ("patient_key", pa.string()),
        ("record_key", pa.string()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("embedding", pa.list_(pa.float32())),
        ("model_version", pa.string()),  # registered model name/version
        ("model_uri", pa.string()),  # models:/name/version
        ("encoder_stage", pa.string()),  # random | pretrain | align
        ("run_id", pa.string()),
        ("written_at", pa.timestamp("us", tz="UTC")),
    ]
)
#: Rows of one record and encoder version are one row.
EMBEDDING_KEYS = ("record_key", "model_version")
#: Echo clips averaged into one echo embedding.
ECHO_CLIPS = 3


class EcgEmbedder(nn.Module):
    """(B, 12, T) float32 mV with NaN leads for absent ones -> (B, D) embeddings."""

    def __init__(self, encoder: EcgEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.isfinite(x).all(dim=-1).float()
        return self.encoder(torch.nan_to_num(x), mask)


class EchoEmbedder(nn.Module):
    """(B, T, H, W) float32 clips in [0, 1] -> (B, D) embeddings."""

    def __init__(self, encoder: EchoEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.encoder(clips)


@torch.no_grad()
def ecg_embeddings(
    encoder: EcgEncoder, pinned: PinnedTable, fs: int, *, batch_rows: int = 64,
    skip: frozenset[str] = frozenset(),
) -> Iterator[pd.DataFrame]:  # fmt: skip
    """Embeddings of every ECG example of a pinned table (whole recordings, any length).

    Records in ``skip`` (already embedded by this encoder version) are not computed again.
    """
    encoder.eval()
    columns = ["record_key", "patient_key", "fs", "n_samples", *LEAD_COLUMNS]
    filt = ds.field("modality") == "ecg" if pinned.table == tables.EXAMPLES_PRETRAIN else None
    for frame in iter_rows(pinned, columns, batch_rows=batch_rows, filter=filt):
        frame = frame[~frame["record_key"].isin(skip)]
        if frame.empty:
            continue
        mats = ecg_matrices(frame, fs)
        out = np.zeros((len(frame), encoder.cfg.embedding_dim), dtype=np.float32)
        lengths = np.array([m[0].shape[-1] for m in mats])
        for n in np.unique(lengths):
            idx = np.flatnonzero(lengths == n)
            x = torch.from_numpy(np.stack([mats[i][0] for i in idx]))
            m = torch.from_numpy(np.stack([mats[i][1] for i in idx]))
            out[idx] = encoder(x, m).numpy()
        yield pd.DataFrame(
            {"record_key": frame["record_key"], "patient_key": frame["patient_key"],
             "embedding": list(out)}
        )  # fmt: skip


def echo_clips(row: Any, data: DataSettings) -> np.ndarray:
    """Up to :data:`ECHO_CLIPS` consecutive clips from the start of one echo (uint8)."""
    frames = decode_frames(row)
    times = np.arange(len(frames)) / float(row["fps"])
    clips = []
    for k in range(ECHO_CLIPS):
        start = k * data.echo_clip_s
        if k and start + data.echo_clip_s > times[-1]:
            break
        want = start + np.linspace(0.0, data.echo_clip_s, data.echo_frames, endpoint=False)
        clips.append(resize_frames(frames_at(frames, times, want), data.echo_size))
    return np.stack(clips)


@torch.no_grad()
def echo_embeddings(
    encoder: EchoEncoder, pinned: PinnedTable, data: DataSettings, *, batch_rows: int = 16,
    skip: frozenset[str] = frozenset(),
) -> Iterator[pd.DataFrame]:  # fmt: skip
    """Embeddings of every echo example of ``gold.examples_pretrain`` (mean over clips).

    Records in ``skip`` are neither decoded nor embedded.
    """
    encoder.eval()
    columns = ["record_key", "patient_key", "frames", "n_frames", "size", "fps"]
    for frame in iter_rows(pinned, columns, batch_rows=batch_rows,
                           filter=ds.field("modality") == "echo"):  # fmt: skip
        frame = frame[~frame["record_key"].isin(skip)]
        if frame.empty:
            continue
        vectors = []
        for row in frame.to_dict("records"):
            clips = torch.from_numpy(echo_clips(row, data))
            vectors.append(encoder(clips).mean(0).numpy())
        yield pd.DataFrame(
            {"record_key": frame["record_key"], "patient_key": frame["patient_key"],
             "embedding": vectors}
        )  # fmt: skip


def event_times(lake_root: Path, table: Table) -> dict[str, Any]:
    """Acquisition time of every silver record (the embedding's event time)."""
    pinned = pin(table, lake_root)
    arrow = read_columns(pinned, ["record_key", "acquisition_time"])
    frame = arrow.to_pandas()
    return dict(zip(frame["record_key"], pd.to_datetime(frame["acquisition_time"], utc=True),
                    strict=True))  # fmt: skip


def to_rows(
    frames: Iterable[pd.DataFrame], model: LoggedModel, stage: str, times: dict[str, Any]
) -> pa.Table:
    """Embedding frames -> rows of :data:`EMBEDDING_SCHEMA`."""
    parts = [f for f in frames if len(f)]
    if not parts:  # nothing new to embed
        return EMBEDDING_SCHEMA.empty_table()
    frame = pd.concat(parts, ignore_index=True)
    now = pd.Timestamp(dt.datetime.now(dt.UTC))
    frame["event_time"] = frame["record_key"].map(times)
    frame = frame.dropna(subset=["event_time", "patient_key"])
    frame["model_version"] = model.label
    frame["model_uri"] = model.uri
    frame["encoder_stage"] = stage
    frame["run_id"] = model.run_id
    frame["written_at"] = now
    frame["embedding"] = [np.asarray(v, dtype=np.float32) for v in frame["embedding"]]
    return pa.Table.from_pandas(frame[EMBEDDING_SCHEMA.names], schema=EMBEDDING_SCHEMA,
                                preserve_index=False)  # fmt: skip


def write_embeddings(rows: pa.Table, table: Table, lake_root: Path) -> dict[str, int]:
    """Merge embedding rows into a feature table; returns its version and rows inserted."""
    version, inserted = merge_rows(rows, table, lake_root, keys=EMBEDDING_KEYS)
    return {"version": version, "inserted": inserted}


def model_tags(stage: str, pinned: PinnedTable) -> dict[str, str]:
    """Tags of a registered encoder version: its stage and the table version it learnt from."""
    return {STAGE_TAG: stage, f"{DELTA_TAG}{pinned.table}": str(pinned.version)}


def log_and_embed(
    *,
    stage: str,
    lake_root: Path,
    ecg: EcgEncoder,
    echo: EchoEncoder,
    data: DataSettings,
    pinned: PinnedTable,
    write: bool = True,
    fused: Callable[[LoggedModel, LoggedModel], pa.Table] | None = None,
) -> dict[str, Any]:
    """Log both encoders to MLflow and write their embedding tables.

    Args:
        stage: ``random``, ``pretrain`` or ``align`` (the rows' ``encoder_stage``).
        lake_root: the lake root.
        ecg: the ECG encoder.
        echo: the echo encoder.
        data: data settings (rates, clip shape) the encoders were trained with.
        pinned: ``gold.examples_pretrain`` (its ECG and echo rows are embedded).
        write: write the embedding tables (else only log the models).
        fused: builds the fused rows from the two logged models (stage 2).

    Returns:
        ``models`` (name -> models:/ URI) and ``embeddings`` (table -> version, inserted).
    """
    import mlflow

    tags = model_tags(stage, pinned)
    ecg_example = np.random.default_rng(0).normal(0, 0.1, (2, 12, int(10 * data.ecg_fs)))
    ecg_model = log_encoder(
        EcgEmbedder(ecg), artifact="ecg_encoder", registered_name=ENCODER_MODELS["ecg"],
        example=ecg_example.astype(np.float32), tags=tags,
    )  # fmt: skip
    echo_example = np.random.default_rng(0).uniform(
        0, 1, (2, data.echo_frames, data.echo_size, data.echo_size)
    )
    echo_model = log_encoder(
        EchoEmbedder(echo), artifact="echo_encoder", registered_name=ENCODER_MODELS["echo"],
        example=echo_example.astype(np.float32), tags=tags,
    )  # fmt: skip
    out: dict[str, Any] = {"models": {"ecg": ecg_model.uri, "echo": echo_model.uri}}
    if not write:
        return out
    written = write_embedding_tables(stage=stage, lake_root=lake_root, ecg=(ecg, ecg_model),
                                     echo=(echo, echo_model), data=data, pinned=pinned)  # fmt: skip
    if fused is not None:
        written[str(tables.FUSED_EMBEDDING)] = write_embeddings(
            fused(ecg_model, echo_model), tables.FUSED_EMBEDDING, lake_root
        )
    for name, w in written.items():
        mlflow.set_tag(f"cardiolake.wrote.{name}", str(w["version"]))
    out["embeddings"] = written
    return out


def embedded(table: Table, lake_root: Path, model: LoggedModel) -> frozenset[str]:
    """Record keys a table already holds for one encoder version (a re-run skips them)."""
    pinned = latest(table, lake_root)
    if pinned is None:
        return frozenset()
    frame = read_columns(pinned, ["record_key", "model_version"]).to_pandas()
    return frozenset(frame.loc[frame["model_version"] == model.label, "record_key"])


def write_embedding_tables(
    *, stage: str, lake_root: Path, ecg: tuple[EcgEncoder, LoggedModel],
    echo: tuple[EchoEncoder, LoggedModel], data: DataSettings, pinned: PinnedTable,
) -> dict[str, Any]:  # fmt: skip
    """Write ``features.ecg_embedding`` and ``features.echo_embedding`` rows of a lake.

    Returns:
        table -> {version, inserted}.
    """
    (ecg_encoder, ecg_model), (echo_encoder, echo_model) = ecg, echo
    written: dict[str, Any] = {}
    ecg_source = ecg_at_rate(pinned, lake_root, data.ecg_fs)
    ecg_rows = to_rows(ecg_embeddings(ecg_encoder, ecg_source, data.ecg_fs,
                                      skip=embedded(tables.ECG_EMBEDDING, lake_root, ecg_model)),
                       ecg_model, stage, event_times(lake_root, tables.ECG))  # fmt: skip
    written[str(tables.ECG_EMBEDDING)] = write_embeddings(ecg_rows, tables.ECG_EMBEDDING, lake_root)
    if latest(tables.ECHO, lake_root) is not None:
        echo_rows = to_rows(echo_embeddings(echo_encoder, pinned, data,
                                            skip=embedded(tables.ECHO_EMBEDDING, lake_root,
                                                          echo_model)),
                            echo_model, stage, event_times(lake_root, tables.ECHO))  # fmt: skip
        written[str(tables.ECHO_EMBEDDING)] = write_embeddings(
            echo_rows, tables.ECHO_EMBEDDING, lake_root
        )
    return written


def embed_lake(settings: EmbedSettings, ctx: Context) -> dict[str, Any]:
    """Embed a lake's ECGs and echoes with encoders another run registered (no new model).

    The rows name the registered versions they came from, so an external cohort's lake serves
    (through Feast) exactly the embeddings the teacher was trained on. Idempotent.

    Raises:
        LookupError: no encoder run to use.
        training.lake.TrainingDataError: the lake has no ``gold.examples_pretrain``.
    """
    import mlflow

    from training.teacher import latest_teacher_run
    from training.tracking import PARENT_TAG, connect, latest_finished_run

    connect(ctx.lake_root, ctx.tracking)
    run_id = settings.encoder_run_id
    if run_id is None:
        teacher = latest_teacher_run(1.0)  # the teacher the evaluation scores with
        run_id = (mlflow.get_run(teacher).data.tags.get(PARENT_TAG) if teacher
                  else latest_finished_run("align"))  # fmt: skip
    if run_id is None:
        raise LookupError("no encoder run in the tracking store: train the encoders first")
    ecg, echo, uris = encoders_of_run(run_id)
    run = mlflow.get_run(run_id)
    data = data_settings_of(run.data.params)
    stage = run.data.tags.get(STAGE_TAG, "align")
    models = {kind: LoggedModel(*uri.removeprefix("models:/").split("/"), uri, run_id)
              for kind, uri in uris.items()}  # fmt: skip
    pinned = pin(tables.EXAMPLES_PRETRAIN, ctx.lake_root)
    written = write_embedding_tables(stage=stage, lake_root=ctx.lake_root,
                                     ecg=(ecg, models["ecg"]), echo=(echo, models["echo"]),
                                     data=data, pinned=pinned)  # fmt: skip
    logger.info("embedded %s with run %s: %s", pinned.tag, run_id, written)
    return {"encoder_run_id": run_id, "models": uris, "embeddings": written}


def data_settings_of(params: dict[str, str]) -> DataSettings:
    """The data settings a run logged (``data.ecg_fs`` ... params) rebuilt."""
    import ast
    import dataclasses

    values: dict[str, Any] = {}
    for f in dataclasses.fields(DataSettings):
        raw = params.get(f"data.{f.name}")
        if raw is None:
            continue
        try:
            values[f.name] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            values[f.name] = raw  # a plain string (the reader pool)
    return DataSettings(**values)


def encoders_of_run(run_id: str) -> tuple[EcgEncoder, EchoEncoder, dict[str, str]]:
    """The encoders a finished run registered (loaded from MLflow), and their model URIs.

    Raises:
        LookupError: the run registered no encoders.
    """
    import mlflow

    client = mlflow.MlflowClient()
    found: dict[str, Any] = {}
    uris: dict[str, str] = {}
    for kind, name in ENCODER_MODELS.items():
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if not versions:
            raise LookupError(f"run {run_id} registered no {name}: run `cardiolake train pretrain`")
        newest = max(versions, key=lambda v: int(v.version))
        uris[kind] = f"models:/{name}/{newest.version}"
        found[kind] = mlflow.pytorch.load_model(uris[kind], map_location="cpu").encoder
    return found["ecg"], found["echo"], uris
