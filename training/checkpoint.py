"""Checkpoints that let a killed run resume into the same MLflow run.

A checkpoint is a dict in the nanoGPT manner: model and optimiser states, the settings, the
epochs completed, the metric history and the MLflow run id. It is written after every epoch
to a temporary file and renamed, so a kill mid-write leaves the previous checkpoint intact.
A finished run marks its checkpoint finished; the next invocation then starts a new run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

_LAST = "last.pt"


@dataclass
class Checkpoint:
    """What a stage needs to carry on.

    Attributes:
        run_id: the MLflow run the epochs were logged to.
        epoch: epochs completed.
        state: ``state_dict`` of every model and optimiser, by name.
        settings: the stage settings as a plain dict (a resumed run keeps its settings).
        history: per-epoch metrics.
        best: the best validation metric so far.
        finished: the run ended (its models are logged).
    """

    run_id: str
    epoch: int
    state: dict[str, Any]
    settings: dict[str, Any]
    history: dict[str, list[float]] = field(default_factory=dict)
    best: float | None = None
    finished: bool = False


def checkpoint_dir(lake_root: Path, stage: str) -> Path:
    """Where a stage keeps its checkpoint: ``<lake>/_checkpoints/<stage>``."""
    return Path(lake_root).resolve() / "_checkpoints" / stage


def save(ckpt: Checkpoint, folder: Path) -> Path:
    """Write the checkpoint atomically (temp file, then rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / _LAST
    tmp = folder / f".{_LAST}.{os.getpid()}.tmp"
    torch.save(ckpt.__dict__, tmp)
    os.replace(tmp, path)
    logger.info("checkpoint: epoch %d of run %s -> %s", ckpt.epoch, ckpt.run_id, path)
    return path


def load(folder: Path) -> Checkpoint | None:
    """The last checkpoint in a folder, or None."""
    path = folder / _LAST
    if not path.exists():
        return None
    data = torch.load(path, map_location="cpu", weights_only=False)
    return Checkpoint(**data)


def resumable(folder: Path) -> Checkpoint | None:
    """The checkpoint of an unfinished run, or None (none, or the last run finished)."""
    ckpt = load(folder)
    if ckpt is None or ckpt.finished:
        return None
    return ckpt
