"""Table upkeep: compact small files (optionally Z-ordered) and vacuum unreferenced ones.

Every incremental write adds at least one file per Spark task, so a table fed daily piles up
small files that each cost a footer read and a listing entry. :func:`optimize_table` rewrites
the small files into files near a target size in one ``OPTIMIZE`` commit: rows and values do
not change, only the files that hold them. :func:`vacuum_table` then deletes the files no
version inside the retention period needs (and, in ``orphans`` mode, files of writes that
never committed), so time travel still reads every version younger than the retention.

On the delta-rs path (no Delta jars) both run in ``deltalake`` on the driver. Given a session
whose Delta mode is native (the same switch as for writes), they are Delta SQL ``OPTIMIZE`` and
``VACUUM`` instead.

Example:
    >>> result = optimize_table(tables.EXAMPLES_PRETRAIN, lake_root="lake")
    >>> (result.files_before, result.files_after)
    (4, 1)
    >>> vacuum_table(tables.ECG_RAW, lake_root="lake", settings=VacuumSettings())
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
from deltalake import ColumnProperties, CommitProperties, DeltaTable, WriterProperties
from pyarrow import fs as pafs
from pyspark.sql import SparkSession

from cardiolake.lake import _native
from cardiolake.lake._commit import WRITE_ID_KEY
from cardiolake.lake._deltars import open_table
from cardiolake.lake._errors import LakeError
from cardiolake.lake._files import is_raw
from cardiolake.lake._io import SCALAR_ROW_GROUP_ROWS, SIGNAL_ROW_GROUP_ROWS, _existing, _use_native
from cardiolake.lake._paths import LakeRoot, filesystem
from cardiolake.lake._retry import CommitRetry, retry_on_conflict
from cardiolake.lake._schema import holds_arrays
from cardiolake.tables import Table, get_table

logger = logging.getLogger(__name__)

#: Delta's default ``delta.deletedFileRetentionDuration``: vacuum refuses a shorter retention
#: unless told otherwise, because a concurrent reader or writer may still need the files.
DEFAULT_RETENTION_HOURS = 168
#: Commit-info key recording the Z-order columns of an ``OPTIMIZE`` this package made.
ZORDER_KEY = "cardiolake.zOrderBy"
_RETENTION_PROPERTY = "delta.deletedFileRetentionDuration"
_INTERVAL = re.compile(r"^\s*(?:interval\s+)?(\d+)\s*([a-z]+?)s?\s*$", re.IGNORECASE)
_HOURS_PER = {"week": 168.0, "day": 24.0, "hour": 1.0, "minute": 1 / 60, "second": 1 / 3600}


class RetentionTooShortError(LakeError, ValueError):
    """A vacuum retention below the table's safety minimum, without explicit permission."""


@dataclass(frozen=True)
class OptimizeSettings:
    """How :func:`optimize_table` compacts a table.

    Attributes:
        target_file_bytes: files are rewritten into files of about this size; files already
            this large are left alone. 128 MiB, a usual Delta target: large enough that
            listing and footers cost little, small enough that a copy-on-write merge (which
            rewrites every file holding a matched key) stays cheap.
        zorder: columns to Z-order (cluster) each table by, keyed ``"layer.name"``. Empty by
            default: every reader of the lake today scans whole tables or reads whole
            pinned versions (no filter reaches the files), so clustering would only cost a
            full rewrite per run. A table gains an entry when a reader starts filtering on
            a column, e.g. ``{"scoring.predictions": ("model_name",)}``.
        row_group_rows: rows per Parquet row group of the rewritten files; None keeps the
            lake's defaults (256 for tables holding signal arrays, 131,072 for scalars), the
            row-group size Petastorm readers of the table expect.
        max_concurrent_tasks: delta-rs rewrite threads; None uses every core.
        dry_run: count the small files, rewrite nothing.
    """

    target_file_bytes: int = 128 * 1024 * 1024
    zorder: Mapping[str, Sequence[str]] = field(default_factory=dict)
    row_group_rows: int | None = None
    max_concurrent_tasks: int | None = None
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.target_file_bytes < 1024:
            raise ValueError(
                f"target_file_bytes must be at least 1 KiB, got {self.target_file_bytes}"
            )
        if self.row_group_rows is not None and self.row_group_rows < 1:
            raise ValueError(f"row_group_rows must be positive, got {self.row_group_rows}")
        # YAML gives lists; keys may be bare names
        try:
            zorder = {str(get_table(t)): tuple(cols) for t, cols in dict(self.zorder).items()}
        except KeyError as err:
            raise ValueError(f"zorder: {err.args[0]}") from None
        object.__setattr__(self, "zorder", zorder)

    def zorder_for(self, table: Table | str) -> tuple[str, ...]:
        """The Z-order columns of one table (empty: plain compaction)."""
        return tuple(self.zorder.get(str(get_table(table)), ()))


@dataclass(frozen=True)
class VacuumSettings:
    """How :func:`vacuum_table` deletes files.

    Attributes:
        retention_hours: keep every file some version younger than this still needs; time
            travel to those versions keeps working.
        allow_short_retention: accept a retention below the table's minimum (Delta's
            ``deletedFileRetentionDuration``, 168 h by default). A short retention can delete
            files a running reader or a writer that has not committed yet still needs.
        orphans: also delete files no version references (left by writes that failed
            before their commit) once they are older than the retention.
        dry_run: list what would be deleted, delete nothing.
    """

    retention_hours: int = DEFAULT_RETENTION_HOURS
    allow_short_retention: bool = False
    orphans: bool = True
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.retention_hours < 0:
            raise ValueError(f"retention_hours must not be negative, got {self.retention_hours}")


@dataclass(frozen=True)
class OptimizeResult:
    """What :func:`optimize_table` did to one table.

    Attributes:
        table: ``layer.name``.
        version_before: the version compacted.
        version_after: the version after (the same when nothing needed rewriting).
        files_before: live files before.
        files_after: live files after.
        bytes_before: bytes of the live files before.
        bytes_after: bytes of the live files after.
        rows: rows of the table (unchanged by the rewrite).
        small_files: files below the target size before (the compaction candidates).
        zorder: the columns the files were clustered by (empty: none).
    """

    table: str
    version_before: int
    version_after: int
    files_before: int
    files_after: int
    bytes_before: int
    bytes_after: int
    rows: int
    small_files: int
    zorder: tuple[str, ...] = ()


@dataclass(frozen=True)
class VacuumResult:
    """What :func:`vacuum_table` deleted (or, in a dry run, would delete) from one table.

    Attributes:
        table: ``layer.name``.
        retention_hours: the retention applied.
        deleted: the deleted files, relative to the table root.
        dry_run: nothing was deleted.
        disk_files_before: data files in the table's folder before.
        disk_files_after: data files in the table's folder after.
    """

    table: str
    retention_hours: int
    deleted: tuple[str, ...]
    dry_run: bool
    disk_files_before: int
    disk_files_after: int


def optimize_table(
    table: Table | str,
    *,
    lake_root: LakeRoot,
    settings: OptimizeSettings | None = None,
    spark: SparkSession | None = None,
    retry: CommitRetry | None = None,
) -> OptimizeResult:
    """Compact a table's small files (and Z-order them when configured) in one commit.

    The rewrite keeps every row and value; only the files change, in a new version whose
    operation is ``OPTIMIZE``. Earlier versions still read their own files until a vacuum
    past the retention deletes them. A concurrent writer that commits first makes the
    compaction re-plan and retry (``retry``).

    Args:
        table: the table.
        lake_root: the lake's root folder or URI.
        settings: target size, Z-order columns, row-group size; default
            :class:`OptimizeSettings` ().
        spark: a session; with the Delta jars the native ``OPTIMIZE`` runs, else delta-rs.
        retry: attempts on a conflicting concurrent commit.

    Returns:
        Files and bytes before and after.

    Raises:
        TableNotFoundError: no table there.
        ValueError: a Z-order column the table lacks or partitions by.
        CommitConflictError: every attempt lost to a concurrent commit.

    Example:
        >>> optimize_table("bronze.ecg_raw", lake_root="lake").files_after
        1
    """
    settings = settings or OptimizeSettings()
    name = str(get_table(table))
    uri = _existing(table, lake_root)
    before = DeltaTable(uri)
    zorder = settings.zorder_for(table)
    _check_zorder(before, zorder, name)
    files_before, bytes_before, rows = _live_files(before)
    small = _small_files(before, settings.target_file_bytes)
    if not settings.dry_run:
        if spark is not None and _use_native(spark):
            _native.optimize(
                spark, uri, zorder=list(zorder), target_file_bytes=settings.target_file_bytes
            )
        else:
            retry_on_conflict(
                lambda: _optimize_deltars(uri, settings, zorder),
                retry or CommitRetry(),
                what=f"{uri}: optimize",
            )
    after = DeltaTable(uri)
    files_after, bytes_after, _ = _live_files(after)
    result = OptimizeResult(
        table=name,
        version_before=before.version(),
        version_after=after.version(),
        files_before=files_before,
        files_after=files_after,
        bytes_before=bytes_before,
        bytes_after=bytes_after,
        rows=rows,
        small_files=small,
        zorder=zorder,
    )
    logger.info(
        "%s: optimize%s: %d -> %d files, version %d -> %d",
        name, " (dry run)" if settings.dry_run else "", files_before, files_after,
        result.version_before, result.version_after,
    )  # fmt: skip
    return result


def vacuum_table(
    table: Table | str,
    *,
    lake_root: LakeRoot,
    settings: VacuumSettings | None = None,
    spark: SparkSession | None = None,
) -> VacuumResult:
    """Delete the files no table version younger than the retention needs.

    A file leaves the table when a commit removes it (an overwrite, a copy-on-write merge, an
    ``OPTIMIZE``); the retention clock starts at that commit. Versions whose files are all
    younger than the retention stay readable by time travel; older versions may not.

    Args:
        table: the table.
        lake_root: the lake's root folder or URI.
        settings: retention, orphans, dry run; default :class:`VacuumSettings` ().
        spark: a session; with the Delta jars the native ``VACUUM`` runs, else delta-rs.

    Returns:
        The deleted files.

    Raises:
        TableNotFoundError: no table there.
        RetentionTooShortError: the retention is below the table's minimum and
            ``allow_short_retention`` is off.
    """
    settings = settings or VacuumSettings()
    name = str(get_table(table))
    uri = _existing(table, lake_root)
    current = DeltaTable(uri)
    minimum = retention_minimum_hours(current)
    short = settings.retention_hours < minimum
    if short and not settings.allow_short_retention:
        raise RetentionTooShortError(
            f"{name}: a retention of {settings.retention_hours} h is below the table's minimum "
            f"of {minimum:g} h"
        )
    disk_before = data_files_on_disk(uri)
    if spark is not None and _use_native(spark):
        listed = _native.vacuum(
            spark, uri, retention_hours=settings.retention_hours, dry_run=settings.dry_run,
            check_retention=not short,
        )  # fmt: skip
        deleted = listed
    else:
        properties = CommitProperties(custom_metadata={WRITE_ID_KEY: uuid.uuid4().hex})
        listed = current.vacuum(
            retention_hours=settings.retention_hours,
            dry_run=settings.dry_run,
            enforce_retention_duration=not short,
            full=settings.orphans,
            commit_properties=properties,
        )
        # delta-rs lists every expired tombstone, also files an earlier vacuum deleted
        on_disk = set(disk_before)
        deleted = [p for p in listed if p in on_disk or unquote(p) in on_disk]
    disk_after = disk_before if settings.dry_run else data_files_on_disk(uri)
    if not settings.dry_run:  # what is gone, whatever the engine reports
        deleted = sorted(set(disk_before) - set(disk_after))
    logger.info(
        "%s: vacuum (retention %d h%s) %s %d files",
        name, settings.retention_hours, ", dry run" if settings.dry_run else "",
        "would delete" if settings.dry_run else "deleted", len(deleted),
    )  # fmt: skip
    return VacuumResult(
        table=name,
        retention_hours=settings.retention_hours,
        deleted=tuple(sorted(deleted)),
        dry_run=settings.dry_run,
        disk_files_before=len(disk_before),
        disk_files_after=len(disk_after),
    )


def retention_minimum_hours(table: DeltaTable) -> float:
    """The table's vacuum safety minimum: ``delta.deletedFileRetentionDuration``, else 168 h."""
    value = table.metadata().configuration.get(_RETENTION_PROPERTY)
    if value is None:
        return float(DEFAULT_RETENTION_HOURS)
    match = _INTERVAL.match(value)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _HOURS_PER:
        logger.warning(
            "%s: cannot parse %s=%r; using 168 h", table.table_uri, _RETENTION_PROPERTY, value
        )
        return float(DEFAULT_RETENTION_HOURS)
    return int(match.group(1)) * _HOURS_PER[unit]


def data_files_on_disk(uri: str) -> list[str]:
    """The data files in a table's folder (referenced or not), relative to the table root.

    Folders starting with ``_`` or ``.`` (the Delta log among them) are not data, as for
    vacuum.
    """
    fs, root = filesystem(uri)
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    out = []
    for info in fs.get_file_info(selector):
        if info.type != pafs.FileType.File:
            continue
        relative = info.path[len(root) :].lstrip("/")
        if any(part.startswith(("_", ".")) for part in relative.split("/")):
            continue
        out.append(relative)
    return sorted(out)


def _optimize_deltars(uri: str, settings: OptimizeSettings, zorder: tuple[str, ...]) -> None:
    """One compaction attempt on the table's latest version."""
    table = open_table(uri, None)
    schema = pa.schema(table.schema().to_arrow())
    rows = settings.row_group_rows or (
        SIGNAL_ROW_GROUP_ROWS if holds_arrays(schema) else SCALAR_ROW_GROUP_ROWS
    )
    writer = _writer_properties(schema, rows)
    custom: dict[str, Any] = {WRITE_ID_KEY: uuid.uuid4().hex}
    common: dict[str, Any] = {
        "target_size": settings.target_file_bytes,
        "max_concurrent_tasks": settings.max_concurrent_tasks,
        "writer_properties": writer,
    }
    if not zorder:
        table.optimize.compact(commit_properties=CommitProperties(custom_metadata=custom), **common)
        return
    # A Z-order rewrites every file each time; skip it when the table has not changed since
    # the last one by the same columns.
    marker = json.dumps(list(zorder))
    latest = table.history(limit=1)
    if latest and latest[0].get(ZORDER_KEY) == marker:
        logger.info("%s: already Z-ordered by %s; nothing to do", uri, list(zorder))
        return
    custom[ZORDER_KEY] = marker
    table.optimize.z_order(
        list(zorder), commit_properties=CommitProperties(custom_metadata=custom), **common
    )


def _writer_properties(schema: pa.Schema, row_group_rows: int) -> WriterProperties:
    """Parquet settings of the rewritten files: those of the lake's own writer.

    Snappy (delta-rs would pick zstd; snappy is cheaper to decode); dictionaries and column
    statistics on scalar columns only: on signal arrays, blobs and floats they cost space
    (delta-rs's defaults make compacted signal tables about 15 % larger) and help no reader.
    The Delta log's statistics do not depend on these; delta-rs computes them from the data.
    """
    plain = ColumnProperties(dictionary_enabled=False, statistics_enabled="NONE")
    indexed = ColumnProperties(dictionary_enabled=True, statistics_enabled="CHUNK")
    scalars = {
        f.name: indexed for f in schema if not pa.types.is_nested(f.type) and not is_raw(f.type)
    }
    return WriterProperties(
        max_row_group_size=row_group_rows,
        compression="SNAPPY",
        default_column_properties=plain,
        column_properties=scalars,
    )


def _check_zorder(table: DeltaTable, zorder: tuple[str, ...], name: str) -> None:
    columns = {f.name for f in table.schema().fields}
    partitions = set(table.metadata().partition_columns)
    unknown = [c for c in zorder if c not in columns]
    if unknown:
        raise ValueError(
            f"{name} has no column {unknown} to Z-order by; columns: {sorted(columns)}"
        )
    partitioned = [c for c in zorder if c in partitions]
    if partitioned:
        raise ValueError(f"{name} is partitioned by {partitioned}; Z-order by other columns")


def _live_files(table: DeltaTable) -> tuple[int, int, int]:
    """Files, bytes and rows of a table version, from its log."""
    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return 0, 0, 0
    sizes = actions.column("size_bytes").to_pylist()
    records = actions.column("num_records").to_pylist()
    rows = sum(r for r in records if r is not None)
    if None in records:  # a file without statistics: count its rows from the files
        rows = table.to_pyarrow_dataset().count_rows()
    return actions.num_rows, int(sum(sizes)), int(rows)


def _small_files(table: DeltaTable, target: int) -> int:
    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return 0
    return sum(1 for size in actions.column("size_bytes").to_pylist() if size < target)
