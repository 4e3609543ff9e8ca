"""Stage 2: cross-modal alignment on the synchronised ECG/echo pairs of ``gold.examples_align``.

Starts from the encoders a finished stage-1 run registered in MLflow (its run becomes this
run's parent), trains :class:`training.aligner.Aligner` on the beats of the train split, reports
held-out beat -> keyframe retrieval (top-1 among 32 candidates from other patients; chance is
1/32), logs the aligned encoders and writes the three embedding tables.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch import nn

from cardiolake import tables
from training import checkpoint as ckpts
from training.aligner import Aligner, fuse, retrieval_top1
from training.cache import ecg_at_rate
from training.data import beat_loader, beat_shape, ecg_loader, iter_rows
from training.embed import event_times, log_and_embed, to_rows
from training.encoders import EcgEncoder, EcgReconstruction, Projection
from training.lake import PinnedTable, pin, read_columns
from training.pretrain import EcgModel, ecg_step
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
from training.settings import AlignSettings, PretrainSettings
from training.tracking import LoggedModel, connect, latest_finished_run
from training.transforms import beat_rows

logger = logging.getLogger(__name__)

#: What :func:`training.pretrain.ecg_step` reports (prefixed ``rehearsal_`` here).
REHEARSAL_METRICS = ("ecg_contrastive", "ecg_recon_mse", "ecg_view_top1")


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


def rehearsal_model(ecg: EcgEncoder, lake_root: Path, parent: str) -> EcgModel:
    """The ECG encoder with stage 1's projection and reconstruction heads.

    The heads come from the stage-1 run's checkpoint when it is still in the lake (so the
    objective continues where it stopped); otherwise they start fresh.
    """
    model = EcgModel(ecg, Projection(ecg.cfg.embedding_dim, ecg.cfg.projection_dim),
                     EcgReconstruction(ecg.width))  # fmt: skip
    ckpt = ckpts.load(ckpts.checkpoint_dir(lake_root, "pretrain-ssl"))
    if ckpt is not None and ckpt.run_id == parent:
        model.projection.load_state_dict(ckpt.state["ecg_projection"])
        model.reconstruction.load_state_dict(ckpt.state["ecg_reconstruction"])
    else:
        logger.info("align: stage-1 heads of run %s not in the lake; rehearsal heads start fresh",
                    parent)  # fmt: skip
    return model


def rehearsal_batches(
    pinned: PinnedTable, settings: AlignSettings, ctx: Context, seed: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Whole-recording ECG batches of the train split, round after round (never runs dry)."""
    for round_ in range(1_000_000):
        got = False
        with ecg_loader(pinned, settings.data, split="train", batch_size=settings.run.batch_size,
                        shard=ctx.shard, seed=seed + round_) as stream:  # fmt: skip
            for batch in stream:
                got = True
                yield batch
        if not got:
            return


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
    rehearse = settings.rehearsal_weight > 0
    recall = rehearsal_model(model.ecg, ctx.lake_root, parent) if rehearse else None
    recall_settings = PretrainSettings(run=settings.run, data=settings.data, ecg=model.ecg.cfg)
    encoders = [*model.ecg.parameters(), *model.echo.parameters()]
    mine = {id(p) for p in encoders}
    heads = [p for p in model.parameters() if id(p) not in mine]
    if recall is not None:
        heads += [*recall.projection.parameters(), *recall.reconstruction.parameters()]
    optimizer = torch.optim.AdamW(
        [{"params": encoders, "lr_scale": settings.encoder_lr_scale},
         {"params": heads, "lr_scale": 1.0}],
        lr=settings.run.lr, weight_decay=settings.run.weight_decay,
    )  # fmt: skip
    trainable = encoders + heads
    state: dict[str, nn.Module | torch.optim.Optimizer] = {"aligner": model, "optimizer": optimizer}
    if recall is not None:
        state |= {"ecg_projection": recall.projection,
                  "ecg_reconstruction": recall.reconstruction}  # fmt: skip
    ecg_pinned = ecg_at_rate(pretrain_pinned, ctx.lake_root, settings.data.ecg_fs)
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
            if recall is not None:
                recall.projection.train()
                recall.reconstruction.train()
            rows: list[dict[str, float]] = []
            seed = run.seed * 1000 + epoch
            with contextlib.ExitStack() as stack:
                stream = stack.enter_context(
                    beat_loader(pinned, settings.data, split="train", batch_size=run.batch_size,
                                beats=settings.beats_per_pair, shard=ctx.shard, seed=seed)
                )  # fmt: skip
                recordings = (stack.enter_context(contextlib.closing(
                    rehearsal_batches(ecg_pinned, settings, ctx, seed * 16)))
                    if recall is not None else None)  # fmt: skip
                for step, batch in enumerate(synced(stream, ctx)):
                    if run.max_steps_per_epoch and step >= run.max_steps_per_epoch:
                        break
                    with autocast(run):
                        out = model(batch["ecg"], batch["lead_mask"], batch["keyframes"], gen)
                    loss = out.loss
                    parts = {"contrastive": out.contrastive, "ecg_recon_mse": out.ecg_recon,
                             "echo_recon_mse": out.echo_recon}  # fmt: skip
                    whole = next(recordings, None) if recordings is not None else None
                    if whole is not None and recall is not None:
                        recall_loss, recall_stats = ecg_step(recall, whole, recall_settings, gen)
                        loss = loss + settings.rehearsal_weight * recall_loss
                        parts |= {f"rehearsal_{k}": torch.tensor(v)
                                  for k, v in recall_stats.items()}  # fmt: skip
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    average_gradients(trainable, ctx)
                    nn.utils.clip_grad_norm_(trainable, 5.0)
                    optimizer.step()
                    rows.append({"loss": float(loss.detach()),
                                 **{k: float(v.detach()) for k, v in parts.items()}})  # fmt: skip
            keys = sorted({k for r in rows for k in r})
            metrics = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
            known = ["loss", "contrastive", "ecg_recon_mse", "echo_recon_mse"]
            if recall is not None:
                known += [f"rehearsal_{k}" for k in REHEARSAL_METRICS]
            metrics = reduce_mean(metrics, ctx, keys=known)
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
