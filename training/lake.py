"""The lake as the training environment sees it: pinned Delta versions, read/written by delta-rs.

The training environment has neither Spark 4 nor the platform's :mod:`cardiolake.lake` (whose
Spark data source needs Spark 4), so it talks to the Delta log directly: a table version is
pinned once, its Parquet files come from that version's log (never a folder glob, which would
resurrect files a later version removed), and outputs are committed in one delta-rs
transaction. ``DeltaTable.to_pyarrow_table`` is avoided: with pyarrow 14 it can abort the
interpreter at exit, so rows are read with ``pyarrow.dataset`` over the pinned file list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable, write_deltalake

from cardiolake.tables import Table

logger = logging.getLogger(__name__)


class TrainingDataError(RuntimeError):
    """A table a stage needs is missing or empty; the message says which and what to run."""


@dataclass(frozen=True)
class PinnedTable:
    """One committed version of a Delta table and exactly the files that hold its rows.

    Attributes:
        table: the table.
        uri: its location.
        version: the pinned Delta version.
        files: the version's Parquet files as ``file://`` URLs (what Petastorm opens).
        rows: rows in the version (from the log's file statistics).
    """

    table: Table
    uri: str
    version: int
    files: tuple[str, ...]
    rows: int

    @property
    def paths(self) -> list[str]:
        """The files as local paths (for ``pyarrow.dataset``)."""
        return [_local(f) for f in self.files]

    @property
    def tag(self) -> str:
        """``layer.name@version``: how runs record what they read."""
        return f"{self.table}@{self.version}"


def _local(url: str) -> str:
    parsed = urlparse(url)
    return unquote(parsed.path) if parsed.scheme == "file" else url


def pin(table: Table, lake_root: Path, *, version: int | None = None) -> PinnedTable:
    """Pin a table version and list its files from the Delta log.

    Args:
        table: the table.
        lake_root: the lake root.
        version: the version; None pins the latest.

    Returns:
        The pinned version.

    Raises:
        TrainingDataError: no Delta table there, or the version has no rows.
    """
    uri = str(table.path(lake_root))
    if not DeltaTable.is_deltatable(uri):
        raise TrainingDataError(
            f"{table} does not exist under {lake_root}: run `cardiolake ingest` first"
        )
    dt = DeltaTable(uri) if version is None else DeltaTable(uri, version=version)
    features = set(dt.protocol().reader_features or [])
    if features & {"deletionVectors", "columnMapping"}:
        raise TrainingDataError(f"{table}: reader features {sorted(features)} need native Delta")
    files = []
    for f in dt.file_uris():
        files.append(f if "://" in f else Path(f).resolve().as_uri())
    actions = pa.table(dt.get_add_actions(flatten=True))
    rows = int(sum(v or 0 for v in actions.column("num_records").to_pylist()))
    if not files or rows == 0:
        raise TrainingDataError(f"{table}@{dt.version()} has no rows: nothing to train on")
    pinned = PinnedTable(table, uri, dt.version(), tuple(sorted(files)), rows)
    logger.info("pinned %s: %d files, %d rows", pinned.tag, len(files), rows)
    return pinned


def read_columns(
    pinned: PinnedTable, columns: list[str] | None, *, filter: ds.Expression | None = None
) -> pa.Table:
    """Some columns of a pinned version (scalar columns: the whole table lands in memory)."""
    dataset = ds.dataset(pinned.paths, format="parquet")
    return dataset.to_table(columns=columns, filter=filter)


def latest(table: Table, lake_root: Path) -> PinnedTable | None:
    """The latest version pinned, or None when the table does not exist or is empty."""
    try:
        return pin(table, lake_root)
    except TrainingDataError:
        return None


def merge_rows(
    rows: pa.Table, table: Table, lake_root: Path, *, keys: tuple[str, ...]
) -> tuple[int, int]:
    """Insert the rows whose keys the table lacks, in one commit (idempotent re-runs).

    Args:
        rows: the rows (their schema becomes the table's on first write).
        table: the target table.
        lake_root: the lake root.
        keys: columns that identify a row.

    Returns:
        (committed version, rows inserted).
    """
    uri = str(table.path(lake_root))
    if not DeltaTable.is_deltatable(uri):
        Path(uri).mkdir(parents=True, exist_ok=True)
        write_deltalake(uri, rows, mode="error")
        version = DeltaTable(uri).version()
        logger.info("%s: created at version %d with %d rows", table, version, rows.num_rows)
        return version, rows.num_rows
    # delta-rs MERGE writes Arrow view types that pyarrow 14 cannot read back, so the
    # anti-join happens here (on the key columns only) and the new rows are appended
    existing = pin_any(table, lake_root)
    fresh = rows
    if existing is not None:
        have = read_columns(existing, list(keys)).to_pylist()
        seen = {tuple(r[k] for k in keys) for r in have}
        keep = [tuple(r[k] for k in keys) not in seen for r in rows.select(list(keys)).to_pylist()]
        fresh = rows.filter(pa.array(keep, pa.bool_()))
    if fresh.num_rows == 0:
        version = DeltaTable(uri).version()
        logger.info("%s: nothing new (version %d)", table, version)
        return version, 0
    write_deltalake(uri, fresh, mode="append")
    version = DeltaTable(uri).version()
    logger.info("%s: appended %d new rows -> version %d", table, fresh.num_rows, version)
    return version, fresh.num_rows


def pin_any(table: Table, lake_root: Path) -> PinnedTable | None:
    """The latest version pinned, or None when the table has no Delta log or no files."""
    uri = str(table.path(lake_root))
    if not DeltaTable.is_deltatable(uri):
        return None
    dt = DeltaTable(uri)
    files = [f if "://" in f else Path(f).resolve().as_uri() for f in dt.file_uris()]
    if not files:
        return None
    return PinnedTable(table, uri, dt.version(), tuple(sorted(files)), -1)


__all__ = [
    "PinnedTable",
    "TrainingDataError",
    "latest",
    "merge_rows",
    "pin",
    "pin_any",
    "read_columns",
]
