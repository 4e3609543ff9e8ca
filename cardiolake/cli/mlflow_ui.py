"""``cardiolake mlflow``: open the lake's MLflow store."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import typer

from cardiolake.config import resolve_lake
from cardiolake.tracking import TRACKING_ENV, mlflow_root, tracking_uri, ui_command

app = typer.Typer(
    help="The lake's MLflow store (experiments of every stage).", no_args_is_help=True
)


@app.command()
def ui(
    lake: Path = typer.Option(
        None, "--lake", help="Lake root \\[default: $CARDIOLAKE_LAKE or ./lake]."
    ),
    port: int = typer.Option(5000, "--port", help="Port of the UI."),
    print_only: bool = typer.Option(False, "--print", help="Only print the command."),
) -> None:
    """Start `mlflow ui` on the lake's tracking store (or $MLFLOW_TRACKING_URI)."""
    from cardiolake.cli.errors import UserError

    root = resolve_lake(lake)
    if os.environ.get(TRACKING_ENV) is None and not mlflow_root(root).is_dir():
        raise UserError(
            f"no MLflow store under {root}",
            "run a training stage first (`cardiolake train pretrain`), or pass --lake "
            f"or set {TRACKING_ENV}",
        )
    cmd = ui_command(root, os.environ.get(TRACKING_ENV), port)
    typer.echo(" ".join(cmd))  # plain: a command to copy must not be wrapped
    if not print_only:
        subprocess.run(cmd, check=False)


@app.command()
def uri(
    lake: Path = typer.Option(
        None, "--lake", help="Lake root \\[default: $CARDIOLAKE_LAKE or ./lake]."
    ),
) -> None:
    """Print the tracking URI training runs log to."""
    print(tracking_uri(resolve_lake(lake), os.environ.get(TRACKING_ENV)))
