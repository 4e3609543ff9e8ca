"""``cardiolake lake``: look at the lake's Delta tables (names, versions, history)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cardiolake.cli.errors import UserError, require_lake
from cardiolake.config import resolve_lake

app = typer.Typer(help="Inspect the lake's Delta tables.", no_args_is_help=True)
console = Console()


@app.command("tables")
def list_tables(
    lake: Path = typer.Option(
        None, "--lake", help="Lake root \\[default: $CARDIOLAKE_LAKE or ./lake]."
    ),
) -> None:
    """List every table with its current version and row count."""
    from deltalake import DeltaTable

    root = resolve_lake(lake)
    table = Table(title=f"tables under {root}")
    for col in ("table", "version", "rows", "files"):
        table.add_column(col, justify="right" if col != "table" else "left")
    for t in require_lake(root):
        dt = DeltaTable(str(t.path(root)))
        rows = dt.to_pyarrow_dataset().count_rows()
        table.add_row(str(t), str(dt.version()), f"{rows:,}", str(len(dt.file_uris())))
    console.print(table)


@app.command()
def history(
    table_name: str = typer.Argument(..., help="Table as layer.name (bronze.ecg_raw) or its name."),
    lake: Path = typer.Option(
        None, "--lake", help="Lake root \\[default: $CARDIOLAKE_LAKE or ./lake]."
    ),
    limit: int = typer.Option(20, "--limit", help="Newest versions to show."),
) -> None:
    """Versions of a table: time, operation, rows added and removed."""
    from cardiolake import lake as lake_io
    from cardiolake.tables import get_table

    root = resolve_lake(lake)
    found = require_lake(root)
    try:
        ref = get_table(table_name)
    except (KeyError, ValueError):
        ref = None
    if ref is None or ref not in found:
        known = ", ".join(str(t) for t in found)
        raise UserError(f"no table {table_name!r} in the lake {root}", f"one of {known}")
    if limit < 1:
        raise typer.BadParameter(f"{limit} is not a positive number", param_hint="--limit")
    table = Table(title=f"history of {table_name}")
    for col in ("version", "timestamp", "operation", "rows added", "rows removed"):
        table.add_column(col)
    for entry in lake_io.table_history(ref, lake_root=root, limit=limit):
        table.add_row(
            str(entry["version"]),
            str(entry["timestamp"]),
            str(entry["operation"]),
            str(entry.get("rows_added", "")),
            str(entry.get("rows_removed", "")),
        )
    console.print(table)
