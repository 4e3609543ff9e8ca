"""The ``cardiolake`` command line: one sub-app per command group."""

from __future__ import annotations

import typer

from cardiolake.cli.cohort import app as cohort_app
from cardiolake.cli.ecg import app as ecg_app
from cardiolake.cli.evaluate import evaluate
from cardiolake.cli.features import app as features_app
from cardiolake.cli.ingest import ingest
from cardiolake.cli.lake import app as lake_app
from cardiolake.cli.mlflow_ui import app as mlflow_app
from cardiolake.cli.model import app as model_app
from cardiolake.cli.score import monitor, score
from cardiolake.cli.train import app as train_app
from cardiolake.cli.validate import validate
from cardiolake.logs import configure_logging

app = typer.Typer(
    name="cardiolake",
    help="Lakehouse ML data platform for cardiac triage.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(cohort_app, name="cohort")
app.add_typer(ecg_app, name="ecg")
app.add_typer(lake_app, name="lake")
app.command(name="ingest")(ingest)
app.command(name="validate")(validate)
app.add_typer(features_app, name="features")
app.add_typer(train_app, name="train")
app.command(name="evaluate")(evaluate)
app.add_typer(mlflow_app, name="mlflow")
app.add_typer(model_app, name="model")
app.command(name="score")(score)
app.command(name="monitor")(monitor)


@app.callback()
def _root(
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, help="More logging (-v INFO, -vv DEBUG)."
    ),
) -> None:
    """Lakehouse ML data platform for cardiac triage."""
    configure_logging(verbose)


def main() -> None:
    """Console-script entry point."""
    app()
