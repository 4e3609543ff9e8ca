"""Stage 1: modality self-supervised pretraining on unpaired examples (no labels).

ECG: two views of each recording — different 8 s segments, a random subset of its leads,
gain and noise — pulled together by InfoNCE against the other recordings of the batch, plus
masked-segment reconstruction (0.5 s segments of view A hidden and predicted, along with the
leads dropped from it). Echo: two clips from different moments of each cine, InfoNCE, plus
masked-frame modelling (hidden frames of clip A predicted at 16 x 16).

The loop is one function, :func:`train_pretrain`; the epoch bodies below it are the two
modalities' steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cardiolake import tables
from training.cache import ecg_at_rate
from training.data import ecg_loader, echo_loader
from training.encoders import (
    EcgEncoder,
    EcgReconstruction,
    EchoEncoder,
    FrameReconstruction,
    Projection,
    count_parameters,
    frame_targets,
    info_nce,
)
from training.lake import PinnedTable, pin
from training.runner import (
    Context,
    StageRun,
    autocast,
    average_gradients,
    cosine_lr,
    reduce_mean,
    seed_everything,
    synced,
)
from training.settings import PretrainSettings

logger = logging.getLogger(__name__)

#: Seconds per masked ECG segment.
MASK_SEGMENT_S = 0.5


@dataclass
class EcgModel:
    """The ECG encoder and its two pretraining heads."""

    encoder: EcgEncoder
    projection: Projection
    reconstruction: EcgReconstruction

    def modules(self) -> dict[str, nn.Module]:
        """By name, for optimisers and checkpoints."""
        return {"ecg_encoder": self.encoder, "ecg_projection": self.projection,
                "ecg_reconstruction": self.reconstruction}  # fmt: skip


@dataclass
class EchoModel:
    """The echo encoder and its two pretraining heads."""

    encoder: EchoEncoder
    projection: Projection
    reconstruction: FrameReconstruction

    def modules(self) -> dict[str, nn.Module]:
        """By name, for optimisers and checkpoints."""
        return {"echo_encoder": self.encoder, "echo_projection": self.projection,
                "echo_reconstruction": self.reconstruction}  # fmt: skip


def build_models(settings: PretrainSettings) -> tuple[EcgModel, EchoModel]:
    """Fresh (randomly initialised) encoders and heads."""
    ecg_enc = EcgEncoder(settings.ecg)
    echo_enc = EchoEncoder(settings.echo)
    ecg = EcgModel(
        ecg_enc,
        Projection(settings.ecg.embedding_dim, settings.ecg.projection_dim),
        EcgReconstruction(ecg_enc.width),
    )
    echo = EchoModel(
        echo_enc,
        Projection(settings.echo.embedding_dim, settings.echo.projection_dim),
        FrameReconstruction(echo_enc.width, settings.echo.recon_size),
    )
    for enc in (ecg_enc, echo_enc):
        enc.grad_checkpointing = settings.run.grad_checkpointing
    return ecg, echo


def ecg_views(
    ecg: torch.Tensor,
    mask: torch.Tensor,
    *,
    samples: int,
    fs: int,
    lead_dropout: float,
    mask_fraction: float,
    gen: torch.Generator,
    gain_jitter: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One augmented view per recording.

    Returns:
        (view, its lead mask, the clean crop it came from, positions to reconstruct): the
        positions are the hidden segments of every present lead plus every dropped lead.
    """
    b, leads, t = ecg.shape
    starts = torch.randint(0, max(t - samples, 0) + 1, (b,), generator=gen)
    idx = starts[:, None] + torch.arange(samples)[None, :]
    clean = torch.gather(ecg, 2, idx[:, None, :].expand(b, leads, samples))
    gain = 1.0 + gain_jitter * (2 * torch.rand(b, 1, 1, generator=gen) - 1)
    clean = clean * gain
    # lead dropout: keep at least one present lead
    keep = (torch.rand(b, leads, generator=gen) > lead_dropout).float() * mask
    none = keep.sum(1) == 0
    if none.any():
        first = torch.argmax(mask[none], dim=1)
        keep[none, first] = 1.0
    view = clean + 0.02 * torch.randn(clean.shape, generator=gen)
    seg = max(1, int(MASK_SEGMENT_S * fs))
    n_seg = (samples + seg - 1) // seg
    hidden_seg = torch.rand(b, n_seg, generator=gen) < mask_fraction
    hidden = hidden_seg.repeat_interleave(seg, dim=1)[:, :samples]
    view = view.masked_fill(hidden[:, None, :], 0.0)
    target = (hidden[:, None, :] | (keep == 0)[:, :, None]) & (mask > 0)[:, :, None]
    return view, keep, clean, target


def ecg_step(
    model: EcgModel, batch: dict[str, torch.Tensor], settings: PretrainSettings,
    gen: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """Contrastive + masked-segment reconstruction loss of one ECG batch."""
    data = settings.data
    samples = int(data.ecg_window_s * data.ecg_fs)
    x, m = batch["ecg"], batch["lead_mask"]
    kw: dict[str, Any] = {"samples": samples, "fs": data.ecg_fs, "gen": gen,
                          "lead_dropout": settings.ecg.lead_dropout,
                          "gain_jitter": settings.gain_jitter}  # fmt: skip
    va, ma, clean, target = ecg_views(x, m, mask_fraction=settings.mask_fraction, **kw)
    vb, mb, _, _ = ecg_views(x, m, mask_fraction=0.0, **kw)
    with autocast(settings.run):
        fa = model.encoder.features(va, ma)
        fb = model.encoder.features(vb, mb)
        za = model.projection(model.encoder.embed(fa))
        zb = model.projection(model.encoder.embed(fb))
        contrastive = info_nce(za, zb, settings.temperature)
        recon = model.reconstruction(fa, samples).float()
    err = (recon - clean) ** 2
    reconstruction = (err * target).sum() / target.sum().clamp(min=1)
    loss = contrastive + settings.recon_weight * reconstruction
    with torch.no_grad():
        top1 = (za.float() @ zb.float().t()).argmax(1).eq(torch.arange(len(za))).float().mean()
    stats = {"ecg_contrastive": contrastive, "ecg_recon_mse": reconstruction, "ecg_view_top1": top1}
    return loss, {k: float(v.detach()) for k, v in stats.items()}


def jitter_clips(clips: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Brightness/contrast jitter and noise of uint8 clips -> float in [0, 1]."""
    x = clips.float() / 255.0
    b = x.shape[0]
    contrast = 0.8 + 0.4 * torch.rand(b, 1, 1, 1, generator=gen)
    bright = 0.1 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    x = (x - 0.5) * contrast + 0.5 + bright
    return (x + 0.02 * torch.randn(x.shape, generator=gen)).clamp(0.0, 1.0)


def echo_step(
    model: EchoModel, batch: dict[str, torch.Tensor], settings: PretrainSettings,
    gen: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """Clip contrastive + masked-frame modelling loss of one echo batch."""
    clips = batch["clips"]  # (B, 2, T, S, S) uint8
    a, b = jitter_clips(clips[:, 0], gen), jitter_clips(clips[:, 1], gen)
    bsz, t = a.shape[:2]
    hidden = torch.rand(bsz, t, generator=gen) < settings.mask_fraction
    a_masked = a.masked_fill(hidden[:, :, None, None], 0.0)
    with autocast(settings.run):
        fa = model.encoder.features(a_masked)
        fb = model.encoder.features(b)
        za = model.projection(model.encoder.embed(fa))
        zb = model.projection(model.encoder.embed(fb))
        contrastive = info_nce(za, zb, settings.temperature)
        recon = model.reconstruction(fa.mean(dim=(3, 4))).float()
    target = frame_targets(clips[:, 0], settings.echo.recon_size)
    err = ((recon - target) ** 2).mean(dim=(2, 3))
    reconstruction = (err * hidden).sum() / hidden.sum().clamp(min=1)
    loss = contrastive + settings.recon_weight * reconstruction
    with torch.no_grad():
        top1 = (za.float() @ zb.float().t()).argmax(1).eq(torch.arange(bsz)).float().mean()
    stats = {"echo_contrastive": contrastive, "echo_recon_mse": reconstruction,
             "echo_view_top1": top1}  # fmt: skip
    return loss, {k: float(v.detach()) for k, v in stats.items()}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def _epoch(
    kind: str, model: Any, pinned: PinnedTable, settings: PretrainSettings, ctx: Context,
    optimizer: torch.optim.Optimizer | None, gen: torch.Generator, seed: int,
    progress: tuple[int, int],
) -> dict[str, float]:  # fmt: skip
    """One pass of one modality over the train split (``optimizer``) or validation (None)."""
    run = settings.run
    training = optimizer is not None
    split = "train" if training else "validation"
    bsz = run.batch_size
    open_loader = ecg_loader if kind == "ecg" else echo_loader
    step_fn = ecg_step if kind == "ecg" else echo_step
    parts = list(model.modules().values())
    for p in parts:
        p.train(training)
    rows: list[dict[str, float]] = []
    epoch, epochs = progress
    with open_loader(pinned, settings.data, split=split, batch_size=bsz, shard=ctx.shard,
                     shuffle=training, seed=seed, drop_last=training) as stream:  # fmt: skip
        for step, batch in enumerate(synced(stream, ctx)):
            if training and run.max_steps_per_epoch and step >= run.max_steps_per_epoch:
                break
            if training:
                assert optimizer is not None
                loss, stats = step_fn(model, batch, settings, gen)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                average_gradients([p for m in parts for p in m.parameters()], ctx)
                nn.utils.clip_grad_norm_([p for m in parts for p in m.parameters()], 5.0)
                optimizer.step()
            else:
                with torch.no_grad():
                    loss, stats = step_fn(model, batch, settings, gen)
            rows.append({"loss": float(loss.detach()), **stats})
    prefix = f"{kind}_" if kind else ""
    out = {(k if k.startswith(prefix) else f"{prefix}{k}"): v for k, v in _mean(rows).items()}
    out = {(f"val_{k}" if not training else k): v for k, v in out.items()}
    return reduce_mean(out, ctx) if out else out


def train_pretrain(settings: PretrainSettings, ctx: Context) -> dict[str, Any]:
    """Run stage 1 (or resume it) and log the encoders; returns the run's summary.

    Args:
        settings: the stage's settings.
        ctx: lake, tracking store and process rank.

    Returns:
        ``run_id``, the final metrics, the registered encoder versions and the Delta
        versions read.

    Raises:
        training.lake.TrainingDataError: ``gold.examples_pretrain`` is missing or empty.
    """
    from training.embed import log_and_embed

    pinned = pin(tables.EXAMPLES_PRETRAIN, ctx.lake_root, version=settings.table_version)
    ecg_pinned = ecg_at_rate(pinned, ctx.lake_root, settings.data.ecg_fs)
    gen = seed_everything(settings.run.seed + 7919 * ctx.rank)
    ecg, echo = build_models(settings)
    models = {**ecg.modules(), **echo.modules()}
    trainable = [p for name, m in models.items() if name.split("_")[0] in settings.modalities
                 for p in m.parameters()]  # fmt: skip
    optimizer = torch.optim.AdamW(
        trainable, lr=settings.run.lr, weight_decay=settings.run.weight_decay
    )
    state: dict[str, Any] = {**models, "optimizer": optimizer}
    random_init = settings.init == "random"
    logger.info(
        "pretrain: ECG encoder %d params, echo encoder %d params, %s rows",
        count_parameters(ecg.encoder), count_parameters(echo.encoder), f"{pinned.rows:,}",
    )  # fmt: skip
    stage = StageRun(
        ctx, stage="pretrain", settings=settings, pinned={"examples": pinned},
        tags={"cardiolake.init": settings.init}, checkpoint_name=f"pretrain-{settings.init}",
    )  # fmt: skip
    summary: dict[str, Any] = {"delta": {pinned.tag: pinned.version}}
    with stage:
        stage.restore(state)
        epochs = 0 if random_init else settings.run.epochs
        metrics: dict[str, float] = {}
        for epoch in range(stage.start_epoch, epochs):
            cosine_lr(optimizer, settings.run.lr, epoch / max(1, epochs))
            seed = settings.run.seed * 1000 + epoch
            metrics = {}
            for kind, model, source in (("ecg", ecg, ecg_pinned), ("echo", echo, pinned)):
                if kind not in settings.modalities:
                    continue
                repeats = settings.ecg_repeats if kind == "ecg" else 1
                for r in range(repeats):  # the last pass's metrics are the epoch's
                    metrics |= _epoch(kind, model, source, settings, ctx, optimizer, gen,
                                      seed * 16 + r, (epoch, epochs))  # fmt: skip
                metrics |= _epoch(kind, model, source, settings, ctx, None, gen, seed,
                                  (epoch, epochs))  # fmt: skip
            stage.end_epoch(epoch, metrics, state, best_key="val_ecg_loss")
        if ctx.main:
            summary |= log_and_embed(
                stage="pretrain" if not random_init else "random",
                lake_root=ctx.lake_root, ecg=ecg.encoder, echo=echo.encoder, data=settings.data,
                pinned=pinned, write=settings.run.embed,
            )  # fmt: skip
        stage.finish(state)
    summary |= {"run_id": stage.run_id, "metrics": metrics}
    return summary


__all__ = ["build_models", "ecg_views", "train_pretrain"]
