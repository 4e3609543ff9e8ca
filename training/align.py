"""Stage 2: cross-modal alignment on the synchronised ECG/echo pairs of ``gold.examples_align``.

Starts from the encoders a finished stage-1 run registered in MLflow (its run becomes this
run's parent), trains :class:`training.aligner.Aligner` on the beats of the train split, reports
held-out beat -> keyframe retrieval (top-1 among 32 candidates from other patients; chance is
1/32), logs the aligned encoders and writes the three embedding tables.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch import nn

from cardiolake import tables
from training.aligner import Aligner, fuse, retrieval_top1
from training.data import beat_loader, beat_shape, iter_rows
from training.embed import event_times, log_and_embed, to_rows
from training.lake import PinnedTable, pin, read_columns
from training.runner import (
    Context,
    StageRun,
    autocast,
    average_gradients,
    cosine_lr,
    parent_tag,
    reduce_mean,
    seed_everything,
    synced,
)
from training.settings import AlignSettings
from training.tracking import LoggedModel, connect, latest_finished_run
from training.transforms import beat_rows

logger = logging.getLogger(__name__)


@torch.no_grad()
def beat_embeddings(
    model: Aligner, pinned: PinnedTable, settings: AlignSettings, *, split: str | None,
    beats: int, shard: Any = None,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """Beat and keyframe embeddings (shared space) of one split, with patient ids."""
    model.eval()
    z_e, z_v, pats = [], [], []
    kw = {"shard": shard} if shard is not None else {}
    with beat_loader(pinned, settings.data, split=split, batch_size=128, beats=beats,
                     shuffle=False, drop_last=False, **kw) as stream:  # fmt: skip
        for batch in stream:
            a, b = model.embed(batch["ecg"], batch["lead_mask"], batch["keyframes"])
            z_e.append(a.float())
            z_v.append(b.float())
            pats.append(batch["patient"])
    if not z_e:
        return {}
    return {"ecg": torch.cat(z_e), "echo": torch.cat(z_v), "patient": torch.cat(pats)}


def retrieval(model: Aligner, pinned: PinnedTable, settings: AlignSettings, split: str,
              seed: int) -> dict[str, float]:  # fmt: skip
    """Held-out retrieval metrics of one split."""
    z = beat_embeddings(model, pinned, settings, split=split, beats=settings.beats_per_pair)
    if not z:
        return {}
    gen = torch.Generator().manual_seed(seed)
    top1, n = retrieval_top1(z["ecg"], z["echo"], z["patient"],
                             candidates=settings.retrieval_candidates, gen=gen)  # fmt: skip
    return {f"{split}_retrieval_top1": top1, f"{split}_retrieval_queries": float(n),
            "retrieval_chance": 1.0 / settings.retrieval_candidates}  # fmt: skip


@torch.no_grad()
def fused_rows(
    model: Aligner, pinned: PinnedTable, settings: AlignSettings, lake_root: Any,
    ecg_model: LoggedModel,
) -> pa.Table:  # fmt: skip
    """One fused embedding per aligned pair: the mean over its beats of both embeddings."""
    model.eval()
    shape = beat_shape(settings.data, beats=0, seed=0)
    columns = ["example_key", "patient_key", "ecg_record_key", "r_peaks_s", "ed_s",
               "clip_start_s", "fs", "n_samples", *[f"lead_{x}" for x in _leads()],
               "frames", "n_frames", "size", "fps", "frame_times_s"]  # fmt: skip
    frames = []
    for frame in iter_rows(pinned, columns, batch_rows=16):
        beats = beat_rows(frame, shape)
        if beats.empty:
            continue
        a, b = model.embed(
            torch.from_numpy(np.stack(beats["ecg"].to_numpy())),
            torch.from_numpy(np.stack(beats["lead_mask"].to_numpy())),
            torch.from_numpy(np.stack(beats["keyframes"].to_numpy())),
        )
        beats["fused"] = list(fuse(a, b).numpy())
        per_pair = beats.groupby("example_key")["fused"].apply(lambda v: np.mean(np.stack(v), 0))
        meta = frame.set_index("example_key").loc[per_pair.index]
        frames.append(pd.DataFrame({
            "record_key": per_pair.index, "patient_key": meta["patient_key"].to_numpy(),
            "ecg_record_key": meta["ecg_record_key"].to_numpy(), "embedding": list(per_pair),
        }))  # fmt: skip
    pairs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {"record_key": [], "patient_key": [], "ecg_record_key": [], "embedding": []}
    )  # fmt: skip
    ecg_times = event_times(lake_root, tables.ECG)
    times = {k: ecg_times.get(e) for k, e in zip(pairs["record_key"], pairs["ecg_record_key"],
                                                  strict=True)}  # fmt: skip
    fused_model = LoggedModel(ecg_model.name, ecg_model.version, ecg_model.uri, ecg_model.run_id)
    return to_rows([pairs.drop(columns="ecg_record_key")], fused_model, "align", times)


def _leads() -> tuple[str, ...]:
    from cardiolake.domain import STANDARD_LEADS

    return STANDARD_LEADS


def train_align(settings: AlignSettings, ctx: Context) -> dict[str, Any]:
    """Run stage 2 (or resume it), log the aligned encoders and write the embedding tables.

    Args:
        settings: the stage's settings.
        ctx: lake, tracking store and process rank.

    Returns:
        ``run_id``, ``parent_run_id``, metrics (held-out retrieval included), the registered
        encoder versions and the tables written.

    Raises:
        training.lake.TrainingDataError: ``gold.examples_align`` is missing or empty.
        LookupError: no finished stage-1 run to start from.
    """
    from training.embed import encoders_of_run

    connect(ctx.lake_root, ctx.tracking)
    parent = settings.encoder_run_id or latest_finished_run("pretrain")
    if parent is None:
        raise LookupError("no finished stage-1 run: run `cardiolake train pretrain` first")
    ecg, echo, uris = encoders_of_run(parent)
    pinned = pin(tables.EXAMPLES_ALIGN, ctx.lake_root, version=settings.table_version)
    pretrain_pinned = pin(tables.EXAMPLES_PRETRAIN, ctx.lake_root)
    gen = seed_everything(settings.run.seed + 7919 * ctx.rank)
    model = Aligner(ecg, echo, settings)
    for enc in (model.ecg, model.echo):
        enc.grad_checkpointing = settings.run.grad_checkpointing
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.run.lr,
                                  weight_decay=settings.run.weight_decay)  # fmt: skip
    state: dict[str, nn.Module | torch.optim.Optimizer] = {"aligner": model, "optimizer": optimizer}
    pairs = read_columns(pinned, ["split"]).to_pandas()["split"].value_counts().to_dict()
    logger.info("align: %s pairs by split %s, encoders from run %s", pinned.rows, pairs, parent)
    stage = StageRun(
        ctx, stage="align", settings=settings,
        pinned={"examples": pinned, "pretrain": pretrain_pinned},
        tags={**parent_tag(parent), "cardiolake.init": "ssl",
              "cardiolake.start_ecg_encoder": uris["ecg"],
              "cardiolake.start_echo_encoder": uris["echo"]},
    )  # fmt: skip
    run = settings.run
    summary: dict[str, Any] = {"parent_run_id": parent}
    metrics: dict[str, float] = {}
    with stage:
        stage.restore(state)
        for epoch in range(stage.start_epoch, run.epochs):
            cosine_lr(optimizer, run.lr, epoch / max(1, run.epochs))
            model.train()
            rows: list[dict[str, float]] = []
            with beat_loader(pinned, settings.data, split="train", batch_size=run.batch_size,
                             beats=settings.beats_per_pair, shard=ctx.shard,
                             seed=run.seed * 1000 + epoch) as stream:  # fmt: skip
                for step, batch in enumerate(synced(stream, ctx)):
                    if run.max_steps_per_epoch and step >= run.max_steps_per_epoch:
                        break
                    with autocast(run):
                        out = model(batch["ecg"], batch["lead_mask"], batch["keyframes"], gen)
                    optimizer.zero_grad(set_to_none=True)
                    out.loss.backward()
                    average_gradients(model.parameters(), ctx)
                    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                    optimizer.step()
                    parts = {
                        "loss": out.loss,
                        "contrastive": out.contrastive,
                        "ecg_recon_mse": out.ecg_recon,
                        "echo_recon_mse": out.echo_recon,
                    }
                    rows.append({k: float(v.detach()) for k, v in parts.items()})
            metrics = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}
            metrics = reduce_mean(metrics, ctx)
            if ctx.main:
                metrics |= retrieval(model, pinned, settings, "validation", seed=epoch)
            stage.end_epoch(epoch, metrics, state, best_key="validation_retrieval_top1",
                            higher_is_better=True)  # fmt: skip
        if ctx.main:
            test = retrieval(model, pinned, settings, "test", seed=12345)
            metrics |= test
            if test:
                import mlflow

                mlflow.log_metrics(test)
            summary |= log_and_embed(
                stage="align", lake_root=ctx.lake_root, ecg=model.ecg, echo=model.echo,
                data=settings.data, pinned=pretrain_pinned, write=run.embed,
                fused=lambda ecg_model, _echo: fused_rows(model, pinned, settings,
                                                          ctx.lake_root, ecg_model),
            )  # fmt: skip
        stage.finish(state)
    summary |= {"run_id": stage.run_id, "metrics": metrics}
    return summary
