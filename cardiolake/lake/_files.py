"""Task side of a delta-rs write: Arrow batches → Parquet files in the table folder.

A task writes one file per partition value (one file in all for unpartitioned tables) and
returns a :class:`WrittenFile` for each; nothing is visible to readers until the driver commits
them to the Delta log. Row groups hold exactly ``row_group_rows`` rows (the last one fewer), so
readers such as Petastorm see the same row-group size whatever batches Spark hands over.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs as pafs

#: Directory name Hive and Spark use for a null partition value.
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
#: String statistics longer than this are left out of the Delta log (they would bloat it).
MAX_STRING_STAT = 64
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass
class WrittenFile:
    """One Parquet file a task wrote, as the Delta log's add action needs it.

    Attributes:
        path: path relative to the table root, not URL-encoded.
        size: bytes.
        partition_values: Delta partition values (strings; None for null).
        modification_time: milliseconds since the epoch.
        num_rows: rows in the file.
        stats: Delta statistics JSON (numRecords, nullCount, minValues, maxValues).
    """

    path: str
    size: int
    partition_values: dict[str, str | None]
    modification_time: int
    num_rows: int
    stats: str


@dataclass(frozen=True)
class FileLayout:
    """How a task names and shapes its files.

    Attributes:
        fs: filesystem holding the table.
        root: the table root inside ``fs``.
        schema: the full table schema (partition columns included).
        partition_by: partition columns, in directory order.
        row_group_rows: rows per Parquet row group.
        compression: Parquet codec.
        prefix: file-name prefix unique to the task attempt.
    """

    fs: pafs.FileSystem
    root: str
    schema: pa.Schema
    partition_by: tuple[str, ...]
    row_group_rows: int
    compression: str
    prefix: str

    @property
    def file_schema(self) -> pa.Schema:
        """The schema inside the files: partition columns live in directory names instead."""
        return pa.schema([f for f in self.schema if f.name not in self.partition_by])


class ParquetSink:
    """Writes a task's batches to Parquet files, split by partition value.

    Args:
        layout: naming and shape of the files.

    Example:
        >>> sink = ParquetSink(layout)
        >>> for batch in batches:
        ...     sink.write(batch)
        >>> files = sink.close()
    """

    def __init__(self, layout: FileLayout) -> None:
        self._layout = layout
        self._open: dict[tuple[Any, ...], _OpenFile] = {}
        self._paths: list[str] = []

    def write(self, batch: pa.RecordBatch) -> None:
        """Add one batch (columns in the table schema's order)."""
        if batch.num_rows == 0:
            return
        table = pa.Table.from_batches([batch]).cast(self._layout.schema)
        keys = self._layout.partition_by
        if not keys:
            self._file(()).add(table)
            return
        combos = table.select(list(keys)).group_by(list(keys)).aggregate([]).to_pylist()
        for combo in combos:
            values = tuple(combo[k] for k in keys)
            mask = _match(table, keys, values)
            self._file(values).add(table.filter(mask).drop_columns(list(keys)))

    def close(self) -> list[WrittenFile]:
        """Flush and close every file; returns what the commit needs."""
        return [f.close() for f in self._open.values()]

    def discard(self) -> None:
        """Close and delete everything written so far (the task failed)."""
        for f in self._open.values():
            f.abandon()
        delete_files(self._layout.fs, self._paths)

    def _file(self, values: tuple[Any, ...]) -> _OpenFile:
        if values not in self._open:
            layout = self._layout
            partition = {
                k: partition_value(v) for k, v in zip(layout.partition_by, values, strict=True)
            }
            dirs = "".join(f"{k}={_escape(v)}/" for k, v in partition.items())
            index = len(self._open)
            rel = f"{dirs}{layout.prefix}-c{index:03d}.{layout.compression}.parquet"
            full = f"{layout.root}/{rel}"
            self._paths.append(full)
            self._open[values] = _OpenFile(layout, rel, full, partition)
        return self._open[values]


@dataclass
class _OpenFile:
    """One file being written, with its row-group buffer and running statistics."""

    layout: FileLayout
    rel: str
    full: str
    partition: dict[str, str | None]
    pending: list[pa.Table] = field(default_factory=list)
    pending_rows: int = 0
    rows: int = 0
    writer: pq.ParquetWriter | None = None
    stats: _Stats | None = None

    def add(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = _open_writer(self.layout, self.full)
            self.stats = _Stats(self.layout.file_schema)
        assert self.stats is not None
        self.stats.update(table)
        self.rows += table.num_rows
        self.pending.append(table)
        self.pending_rows += table.num_rows
        size = self.layout.row_group_rows
        if self.pending_rows >= size:
            merged = pa.concat_tables(self.pending)
            full = (self.pending_rows // size) * size
            self.writer.write_table(merged.slice(0, full), row_group_size=size)
            rest = merged.slice(full)
            self.pending = [rest] if rest.num_rows else []
            self.pending_rows = rest.num_rows

    def close(self) -> WrittenFile:
        assert self.writer is not None and self.stats is not None
        if self.pending_rows:
            rest = pa.concat_tables(self.pending)
            self.writer.write_table(rest, row_group_size=self.layout.row_group_rows)
        self.writer.close()
        info = self.layout.fs.get_file_info(self.full)
        mtime = info.mtime_ns // 1_000_000 if info.mtime_ns is not None else 0
        return WrittenFile(
            path=self.rel,
            size=int(info.size),
            partition_values=self.partition,
            modification_time=int(mtime),
            num_rows=self.rows,
            stats=self.stats.to_json(self.rows),
        )

    def abandon(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # the file is deleted next; a broken footer does not matter
                pass


class _Stats:
    """Running Delta statistics of one file: null counts, and min/max where they are exact."""

    def __init__(self, schema: pa.Schema) -> None:
        self.nulls: dict[str, int] = {f.name: 0 for f in schema if not pa.types.is_nested(f.type)}
        self.bounds: dict[str, list[Any]] = {f.name: [] for f in schema if _has_bounds(f.type)}

    def update(self, table: pa.Table) -> None:
        for name in self.nulls:
            self.nulls[name] += table.column(name).null_count
        for name, seen in self.bounds.items():
            lo_hi = pc.min_max(table.column(name)).as_py()
            if lo_hi["min"] is not None:
                seen.extend((lo_hi["min"], lo_hi["max"]))
                seen[:] = [min(seen), max(seen)]

    def to_json(self, num_rows: int) -> str:
        low: dict[str, Any] = {}
        high: dict[str, Any] = {}
        for name, seen in self.bounds.items():
            if not seen:
                continue
            lo, hi = seen
            if isinstance(lo, str) and max(len(lo), len(hi)) > MAX_STRING_STAT:
                continue
            low[name], high[name] = _json_value(lo), _json_value(hi)
        stats = {
            "numRecords": num_rows,
            "minValues": low,
            "maxValues": high,
            "nullCount": self.nulls,
        }
        return json.dumps(stats, separators=(",", ":"))


def delete_files(fs: pafs.FileSystem, paths: list[str]) -> None:
    """Delete files, ignoring ones already gone."""
    for path in paths:
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            pass


def task_prefix(partition_id: int, write_id: str, attempt: int) -> str:
    """A file-name prefix unique to one attempt of one task of one write."""
    return f"part-{partition_id:05d}-{write_id}-a{attempt}-{uuid.uuid4().hex[:8]}"


def _open_writer(layout: FileLayout, path: str) -> pq.ParquetWriter:
    schema = layout.file_schema
    # Dictionary encoding and column statistics only pay off on scalar columns; on signal
    # arrays they cost time and the dictionary is abandoned anyway.
    scalar = [f.name for f in schema if not pa.types.is_nested(f.type) and not is_raw(f.type)]
    parent = path.rsplit("/", 1)[0]
    layout.fs.create_dir(parent, recursive=True)
    return pq.ParquetWriter(
        path,
        schema,
        filesystem=layout.fs,
        compression=layout.compression,
        use_dictionary=scalar,
        write_statistics=scalar,
    )


def _match(table: pa.Table, keys: tuple[str, ...], values: tuple[Any, ...]) -> pa.Array:
    mask = None
    for key, value in zip(keys, values, strict=True):
        column = table.column(key)
        hit = pc.is_null(column) if value is None else pc.fill_null(pc.equal(column, value), False)
        mask = hit if mask is None else pc.and_(mask, hit)
    return mask


def partition_value(value: Any) -> str | None:
    """Delta's string form of a partition value (empty strings are null, as in Spark)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _escape(value: str | None) -> str:
    """Hive-style directory escaping: ``%XX`` for every byte outside ``[A-Za-z0-9._-]``."""
    if value is None:
        return NULL_PARTITION
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in value)


def _has_bounds(t: pa.DataType) -> bool:
    # Floats are left out (NaN ordering differs between engines) and timestamps too (the
    # log keeps milliseconds, so a truncated max would wrongly skip files).
    return bool(pa.types.is_integer(t) or pa.types.is_date32(t) or pa.types.is_string(t))


def is_raw(t: pa.DataType) -> bool:
    """Whether a column holds raw payload (blobs, floats): no dictionary, no statistics."""
    return bool(pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_floating(t))


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value
