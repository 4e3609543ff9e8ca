"""What every stage's loop shares: the process group, the MLflow run, checkpoints and resume.

A stage's loop stays visible in its own module (:mod:`training.pretrain`, :mod:`training.align`);
:class:`StageRun` only opens (or reopens) the MLflow run, restores a checkpoint, logs each
epoch and writes the next checkpoint. Under ``TorchDistributor`` every process runs the same
loop on its shard; gradients are averaged across processes (gloo on CPU) and only rank 0
talks to MLflow and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from training import checkpoint as ckpts
from training.data import Shard
from training.lake import PinnedTable
from training.settings import RunSettings, as_params
from training.tracking import (
    PARENT_TAG,
    STAGE_TAG,
    Curves,
    connect,
    experiment_id,
    lineage_tags,
    log_figure_file,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """Where a stage runs.

    Attributes:
        lake_root: the lake root.
        tracking: ``MLFLOW_TRACKING_URI`` when set (else the lake's store).
        rank: this process (0 without TorchDistributor).
        world: processes in all.
        fresh: start a new run even when an unfinished checkpoint exists.
    """

    lake_root: Path
    tracking: str | None = None
    rank: int = 0
    world: int = 1
    fresh: bool = False

    @property
    def main(self) -> bool:
        """Whether this process logs and checkpoints."""
        return self.rank == 0

    @property
    def shard(self) -> Shard:
        """This process's part of every table."""
        return Shard(self.rank, self.world)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns a torch generator for augmentations."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def process_group(ctx: Context) -> Iterator[None]:
    """Join the gloo process group when there is more than one process."""
    if ctx.world <= 1:
        yield
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=ctx.rank, world_size=ctx.world)
    try:
        yield
    finally:
        dist.barrier()
        dist.destroy_process_group()


def context_from_env(lake_root: Path, tracking: str | None, fresh: bool) -> Context:
    """The context of a process TorchDistributor started (RANK/WORLD_SIZE in its environment)."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Context(lake_root=lake_root, tracking=tracking, rank=rank, world=world, fresh=fresh)


def synced(batches: Iterable[T], ctx: Context) -> Iterator[T]:
    """Yield batches while *every* process still has one (shards differ in size)."""
    if ctx.world <= 1:
        yield from batches
        return
    import torch.distributed as dist

    it = iter(batches)
    while True:
        item = next(it, None)
        flag = torch.tensor([0 if item is None else 1])
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        if int(flag) == 0:
            return
        assert item is not None
        yield item


def average_gradients(params: Iterable[nn.Parameter], ctx: Context) -> None:
    """All-reduce and average gradients across processes (a no-op for one process).

    A parameter without a gradient on this process (a loss term another shard's data fed)
    joins with zeros, so every process makes the same sequence of collective calls.
    """
    if ctx.world <= 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= ctx.world


def reduce_mean(
    values: Mapping[str, float], ctx: Context, keys: Iterable[str] | None = None
) -> dict[str, float]:
    """Average scalar metrics across processes.

    ``keys`` names every metric any process may report (default: this process's); a metric
    is averaged over the processes that have it and left out when none has.
    """
    if ctx.world <= 1:
        return dict(values)
    import torch.distributed as dist

    names = sorted(keys if keys is not None else values)
    sums = [float(values[k]) if k in values else 0.0 for k in names]
    counts = [1.0 if k in values else 0.0 for k in names]
    t = torch.tensor(sums + counts, dtype=torch.float64)
    dist.all_reduce(t)
    total, n = t[: len(names)].tolist(), t[len(names) :].tolist()
    return {k: s / c for k, s, c in zip(names, total, n, strict=True) if c > 0}


def autocast(run: RunSettings) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast when switched on (CPU or CUDA)."""
    if not run.bf16:
        return contextlib.nullcontext()
    device = "cuda" if run.device.startswith("cuda") else "cpu"
    return torch.autocast(device_type=device, dtype=torch.bfloat16)


def cosine_lr(optimizer: torch.optim.Optimizer, base: float, progress: float) -> None:
    """Cosine decay from ``base`` to 10 % of it over the run (``progress`` in [0, 1]).

    A parameter group's ``lr_scale`` (default 1) scales its rate, e.g. pretrained encoders
    fine-tuned more gently than freshly initialised heads.
    """
    lr = base * (0.1 + 0.9 * 0.5 * (1.0 + np.cos(np.pi * min(max(progress, 0.0), 1.0))))
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


class StageRun:
    """Opens or resumes a stage's MLflow run and keeps its checkpoint.

    Args:
        ctx: where the stage runs.
        stage: ``pretrain`` or ``align`` (names the experiment and checkpoint folder).
        settings: the stage's frozen settings (logged as params; stored in checkpoints).
        pinned: the table versions the stage reads (logged as lineage tags).
        tags: more run tags (parent runs, init).
        checkpoint_name: the checkpoint folder (default: the stage's name).
    """

    def __init__(
        self,
        ctx: Context,
        *,
        stage: str,
        settings: Any,
        pinned: Mapping[str, PinnedTable],
        tags: Mapping[str, str] | None = None,
        checkpoint_name: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.stage = stage
        self.settings = settings
        self.pinned = dict(pinned)
        self.tags = dict(tags or {})
        self.folder = ckpts.checkpoint_dir(ctx.lake_root, checkpoint_name or stage)
        self.resumed: ckpts.Checkpoint | None = None if ctx.fresh else ckpts.resumable(self.folder)
        self.curves = Curves(dict(self.resumed.history) if self.resumed else {})
        self.best: float | None = self.resumed.best if self.resumed else None
        self.run_id: str | None = None

    @property
    def start_epoch(self) -> int:
        """The first epoch still to run (after a resume, the one after the checkpoint)."""
        return self.resumed.epoch if self.resumed else 0

    def restore(self, modules: Mapping[str, nn.Module | torch.optim.Optimizer]) -> None:
        """Load the checkpoint's states into the stage's models and optimisers."""
        if self.resumed is None:
            return
        for name, module in modules.items():
            module.load_state_dict(self.resumed.state[name])
        logger.info(
            "resumed %s run %s after epoch %d", self.stage, self.resumed.run_id, self.start_epoch
        )

    def __enter__(self) -> StageRun:
        if not self.ctx.main:
            return self
        import mlflow

        connect(self.ctx.lake_root, self.ctx.tracking)
        exp = experiment_id(self.stage, self.ctx.lake_root)
        if self.resumed is not None:
            run = mlflow.start_run(run_id=self.resumed.run_id)
            mlflow.set_tag("cardiolake.resumed_at_epoch", str(self.start_epoch))
        else:
            run = mlflow.start_run(experiment_id=exp)
            mlflow.log_params(as_params(self.settings))
            mlflow.set_tags(
                {STAGE_TAG: self.stage, **lineage_tags(self.pinned), **self.tags,
                 "cardiolake.processes": str(self.ctx.world)}
            )  # fmt: skip
        self.run_id = run.info.run_id
        logger.info("%s: MLflow run %s (%s)", self.stage, self.run_id, mlflow.get_tracking_uri())
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self.ctx.main:
            return
        import mlflow

        mlflow.end_run(status="FAILED" if exc_type is not None else "FINISHED")

    def end_epoch(
        self,
        epoch: int,
        metrics: Mapping[str, float],
        state: Mapping[str, nn.Module | torch.optim.Optimizer],
        *,
        best_key: str | None = None,
        higher_is_better: bool = False,
    ) -> None:
        """Log one epoch's metrics and write the checkpoint (rank 0)."""
        if not self.ctx.main:
            return
        import mlflow

        self.curves.add(metrics)
        mlflow.log_metrics(dict(metrics), step=epoch + 1)
        if best_key is not None and best_key in metrics:
            value = float(metrics[best_key])
            if self.best is None or (value > self.best if higher_is_better else value < self.best):
                self.best = value
        shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
        logger.info("%s epoch %d: %s", self.stage, epoch + 1, shown)
        assert self.run_id is not None
        ckpts.save(
            ckpts.Checkpoint(
                run_id=self.run_id,
                epoch=epoch + 1,
                state={k: v.state_dict() for k, v in state.items()},
                settings=dataclasses.asdict(self.settings),
                history=self.curves.history,
                best=self.best,
            ),
            self.folder,
        )

    def finish(self, state: Mapping[str, nn.Module | torch.optim.Optimizer]) -> None:
        """Plot the curves, log them and mark the checkpoint finished (rank 0)."""
        if not self.ctx.main:
            return
        import tempfile

        assert self.run_id is not None
        with tempfile.TemporaryDirectory() as tmp:
            if self.curves.history:
                png = self.curves.plot(Path(tmp) / f"{self.stage}_curves.png", f"{self.stage}")
                log_figure_file(png)
        ckpt = ckpts.load(self.folder)
        if (
            ckpt is None or ckpt.run_id != self.run_id
        ):  # a run of zero epochs (a random-init baseline) still leaves a record
            ckpt = ckpts.Checkpoint(
                run_id=self.run_id, epoch=0, state={k: v.state_dict() for k, v in state.items()},
                settings=dataclasses.asdict(self.settings),
            )  # fmt: skip
        ckpt.finished = True
        ckpts.save(ckpt, self.folder)


def parent_tag(run_id: str) -> dict[str, str]:
    """The tag that links a run to the run whose models it started from."""
    return {PARENT_TAG: run_id}
