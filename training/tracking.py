"""MLflow for the training stages: the lake's store, one experiment per stage, lineage tags,
loss curves, and encoders logged as registered models with signatures.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cardiolake.tracking import EXPERIMENTS, artifact_location, tracking_uri
from training.lake import PinnedTable

logger = logging.getLogger(__name__)

#: Tag prefix of the Delta versions a run read (``delta.gold.examples_pretrain`` = ``3``).
DELTA_TAG = "delta."
STAGE_TAG = "cardiolake.stage"
PARENT_TAG = "cardiolake.parent_run"


def connect(lake_root: Path, override: str | None = None) -> str:
    """Point MLflow at the lake's store (creating its folder); returns the tracking URI."""
    import mlflow

    uri = tracking_uri(lake_root, override)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def experiment_id(stage: str, lake_root: Path) -> str:
    """The stage's experiment (created on first use; a local store's artifacts beside it)."""
    import mlflow

    name = EXPERIMENTS[stage]
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    root = artifact_location(lake_root, mlflow.get_tracking_uri())
    location = f"{root}/{name}" if root else None
    return str(mlflow.create_experiment(name, artifact_location=location))


def lineage_tags(pinned: Mapping[str, PinnedTable]) -> dict[str, str]:
    """Tags naming every Delta table version a run read."""
    return {f"{DELTA_TAG}{p.table}": str(p.version) for p in pinned.values()}


@dataclass
class Curves:
    """Per-epoch metrics kept for the loss-curve plot (and re-read on resume)."""

    history: dict[str, list[float]]

    def add(self, metrics: Mapping[str, float]) -> None:
        """Append one epoch."""
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(float(value))

    def plot(self, path: Path, title: str) -> Path:
        """Loss and metric curves, one panel per metric family, as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = sorted(self.history)
        n = max(1, len(keys))
        cols = min(3, n)
        rows = (n + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
        for ax, key in zip(axes.ravel(), keys, strict=False):
            values = self.history[key]
            ax.plot(range(1, len(values) + 1), values, marker="o", ms=3)
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        for ax in axes.ravel()[len(keys) :]:
            ax.axis("off")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def log_json(data: Any, name: str) -> None:
    """A JSON artifact of the active run."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(data, indent=2, default=str))
        mlflow.log_artifact(str(path))


def log_figure_file(path: Path) -> None:
    """A PNG (or any file) of the active run."""
    import mlflow

    mlflow.log_artifact(str(path), artifact_path="plots")


@dataclass(frozen=True)
class LoggedModel:
    """An encoder as MLflow holds it.

    Attributes:
        name: registered model name.
        version: registered version.
        uri: ``models:/name/version``.
        run_id: the run that logged it.
    """

    name: str
    version: str
    uri: str
    run_id: str

    @property
    def label(self) -> str:
        """``name/version``: the value of the embedding tables' ``model_version`` column."""
        return f"{self.name}/{self.version}"


def log_encoder(
    module: nn.Module,
    *,
    artifact: str,
    registered_name: str,
    example: np.ndarray,
    tags: Mapping[str, str],
) -> LoggedModel:
    """Log a single-input embedder with its signature and register a new version.

    Args:
        module: maps one float32 array (the example's shape, any batch) to embeddings.
        artifact: the model's name inside the run.
        registered_name: the registered model to add a version to.
        example: a small input batch (the signature and input example).
        tags: tags of the model version (stage, lineage).

    Returns:
        The registered version.
    """
    import mlflow
    from mlflow.models import infer_signature

    module = module.eval()
    with torch.no_grad():
        output = module(torch.from_numpy(example)).numpy()
    signature = infer_signature(example, output)
    info = mlflow.pytorch.log_model(
        module,
        name=artifact,
        signature=signature,
        input_example=example,
        registered_model_name=registered_name,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        serialization_format="pickle",  # our classes, any batch and length (pt2 fixes shapes)
    )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, version, key, value)
    run = mlflow.active_run()
    assert run is not None
    logged = LoggedModel(
        registered_name, version, f"models:/{registered_name}/{version}", run.info.run_id
    )
    logger.info("registered %s (run %s)", logged.uri, logged.run_id)
    return logged


#: Tags of a self-supervised encoder run (not a random-init baseline).
SSL_TAGS: Mapping[str, str] = {"cardiolake.init": "ssl"}


def latest_finished_run(stage: str, tags: Mapping[str, str] | None = None) -> str | None:
    """The newest finished run of a stage's experiment carrying ``tags``, or None.

    Args:
        stage: the experiment's stage.
        tags: tags the run must carry (default :data:`SSL_TAGS`: an encoder stage's trained
            run, not its random-init baseline); ``{}`` takes any finished run.
    """
    import mlflow

    found = mlflow.get_experiment_by_name(EXPERIMENTS[stage])
    if found is None:
        return None
    wanted = SSL_TAGS if tags is None else tags
    filters = ["attributes.status = 'FINISHED'"]
    filters += [f"tags.`{k}` = '{v}'" for k, v in wanted.items()]
    runs = mlflow.search_runs(
        [found.experiment_id],
        filter_string=" and ".join(filters),
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None
