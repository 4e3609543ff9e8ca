"""``cardiolake train``: launch a training stage in the training environment.

Training runs in its own pinned environment (``.venv-train``: Petastorm needs pyarrow 14,
which Spark 4 and Feast left behind), like a Databricks training task on an ML-runtime
cluster. This command only finds that interpreter and runs ``python -m training STAGE`` there;
the two environments share the lake's Delta tables and the MLflow store, nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import typer
from deltalake import DeltaTable
from rich.console import Console

from cardiolake import tables
from cardiolake.cli.errors import UserError, require_file
from cardiolake.config import resolve_lake
from cardiolake.tracking import EXPERIMENTS, TRACKING_ENV, tracking_uri, ui_command

app = typer.Typer(help="Train the models (runs in the training environment).", no_args_is_help=True)
console = Console(stderr=True)

#: Environment variable naming the training environment's python.
TRAIN_PYTHON_ENV = "CARDIOLAKE_TRAIN_PYTHON"
_REPO = Path(__file__).resolve().parents[2]
#: The gold table each stage trains on (checked before the training environment starts).
_NEEDS = {
    "pretrain": (tables.EXAMPLES_PRETRAIN, "cardiolake ingest --landing DIR --lake LAKE"),
    "align": (tables.EXAMPLES_ALIGN, "cardiolake ingest --landing DIR --lake LAKE"),
    "teacher": (
        tables.TEACHER_TRAINING_SET,
        "cardiolake features apply --lake LAKE && cardiolake features training-set --lake LAKE",
    ),
    "student": (tables.TEACHER_TARGETS, "cardiolake train teacher --lake LAKE"),
    "embed": (tables.EXAMPLES_PRETRAIN, "cardiolake ingest --landing DIR --lake LAKE"),
    "evaluate": (
        tables.TEACHER_TRAINING_SET,
        "cardiolake features apply --lake LAKE && cardiolake features training-set --lake LAKE",
    ),
    "export": (tables.TEACHER_TARGETS, "cardiolake train teacher && cardiolake train student"),
}


def train_python(explicit: Path | None = None) -> Path:
    """The training interpreter: the flag, else $CARDIOLAKE_TRAIN_PYTHON, else .venv-train's.

    Raises:
        UserError: it does not exist (names the command that creates it).
    """
    candidate = explicit or Path(os.environ.get(TRAIN_PYTHON_ENV, _REPO / ".venv-train/bin/python"))
    if not candidate.exists():
        raise UserError(
            f"training environment not found at {candidate}",
            "run `make train-env` (or set CARDIOLAKE_TRAIN_PYTHON)",
        )
    return candidate


def launch(
    stage: str,
    *,
    lake: Path | None,
    config: Path | None,
    sets: list[str] | None,
    fresh: bool,
    processes: int | None,
    python: Path | None,
    summary_out: Path | None = None,
    tracking: str | None = None,
    module: str = "training",
) -> dict[str, object]:
    """Run ``python -m training STAGE`` in the training environment; returns its summary.

    ``module`` runs another package's entry point there instead (``serving`` for the export,
    which needs PyTorch).

    ``tracking`` (a tracking URI) points the stage at another MLflow store than the lake's own
    (or ``MLFLOW_TRACKING_URI``): an external cohort is evaluated with the models of the lake
    they were trained in.

    Raises:
        typer.Exit: with the subprocess's exit code when it fails.
    """
    root = resolve_lake(lake)
    require_file(config, option="--config")
    exe = train_python(python)
    needed, remedy = _NEEDS[stage]
    if not DeltaTable.is_deltatable(str(needed.path(root))):
        raise UserError(f"{needed} does not exist under {root}", f"run `{remedy}` first")
    out = summary_out or root / "_mlflow" / f"last_{stage}.json"
    cmd = [str(exe), "-m", module, stage, "--lake", str(root), "--summary-out", str(out)]
    if config is not None:
        cmd += ["--config", str(config.resolve())]
    for item in sets or []:
        cmd += ["--set", item]
    if fresh:
        cmd.append("--fresh")
    if processes is not None:
        cmd += ["--processes", str(processes)]
    console.print(f"[bold]{stage}[/]: {' '.join(cmd[1:4])} (training environment {exe})")
    env = {**os.environ, TRACKING_ENV: tracking} if tracking else None
    result = subprocess.run(cmd, stdout=subprocess.DEVNULL, env=env)
    if result.returncode != 0:
        raise typer.Exit(result.returncode)
    summary: dict[str, object] = json.loads(out.read_text())
    override = tracking or os.environ.get(TRACKING_ENV)
    if stage not in EXPERIMENTS:  # a step that writes tables but logs no run (embed)
        console.print(f"[green]{stage} done[/]")
        return summary
    console.print(
        f"[green]{stage} done[/]: run {summary.get('run_id')} in experiment "
        f"{EXPERIMENTS[stage]} at {tracking_uri(root, override)}"
    )
    console.print(f"open it with: {' '.join(ui_command(root, override))}")
    return summary


_LAKE = typer.Option(None, "--lake", help="Lake root \\[default: $CARDIOLAKE_LAKE or ./lake].")
_CONFIG = typer.Option(None, "--config", help="YAML file with a section per stage.")
_SET = typer.Option(None, "--set", help="Override one setting, e.g. run.epochs=2 (repeatable).")
_FRESH = typer.Option(False, "--fresh", help="Start a new run instead of resuming one.")
_PROC = typer.Option(None, "--processes", help="Run under TorchDistributor with N processes.")
_PY = typer.Option(None, "--python", help="The training environment's python.")


def _stage_command(stage: str, doc: str) -> None:
    """Register ``cardiolake train STAGE`` (both stages take the same options)."""

    def command(
        lake: Path = _LAKE, config: Path = _CONFIG, set_: list[str] = _SET,
        fresh: bool = _FRESH, processes: int = _PROC, python: Path = _PY,
    ) -> None:  # fmt: skip
        summary = launch(stage, lake=lake, config=config, sets=set_, fresh=fresh,
                         processes=processes, python=python)  # fmt: skip
        json.dump(summary, sys.stdout, indent=2, default=str)
        print()

    command.__doc__ = doc
    app.command(name=stage)(command)


_stage_command(
    "pretrain", "Stage 1: self-supervised ECG and echo encoders on gold.examples_pretrain."
)
_stage_command("align", "Stage 2: beat-level ECG <-> echo alignment on gold.examples_align.")
_stage_command(
    "teacher", "Stage 3a: the 12-lead + echo + labs teacher on features.teacher_training_set."
)
_stage_command("student", "Stage 3b: distil the teacher into a 1-6 limb-lead mobile-ECG student.")
