"""The delta-rs path: Spark computes and writes Parquet, ``deltalake`` owns the Delta log.

Writes go through the :mod:`~cardiolake.lake._source` data source; reads hand the Parquet
files of one table version (``DeltaTable.file_uris``) to ``spark.read.parquet``; merges are an
anti-join (insert new keys) or a copy-on-write rewrite of the files holding matched keys.
"""

from __future__ import annotations

import logging
import uuid
from functools import reduce
from urllib.parse import unquote, urlparse

import pyarrow as pa
from deltalake import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BinaryType, DataType

from cardiolake.lake._commit import (
    CommitMode,
    RemovedFile,
    WriteSpec,
    find_commit,
    landed_version,
)
from cardiolake.lake._errors import CommitConflictError, TableExistsError, reraise_lake_error
from cardiolake.lake._files import partition_value
from cardiolake.lake._paths import is_uri
from cardiolake.lake._schema import orderable, spark_schema
from cardiolake.lake._source import FORMAT, DeltaRsDataSource

logger = logging.getLogger(__name__)

#: Reader features whose files cannot be read as plain Parquet.
_UNSUPPORTED_READER_FEATURES = {"deletionVectors", "columnMapping"}
_ROW = "__cardiolake_row"
_FILE = "__cardiolake_file"


def write(
    df: DataFrame,
    uri: str,
    *,
    mode: CommitMode,
    partition_by: list[str],
    row_group_rows: int,
    operation: str = "WRITE",
    read_version: int | None = None,
    removes: tuple[RemovedFile, ...] = (),
    overwrite_schema: bool = False,
) -> int:
    """Run the Spark job that writes and commits; returns the committed (or current) version.

    When the job raises, the log decides: if it holds this write's commit (the commit landed,
    then something failed), the write succeeded and its version is returned; otherwise the
    error is raised (as a lake error when it wraps one).
    """
    spark = df.sparkSession
    spark.dataSource.register(DeltaRsDataSource)
    base = DeltaTable(uri).version() if DeltaTable.is_deltatable(uri) else -1
    spec = WriteSpec(
        table_uri=uri,
        mode=mode,
        write_id=uuid.uuid4().hex,
        partition_by=tuple(partition_by),
        row_group_rows=row_group_rows,
        operation=operation,
        read_version=read_version,
        removes=removes,
        overwrite_schema=overwrite_schema,
        base_version=base,
    )
    save_mode = "overwrite" if mode == "overwrite" else "append"
    try:
        df.write.format(FORMAT).mode(save_mode).options(**spec.to_options()).save()
    except Exception as exc:
        try:
            landed = landed_version(uri, spec.write_id, after=base)
        except Exception:  # the log is unreadable too: report the write's own error
            logger.warning("%s: cannot tell whether write %s landed", uri, spec.write_id)
            landed = None
        if landed is None:
            reraise_lake_error(exc)
        logger.warning(
            "%s: %s %s raised after its commit landed as version %d (%s); the write stands",
            uri, operation, mode, landed, str(exc).strip().splitlines()[0] if str(exc) else exc,
        )  # fmt: skip
    version, rows = committed_version(uri, spec.write_id, after=base)
    logger.info("%s: %s %s -> version %d (%s rows)", uri, operation, mode, version, rows)
    return version


def committed_version(uri: str, write_id: str, *, after: int | None = None) -> tuple[int, int]:
    """The version and row count the write with this id committed, else (current version, 0).

    Args:
        uri: the table's location.
        write_id: the write's id.
        after: the table's version before the write (-1: none); None scans recent history.
    """
    entry = find_commit(uri, write_id, after=after)
    if entry is None:
        return DeltaTable(uri).version(), 0
    rows = (entry.get("operationMetrics") or {}).get("numOutputRows", 0)
    return int(entry["version"]), int(rows)


def read(spark: SparkSession, uri: str, *, version: int | None) -> DataFrame:
    """The table at a version as a DataFrame over its Parquet files."""
    table = open_table(uri, version)
    schema = spark_schema(table)
    files = table.file_uris()
    if not files:
        return spark.createDataFrame([], schema)
    return _scan(spark, table, uri, files).select(*[F.col(f"`{n}`") for n in schema.fieldNames()])


def merge(
    df: DataFrame,
    uri: str,
    *,
    keys: list[str],
    update: bool,
    row_group_rows: int,
) -> int:
    """Insert rows with new keys (and, with ``update``, replace rows with known keys)."""
    source = dedupe(df, keys)
    if not DeltaTable.is_deltatable(uri):
        try:
            return write(source, uri, mode="create", partition_by=[], row_group_rows=row_group_rows)
        except TableExistsError as exc:
            # another merge created the table first: plan again as a merge into it
            raise CommitConflictError(f"{uri} was created by another writer meanwhile") from exc
    table = open_table(uri, None)
    version = table.version()
    partition_by = list(table.metadata().partition_columns)
    files = table.file_uris()
    spark = df.sparkSession
    if not files:
        return write(
            source, uri, mode="append", partition_by=partition_by, row_group_rows=row_group_rows,
            operation="MERGE", read_version=version,
        )  # fmt: skip
    existing = _scan(spark, table, uri, files)
    if not update:
        fresh = _anti_join(source, existing.select(*keys), keys)
        return write(
            fresh, uri, mode="append", partition_by=partition_by, row_group_rows=row_group_rows,
            operation="MERGE", read_version=version,
        )  # fmt: skip
    # Copy-on-write: rewrite only the files holding a matched key. The source feeds two jobs
    # (find the files, then write), so compute it once.
    source = source.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        by_path = _files_by_local_path(table, uri)
        touched = [by_path[_spark_file_key(p)] for p in _matched_files(existing, source, keys)]
        columns = spark_schema(table).fieldNames()
        out = source
        if touched:
            kept = _scan(spark, table, uri, [location for location, _ in touched])
            kept = _anti_join(kept.select(*columns), source.select(*keys), keys)
            out = kept.unionByName(source.select(*columns))
        removes = tuple(removed for _, removed in touched)
        logger.info("%s: merge rewrites %d of %d files", uri, len(removes), len(files))
        return write(
            out, uri, mode="append", partition_by=partition_by, row_group_rows=row_group_rows,
            operation="MERGE", read_version=version, removes=removes,
        )  # fmt: skip
    finally:
        source.unpersist()


def dedupe(df: DataFrame, keys: list[str]) -> DataFrame:
    """Keep one row per key: the first when ordered by the other scalar columns, then by a
    hash of the array and binary ones.

    Signal arrays and frame bytes are never compared element by element: one 64-bit hash of
    them breaks the remaining ties. Nulls are equal here, as in the null-safe match of
    :func:`merge`, so the choice is the same whatever order or partitioning the rows arrive in.
    """
    others = [f for f in df.schema.fields if f.name not in keys and orderable(f.dataType)]
    order = [F.col(f"`{f.name}`").asc_nulls_first() for f in others if not _bulky(f.dataType)]
    bulky = [F.col(f"`{f.name}`") for f in others if _bulky(f.dataType)]
    if bulky:
        order.append(F.xxhash64(*bulky).asc())
    if not order:
        return df.dropDuplicates(keys)
    window = Window.partitionBy(*[F.col(f"`{k}`") for k in keys]).orderBy(*order)
    return df.withColumn(_ROW, F.row_number().over(window)).where(F.col(_ROW) == 1).drop(_ROW)


def _bulky(data_type: DataType) -> bool:
    """Array and binary columns (signals, frames): costly to compare, so hashed to order."""
    return isinstance(data_type, ArrayType | BinaryType)


def open_table(uri: str, version: int | None) -> DeltaTable:
    """Open a table version, refusing features plain Parquet reads would get wrong."""
    table = DeltaTable(uri) if version is None else DeltaTable(uri, version=version)
    features = set(table.protocol().reader_features or [])
    unsupported = features & _UNSUPPORTED_READER_FEATURES
    if unsupported:
        raise NotImplementedError(
            f"{uri} uses Delta reader features {sorted(unsupported)}; read it with native Delta"
        )
    return table


def _scan(spark: SparkSession, table: DeltaTable, uri: str, files: list[str]) -> DataFrame:
    """A DataFrame over some of the table's files, partition columns from the folder names."""
    reader = spark.read.schema(spark_schema(table))
    if table.metadata().partition_columns:
        reader = reader.option("basePath", uri)
    return reader.parquet(*files)


def _anti_join(left: DataFrame, right: DataFrame, keys: list[str]) -> DataFrame:
    """Rows of ``left`` whose keys are not in ``right`` (nulls match nulls)."""
    renamed = right.select(*[F.col(f"`{k}`").alias(f"__k{i}") for i, k in enumerate(keys)])
    conditions: list[Column] = [
        F.col(f"`{k}`").eqNullSafe(F.col(f"__k{i}")) for i, k in enumerate(keys)
    ]
    return left.join(renamed, reduce(lambda a, b: a & b, conditions), "left_anti")


def _matched_files(existing: DataFrame, source: DataFrame, keys: list[str]) -> list[str]:
    located = existing.select(F.col("_metadata.file_path").alias(_FILE), *keys)
    renamed = source.select(*[F.col(f"`{k}`").alias(f"__k{i}") for i, k in enumerate(keys)])
    conditions = [F.col(f"`{k}`").eqNullSafe(F.col(f"__k{i}")) for i, k in enumerate(keys)]
    joined = located.join(renamed, reduce(lambda a, b: a & b, conditions), "left_semi")
    return [row[_FILE] for row in joined.select(_FILE).distinct().collect()]


def _files_by_local_path(table: DeltaTable, uri: str) -> dict[str, tuple[str, RemovedFile]]:
    """Each live file by normalized path: (its location for Spark, its remove action)."""
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    partitions = list(table.metadata().partition_columns)
    out: dict[str, tuple[str, RemovedFile]] = {}
    for action in actions:
        relative = unquote(action["path"])
        removed = RemovedFile(
            path=relative,
            size=action["size_bytes"],
            partition_values={p: partition_value(action.get(f"partition.{p}")) for p in partitions},
            num_rows=action.get("num_records"),
        )
        location = f"{uri.rstrip('/')}/{relative}"
        out[_log_file_key(uri, relative)] = (location, removed)
    return out


def _spark_file_key(location: str) -> str:
    """Spark's ``_metadata.file_path`` (a URL-encoded URI) as ``[bucket]/path``."""
    parsed = urlparse(location)
    return f"{parsed.netloc}{unquote(parsed.path)}" if parsed.scheme else location


def _log_file_key(uri: str, relative: str) -> str:
    """A file of the Delta log (table location + decoded relative path) as ``[bucket]/path``."""
    if is_uri(uri):
        parsed = urlparse(uri)
        uri = f"{parsed.netloc}{parsed.path}"
    return f"{uri.rstrip('/')}/{relative}"
