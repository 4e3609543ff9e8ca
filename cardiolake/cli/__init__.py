"""The ``cardiolake`` command line: one sub-app per command group.

Errors: a user's mistake (a :class:`~cardiolake.cli.errors.UserError`, or a third-party "not
found" error :func:`~cardiolake.cli.errors.user_message` recognises) becomes one line on stderr
and exit status 2 in the root group itself (so ``CliRunner().invoke(app, ...)`` sees it too);
:func:`main` does the same for click usage errors and turns any other exception into one line
and status 1. ``-vv`` shows the traceback instead. A command raises ``UserError(problem, fix)``
rather than printing and exiting.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer
import typer.core

from cardiolake.cli.cohort import app as cohort_app
from cardiolake.cli.demo import app as demo_app
from cardiolake.cli.ecg import app as ecg_app
from cardiolake.cli.errors import FAILURE, USER_ERROR, UserError, user_message
from cardiolake.cli.evaluate import evaluate
from cardiolake.cli.features import app as features_app
from cardiolake.cli.ingest import ingest
from cardiolake.cli.lake import app as lake_app
from cardiolake.cli.lineage import lineage
from cardiolake.cli.mlflow_ui import app as mlflow_app
from cardiolake.cli.model import app as model_app
from cardiolake.cli.score import monitor, score
from cardiolake.cli.train import app as train_app
from cardiolake.cli.validate import validate
from cardiolake.logs import configure_logging


class _AnswerMistakes(typer.core.TyperGroup):
    """The root group: a user's mistake ends the command with one line and status 2."""

    def invoke(self, ctx: Any) -> Any:  # click.Context of the click typer vendors
        try:
            return super().invoke(ctx)
        except Exception as err:
            message = None if _verbosity >= 2 else user_message(err)
            if message is None:
                raise
            _echo_error(message)
            raise typer.Exit(USER_ERROR) from None


app = typer.Typer(
    cls=_AnswerMistakes,
    name="cardiolake",
    help="Lakehouse ML data platform for cardiac triage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # main() prints one line; -vv the plain traceback
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
app.command(name="lineage")(lineage)
app.add_typer(demo_app, name="demo")


@app.callback()
def _root(
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, help="More logging (-v INFO, -vv DEBUG)."
    ),
) -> None:
    """Lakehouse ML data platform for cardiac triage."""
    global _verbosity
    _verbosity = verbose
    configure_logging(verbose)


#: The -v count of the running command (set once the root options are parsed).
_verbosity = 0

__all__ = ["UserError", "app", "main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run a command, answer mistakes in one line.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Raises:
        SystemExit: always; 0 on success, 2 on a user's mistake, 1 on a failure.
    """
    global _verbosity
    _verbosity = 0
    command = typer.main.get_command(app)
    try:
        result = command.main(
            args=list(sys.argv[1:] if argv is None else argv),
            prog_name="cardiolake",
            standalone_mode=False,
        )
    except Exception as err:
        kinds = {k.__name__ for k in type(err).__mro__}  # typer vendors its own click
        if "NoArgsIsHelpError" in kinds:
            err.show()  # type: ignore[attr-defined]
            sys.exit(USER_ERROR)
        if "UsageError" in kinds:  # unknown option, bad value, missing argument
            ctx = getattr(err, "ctx", None)
            where = ctx.command_path if ctx is not None else "cardiolake"
            _fail(f"{err.format_message()} (see `{where} --help`)", USER_ERROR)  # type: ignore[attr-defined]
        if "ClickException" in kinds:
            _fail(err.format_message(), err.exit_code)  # type: ignore[attr-defined]
        if "Abort" in kinds:
            _fail("aborted", FAILURE)
        if _verbosity >= 2:
            raise
        message = user_message(err)
        if message is not None:
            _fail(message, USER_ERROR)
        first = (str(err).strip().splitlines() or [""])[0]
        _fail(
            f"{type(err).__name__}: {first} (unexpected; rerun with -vv for the traceback)",
            FAILURE,
        )
    sys.exit(result if isinstance(result, int) else 0)


def _echo_error(message: str) -> None:
    # plain echo, not rich: a long message must stay one line, never wrapped
    typer.echo(f"{typer.style('error:', fg='red', bold=True)} {message}", err=True)


def _fail(message: str, status: int) -> NoReturn:
    _echo_error(message)
    sys.exit(status)
