"""``cardiolake lake``: look at the lake's Delta tables (versions, history) and upkeep them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cardiolake.cli.errors import UserError, require_file, require_lake, settings_from
from cardiolake.config import resolve_lake

app = typer.Typer(help="Inspect and upkeep the lake's Delta tables.", no_args_is_help=True)
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

    root = resolve_lake(lake)
    found = require_lake(root)
    ref = _lake_table(table_name, found, root)
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


@app.command()
def optimize(
    lake: Path = typer.Option(
        None, "--lake", help="Lake root \\[default: $CARDIOLAKE_LAKE or ./lake]."
    ),
    table_names: list[str] = typer.Option(
        None,
        "--table",
        help="Table as layer.name or its name (repeatable) \\[default: every table].",
    ),
    vacuum: bool = typer.Option(
        False, "--vacuum", help="Then delete files no version inside the retention needs."
    ),
    retention_hours: int = typer.Option(
        None,
        "--retention-hours",
        min=0,
        help="Vacuum keeps files every version younger than this needs \\[default: 168].",
    ),
    allow_short_retention: bool = typer.Option(
        False,
        "--allow-short-retention",
        help="Accept a retention below the table's minimum (168 h unless the table sets "
        "delta.deletedFileRetentionDuration); a running job may lose files it still needs.",
    ),
    zorder: list[str] = typer.Option(
        None, "--zorder", help="Cluster the one --table by this column (repeatable)."
    ),
    target_mb: int = typer.Option(
        None, "--target-mb", min=1, help="Target file size in MiB \\[default: 128]."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Count small files and what vacuum would delete; change nothing."
    ),
    config: Path = typer.Option(
        None, "--config", help="YAML file with 'optimize:' and 'vacuum:' sections."
    ),
) -> None:
    """Compact small files (OPTIMIZE) of every table or of --table; optionally vacuum.

    Rows and values stay the same; each compacted table gets one new OPTIMIZE version.
    With --vacuum, versions older than the retention can no longer be read (time travel).
    """
    from cardiolake import lake as lake_io
    from cardiolake.config import build_settings

    require_file(config, option="--config")
    root = resolve_lake(lake)
    found = require_lake(root)
    selected = found
    if table_names:
        selected = [_lake_table(name, found, root) for name in table_names]
    zorder_map: dict[str, tuple[str, ...]] = {}
    if zorder:
        if len(selected) != 1 or not table_names:
            raise UserError("--zorder clusters one table", "pass exactly one --table with it")
        zorder_map = {str(selected[0]): tuple(zorder)}
    target = None if target_mb is None else target_mb * 1024 * 1024
    opt = settings_from(
        build_settings, lake_io.OptimizeSettings, config, "optimize",
        target_file_bytes=target, dry_run=dry_run or None,
        zorder=zorder_map or None,
    )  # fmt: skip
    vac = settings_from(
        build_settings, lake_io.VacuumSettings, config, "vacuum",
        retention_hours=retention_hours, dry_run=dry_run or None,
        allow_short_retention=allow_short_retention or None,
    )  # fmt: skip
    if vacuum and not vac.allow_short_retention:
        from deltalake import DeltaTable

        for ref in selected:
            minimum = lake_io.retention_minimum_hours(DeltaTable(lake_io.table_uri(ref, root)))
            if vac.retention_hours < minimum:
                raise UserError(
                    f"--retention-hours {vac.retention_hours} is below the minimum of "
                    f"{minimum:g} h of {ref} (files a running reader or an uncommitted write "
                    "may still need)",
                    f"pass --retention-hours {minimum:g} or more, or --allow-short-retention",
                )
    title = f"optimize{' (dry run)' if dry_run else ''} under {root}"
    out = Table(title=title)
    out.add_column("table", no_wrap=True)
    for col in ("rows", "files", "MiB", "version"):
        out.add_column(col, justify="right", no_wrap=True)
    if vacuum:
        out.add_column("to vacuum" if dry_run else "vacuumed", justify="right", no_wrap=True)
        out.add_column("on disk", justify="right", no_wrap=True)
    for ref in selected:
        try:
            done = lake_io.optimize_table(ref, lake_root=root, settings=opt)
        except ValueError as err:  # a Z-order column the table lacks
            raise UserError(str(err), "name a column of the table with --zorder") from None
        row = [
            str(ref),
            f"{done.rows:,}",
            f"{done.files_before} ({done.small_files} small)"
            if dry_run
            else _change(str(done.files_before), str(done.files_after)),
            _change(_mib(done.bytes_before), _mib(done.bytes_after)),
            _change(str(done.version_before), str(done.version_after)),
        ]
        if vacuum:
            swept = lake_io.vacuum_table(ref, lake_root=root, settings=vac)
            row.append(str(len(swept.deleted)))
            row.append(_change(str(swept.disk_files_before), str(swept.disk_files_after)))
        out.add_row(*row)
    console.print(out)
    if dry_run:
        console.print("dry run: nothing changed (small: below the target size, to be compacted)")


def _change(before: str, after: str) -> str:
    return before if before == after else f"{before} → {after}"


def _mib(size: int) -> str:
    return f"{size / 2**20:,.2f}"


def _lake_table(name: str, found: list[Any], root: Path) -> Any:
    """The table ``name`` (layer.name or its name) among the lake's tables ``found``.

    Raises:
        UserError: no such table in the lake (the message lists the ones there are).
    """
    from cardiolake.tables import get_table

    try:
        ref = get_table(name)
    except (KeyError, ValueError):
        ref = None
    if ref is None or ref not in found:
        known = ", ".join(str(t) for t in found)
        raise UserError(f"no table {name!r} in the lake {root}", f"one of {known}")
    return ref
