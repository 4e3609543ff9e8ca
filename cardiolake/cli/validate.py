"""``cardiolake validate``: run the Great Expectations gates over the lake and print the results."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cardiolake.cli.errors import require_file, require_lake, settings_from
from cardiolake.config import build_settings, resolve_lake

console = Console()


def validate(
    layer: str = typer.Option(
        None, "--layer", help="Gate only this layer (silver, gold) \\[default: every gated table]."
    ),
    lake: Path = typer.Option(
        None, "--lake", help="Lake root \\[default: $CARDIOLAKE_LAKE or ./lake]."
    ),
    config: Path = typer.Option(None, "--config", help="YAML file with a 'gates:' section."),
    master: str = typer.Option("local[2]", "--master", help="Spark master (quarantine writes)."),
    no_docs: bool = typer.Option(False, "--no-docs", help="Do not build Data Docs."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Validate and print; write neither quarantine rows nor docs."
    ),
) -> None:
    """Validate silver and gold tables; failing rows go to quarantine, docs to lake/_gx.

    Prints one row per suite and expectation with its success and unexpected count, and
    exits with status 1 when any suite fails (its batch must not be promoted).
    """
    from expectations.runner import run_gates
    from expectations.settings import GateSettings

    if layer is not None and layer not in ("silver", "gold"):
        raise typer.BadParameter(f"{layer!r} is not silver or gold", param_hint="--layer")
    lake_root = resolve_lake(lake)
    require_lake(lake_root)
    require_file(config, option="--config")
    settings = settings_from(build_settings, GateSettings, config, "gates")
    spark = None
    if not dry_run:
        from cardiolake.spark import SparkSettings, get_spark

        spark = get_spark(SparkSettings(master=master))
    try:
        report = run_gates(
            spark,
            lake_root,
            layer=layer,
            settings=settings,
            quarantine=not dry_run,
            data_docs=not (dry_run or no_docs),
        )
    except KeyError as err:
        raise typer.BadParameter(str(err.args[0]), param_hint="--layer") from None
    # one section per suite keeps the table inside an 80-column terminal
    table = Table(title=f"quality gates on {lake_root}")
    for col in ("suite / expectation", "ok", "unexpected", "rows"):
        table.add_column(
            col,
            justify="left" if col == "suite / expectation" else "right",
            no_wrap=True,  # expectation names are identifiers (quarantine reasons)
        )
    for suite in report.suites:
        verdict = "[green]pass" if suite.success else "[red]FAIL"
        table.add_row(f"[bold]{suite.suite}", verdict, "", str(suite.rows))
        for exp in suite.expectations:
            mark = "[green]pass" if exp.success else "[red]FAIL"
            table.add_row(
                f"  {exp.expectation}", mark, str(exp.unexpected_count), str(exp.element_count)
            )
        table.add_section()
    console.print(table)
    for name in report.skipped:
        console.print(f"[yellow]skipped {name}: no such table yet")
    if report.quarantined:
        console.print(f"quarantined: {report.quarantined}")
    if report.data_docs is not None:
        console.print(f"Data Docs: {report.data_docs}")
    if not report.success:
        blocked = ", ".join(str(t) for t in report.blocked())
        console.print(f"[red]gates failed on {blocked}: failing rows are not promoted to gold")
        raise typer.Exit(1)
