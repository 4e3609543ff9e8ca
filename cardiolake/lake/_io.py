"""Writers and readers of named Delta tables; they pick the native or the delta-rs path."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal, get_args

import pyarrow as pa
from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from cardiolake.lake import _deltars, _native
from cardiolake.lake._errors import (
    CommitConflictError,
    SchemaMismatchError,
    TableExistsError,
    TableNotFoundError,
)
from cardiolake.lake._paths import LakeRoot, table_uri
from cardiolake.lake._retry import CommitRetry, retry_on_conflict
from cardiolake.lake._schema import (
    arrow_schema,
    check_columns,
    delta_schema,
    holds_arrays,
    schema_difference,
)
from cardiolake.spark import DELTA_MODE_CONF, delta_native_available
from cardiolake.tables import Table

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

WriteMode = Literal["append", "overwrite", "error", "ignore"]
MatchedAction = Literal["update", "ignore"]

#: Rows per Parquet row group for tables holding signal arrays (list or binary columns).
SIGNAL_ROW_GROUP_ROWS = 256
#: Rows per Parquet row group for tables of scalars.
SCALAR_ROW_GROUP_ROWS = 131_072


def write_table(
    df: DataFrame | pa.Table | pd.DataFrame,
    table: Table | str,
    *,
    lake_root: LakeRoot,
    mode: WriteMode = "append",
    partition_by: list[str] | None = None,
    spark: SparkSession | None = None,
    row_group_rows: int | None = None,
    overwrite_schema: bool = False,
) -> int:
    """Write a DataFrame to a named Delta table in one transaction.

    Args:
        df: the rows; a Spark DataFrame, or an Arrow table / pandas frame when ``spark`` is given.
        table: the table (a :class:`~cardiolake.tables.Table` or ``"layer.name"``).
        lake_root: the lake's root folder or URI.
        mode: ``append``; ``overwrite`` (replace the rows); ``error`` or ``ignore`` (when the
            table exists, raise or do nothing).
        partition_by: partition columns of a new (or schema-overwritten) table; None keeps an
            existing table's. Supported types: string, integers, date, boolean.
        spark: the session; defaults to the DataFrame's.
        row_group_rows: rows per Parquet row group on the delta-rs path; default
            :data:`SIGNAL_ROW_GROUP_ROWS` when the rows hold arrays, else
            :data:`SCALAR_ROW_GROUP_ROWS`. (Native Delta sizes row groups in bytes instead.)
        overwrite_schema: let ``overwrite`` change the columns or partitioning.

    Returns:
        The table version the write committed (the current version when nothing was written).

    Raises:
        TableExistsError: ``mode="error"`` and the table exists.
        SchemaMismatchError: the columns differ from the table's.
        ValueError: a bad mode or partition column.

    Example:
        >>> version = write_table(df, tables.ECG, lake_root="lake", mode="append")
    """
    if mode not in get_args(WriteMode):
        raise ValueError(f"mode must be one of {get_args(WriteMode)}, got {mode!r}")
    uri = table_uri(table, lake_root)
    sdf = _as_spark(df, spark)
    check_columns(sdf.schema, list(partition_by or []))
    if _use_native(sdf.sparkSession):
        return _native.write(
            sdf,
            uri,
            mode=mode,
            partition_by=list(partition_by or []),
            overwrite_schema=overwrite_schema,
        )
    exists = DeltaTable.is_deltatable(uri)
    if exists and mode == "ignore":
        logger.info("%s exists; mode=ignore writes nothing", uri)
        return DeltaTable(uri).version()
    if exists and mode == "error":
        raise TableExistsError(f"a Delta table already exists at {uri}")
    if exists:
        current = DeltaTable(uri)
        partitions = list(current.metadata().partition_columns)
        if not (mode == "overwrite" and overwrite_schema):
            if partition_by is not None and list(partition_by) != partitions:
                raise SchemaMismatchError(f"{uri}: partitioned by {partitions}, not {partition_by}")
            sdf = _conform(sdf, current, uri)
        if partition_by is None:
            partition_by = partitions
            check_columns(sdf.schema, partition_by)
    rows = row_group_rows or _default_row_group_rows(sdf)
    try:
        return _deltars.write(
            sdf,
            uri,
            mode="create" if mode in ("error", "ignore") else mode,  # type: ignore[arg-type]
            partition_by=list(partition_by or []),
            row_group_rows=rows,
            overwrite_schema=overwrite_schema,
        )
    except TableExistsError:
        if mode != "ignore":
            raise
        return DeltaTable(uri).version()  # created by someone else meanwhile


def merge_table(
    df: DataFrame,
    table: Table | str,
    *,
    lake_root: LakeRoot,
    keys: list[str],
    when_matched: MatchedAction = "ignore",
    row_group_rows: int | None = None,
    retry: CommitRetry | None = None,
) -> int:
    """Insert the rows whose keys the table lacks; this is what makes ingestion idempotent.

    Rows repeating a key within ``df`` collapse to one (the first when ordered by the other
    columns, so reruns pick the same row). Keys match null-safely (a null key matches a null
    key). A new table is created from the deduplicated rows.

    A merge plans against the table's latest version and commits only on top of it. When a
    concurrent writer commits first, the merge re-reads the table, plans again (the other
    writer's keys are now existing keys) and commits, up to ``retry.attempts`` times.

    Args:
        df: the incoming rows.
        table: the target table.
        lake_root: the lake's root folder or URI.
        keys: columns identifying a row (e.g. ``["sha256"]``).
        when_matched: ``ignore`` keeps existing rows; ``update`` replaces them with the
            incoming ones (on the delta-rs path by rewriting the files that hold them).
        row_group_rows: as in :func:`write_table`.
        retry: attempts and backoff on a conflicting concurrent commit; default
            :class:`CommitRetry` ().

    Returns:
        The table version after the merge (unchanged when no row was new).

    Raises:
        CommitConflictError: every attempt lost to a concurrent commit.
        SchemaMismatchError: the columns differ from the table's.
        ValueError: bad keys or ``when_matched``.

    Example:
        >>> merge_table(batch, tables.ECG_RAW, lake_root="lake", keys=["sha256"])
    """
    if when_matched not in get_args(MatchedAction):
        raise ValueError(f"when_matched must be update or ignore, got {when_matched!r}")
    missing = [k for k in keys if k not in df.columns]
    if not keys or missing:
        raise ValueError(
            f"merge keys must be non-empty columns of the DataFrame; missing {missing}"
        )
    check_columns(df.schema, [])
    uri = table_uri(table, lake_root)
    update = when_matched == "update"

    def attempt() -> int:
        return _merge_once(df, uri, keys=keys, update=update, row_group_rows=row_group_rows)

    return retry_on_conflict(attempt, retry or CommitRetry(), what=f"{uri}: merge")


def _merge_once(
    df: DataFrame, uri: str, *, keys: list[str], update: bool, row_group_rows: int | None
) -> int:
    """One plan-and-commit of :func:`merge_table` against the table's latest version."""
    if _use_native(df.sparkSession):
        if not DeltaTable.is_deltatable(uri):
            try:
                return _native.write(
                    _deltars.dedupe(df, keys),
                    uri,
                    mode="error",
                    partition_by=[],
                    overwrite_schema=False,
                )
            except Exception as exc:
                if not DeltaTable.is_deltatable(uri):
                    raise
                # another merge created the table first: plan again as a merge into it
                raise CommitConflictError(f"{uri} was created by another writer") from exc
        return _native.merge(df, uri, keys=keys, update=update)
    if DeltaTable.is_deltatable(uri):
        df = _conform(df, DeltaTable(uri), uri)
    rows = row_group_rows or _default_row_group_rows(df)
    return _deltars.merge(df, uri, keys=keys, update=update, row_group_rows=rows)


def read_table(
    spark: SparkSession,
    table: Table | str,
    *,
    lake_root: LakeRoot,
    version: int | None = None,
) -> DataFrame:
    """A named Delta table as a Spark DataFrame, optionally at an earlier version.

    Args:
        spark: the session.
        table: the table.
        lake_root: the lake's root folder or URI.
        version: the version to read (time travel); None reads the latest.

    Returns:
        The table's rows, columns in table order.

    Raises:
        TableNotFoundError: no table there.
        NotImplementedError: the table uses deletion vectors or column mapping and Spark
            has no Delta jars.

    Example:
        >>> first = read_table(spark, tables.ECG, lake_root="lake", version=0)
    """
    uri = _existing(table, lake_root)
    if _use_native(spark):
        return _native.read(spark, uri, version=version)
    return _deltars.read(spark, uri, version=version)


def read_arrow(
    table: Table | str,
    *,
    lake_root: LakeRoot,
    version: int | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """A small table (or some columns of it) as Arrow, read on the driver without Spark.

    Args:
        table: the table.
        lake_root: the lake's root folder or URI.
        version: the version to read; None reads the latest.
        columns: columns to read; None reads all.

    Returns:
        The rows as a ``pyarrow.Table``.

    Raises:
        TableNotFoundError: no table there.

    Example:
        >>> read_arrow(tables.ECG, lake_root="lake", version=3, columns=["signal"]).num_rows
    """
    uri = _existing(table, lake_root)
    return _deltars.open_table(uri, version).to_pyarrow_table(columns=columns)


def read_pandas(
    table: Table | str,
    *,
    lake_root: LakeRoot,
    version: int | None = None,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """A small table (or some columns of it) as pandas, read on the driver without Spark.

    Args:
        table: the table.
        lake_root: the lake's root folder or URI.
        version: the version to read; None reads the latest.
        columns: columns to read; None reads all.

    Returns:
        The rows as a ``pandas.DataFrame``.

    Raises:
        TableNotFoundError: no table there.

    Example:
        >>> labels = read_pandas(tables.LABELS, lake_root="lake", columns=["patient", "triage"])
    """
    uri = _existing(table, lake_root)
    return _deltars.open_table(uri, version).to_pandas(columns=columns)


def _existing(table: Table | str, lake_root: LakeRoot) -> str:
    uri = table_uri(table, lake_root)
    if not DeltaTable.is_deltatable(uri):
        raise TableNotFoundError(f"no Delta table {table} at {uri}")
    return uri


def _use_native(spark: SparkSession) -> bool:
    mode = spark.conf.get(DELTA_MODE_CONF, None)
    if mode is not None:
        return mode == "native"
    return delta_native_available(spark)


def _as_spark(df: Any, spark: SparkSession | None) -> DataFrame:
    if isinstance(df, DataFrame):
        return df
    if spark is None:
        raise ValueError("pass spark= to write an Arrow table or a pandas DataFrame")
    return spark.createDataFrame(df)


def _conform(df: DataFrame, table: DeltaTable, uri: str) -> DataFrame:
    """The DataFrame with the table's column order; raises when the columns differ."""
    difference = schema_difference(table.schema(), delta_schema(arrow_schema(df.schema)))
    if difference is not None:
        raise SchemaMismatchError(f"{uri}: {difference}")
    names = [f.name for f in table.schema().fields]
    return df.select(*[f"`{n}`" for n in names]) if names != df.columns else df


def _default_row_group_rows(df: DataFrame) -> int:
    if holds_arrays(arrow_schema(df.schema)):
        return SIGNAL_ROW_GROUP_ROWS
    return SCALAR_ROW_GROUP_ROWS
