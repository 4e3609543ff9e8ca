"""What the lake holds: tables, versions, history and files, read from the Delta logs."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypedDict

from deltalake import DeltaTable
from pyarrow import fs as pafs

from cardiolake.lake._commit import OPERATION_KEY
from cardiolake.lake._deltars import open_table
from cardiolake.lake._errors import TableNotFoundError
from cardiolake.lake._paths import LakeRoot, filesystem, root_location, table_uri
from cardiolake.tables import Table


class HistoryEntry(TypedDict):
    """One commit of a table, newest first in :func:`table_history`.

    Attributes:
        version: the version the commit created.
        timestamp: commit time (UTC).
        operation: ``CREATE TABLE``, ``WRITE``, ``MERGE``, ``CREATE OR REPLACE TABLE``, ...
        mode: the save mode (``Append``, ``Overwrite``, ``ErrorIfExists``) when recorded.
        rows_added: rows in the files the commit added, when recorded.
        rows_removed: rows in the files it removed, when recorded.
        engine: the writer (``delta-rs:py-…``, ``Apache-Spark/… Delta-Lake/…``).
    """

    version: int
    timestamp: dt.datetime
    operation: str
    mode: str | None
    rows_added: int | None
    rows_removed: int | None
    engine: str | None


def table_exists(table: Table | str, *, lake_root: LakeRoot) -> bool:
    """Whether a Delta table exists at the table's location.

    Args:
        table: the table.
        lake_root: the lake's root folder or URI.

    Returns:
        True when the location holds a Delta log.
    """
    return DeltaTable.is_deltatable(table_uri(table, lake_root))


def table_version(table: Table | str, *, lake_root: LakeRoot) -> int:
    """The latest committed version of a table.

    Args:
        table: the table.
        lake_root: the lake's root folder or URI.

    Returns:
        The version (0 after the first commit).

    Raises:
        TableNotFoundError: no table there.
    """
    return _open(table, lake_root).version()


def table_history(
    table: Table | str, *, lake_root: LakeRoot, limit: int | None = None
) -> list[HistoryEntry]:
    """The table's commits, newest first.

    ``operation`` is the logical operation: a delta-rs merge is committed as a Delta
    ``WRITE`` and recorded as ``MERGE`` by this package.

    Args:
        table: the table.
        lake_root: the lake's root folder or URI.
        limit: at most this many commits; None for all.

    Returns:
        One :class:`HistoryEntry` per commit.

    Raises:
        TableNotFoundError: no table there.

    Example:
        >>> [h["operation"] for h in table_history(tables.ECG, lake_root="lake")]
        ['MERGE', 'WRITE', 'CREATE TABLE']
    """
    return [_entry(raw) for raw in _open(table, lake_root).history(limit=limit)]


def table_files(
    table: Table | str, *, lake_root: LakeRoot, version: int | None = None
) -> list[str]:
    """The Parquet files of a table version (for readers such as Petastorm or Feast).

    Args:
        table: the table.
        lake_root: the lake's root folder or URI.
        version: the version; None for the latest.

    Returns:
        Absolute file locations.

    Raises:
        TableNotFoundError: no table there.
        NotImplementedError: the version's files alone do not hold its rows (deletion vectors).
    """
    uri = table_uri(table, lake_root)
    if not DeltaTable.is_deltatable(uri):
        raise TableNotFoundError(f"no Delta table {table} at {uri}")
    return list(open_table(uri, version).file_uris())


def list_tables(lake_root: LakeRoot) -> list[Table]:
    """Every Delta table under the lake root (``layer/name`` folders holding a Delta log).

    Args:
        lake_root: the lake's root folder or URI.

    Returns:
        The tables, sorted by layer and name; empty when the root does not exist.
    """
    fs, root = filesystem(root_location(lake_root))
    found: list[Table] = []
    for layer in _subdirs(fs, root):
        for name in _subdirs(fs, f"{root}/{layer}"):
            log = fs.get_file_info(f"{root}/{layer}/{name}/_delta_log")
            if log.type == pafs.FileType.Directory:
                try:
                    found.append(Table(layer, name))
                except ValueError:  # a folder name a Table cannot carry
                    continue
    return sorted(found)


def log_versions(lake_root: LakeRoot) -> dict[str, int]:
    """The newest commit version of every table, from a listing of the Delta logs alone.

    Cheap (one directory listing per table, no log replay), so a job can take it before and
    after each step and count the commits the step made (``"layer.name"`` -> version).
    """
    fs, root = filesystem(root_location(lake_root))
    out: dict[str, int] = {}
    for layer in _subdirs(fs, root):
        for name in _subdirs(fs, f"{root}/{layer}"):
            log = f"{root}/{layer}/{name}/_delta_log"
            if fs.get_file_info(log).type != pafs.FileType.Directory:
                continue
            commits = [
                int(i.base_name[:20])
                for i in fs.get_file_info(pafs.FileSelector(log, recursive=False))
                if i.base_name.endswith(".json") and i.base_name[:20].isdigit()
            ]
            if commits:
                out[f"{layer}.{name}"] = max(commits)
    return out


def _subdirs(fs: pafs.FileSystem, path: str) -> list[str]:
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return [i.base_name for i in infos if i.type == pafs.FileType.Directory]


def _open(table: Table | str, lake_root: LakeRoot) -> DeltaTable:
    uri = table_uri(table, lake_root)
    if not DeltaTable.is_deltatable(uri):
        raise TableNotFoundError(f"no Delta table {table} at {uri}")
    return DeltaTable(uri)


def _entry(raw: dict[str, Any]) -> HistoryEntry:
    metrics = raw.get("operationMetrics") or {}
    params = raw.get("operationParameters") or {}
    return HistoryEntry(
        version=int(raw["version"]),
        timestamp=dt.datetime.fromtimestamp(raw["timestamp"] / 1000, tz=dt.UTC),
        operation=str(raw.get(OPERATION_KEY) or raw.get("operation") or "UNKNOWN"),
        mode=params.get("mode"),
        rows_added=_first_int(metrics, "numOutputRows", "num_added_rows"),
        rows_removed=_first_int(metrics, "numRemovedRows", "num_removed_rows"),
        engine=raw.get("engineInfo"),
    )


def _first_int(metrics: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        if metrics.get(key) is not None:
            return int(metrics[key])
    return None
