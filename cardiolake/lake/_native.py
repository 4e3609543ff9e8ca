"""The native path: Spark with the Delta jars (Databricks, or ``spark.jars.packages``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import DataFrame, SparkSession

from cardiolake.lake._deltars import dedupe


def write(
    df: DataFrame,
    uri: str,
    *,
    mode: str,
    partition_by: list[str],
    overwrite_schema: bool,
) -> int:
    """``df.write.format("delta")``; returns the table's version after the write."""
    writer = df.write.format("delta").mode({"error": "errorifexists"}.get(mode, mode))
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if overwrite_schema:
        writer = writer.option("overwriteSchema", "true")
    writer.save(uri)
    return version(df.sparkSession, uri)


def read(spark: SparkSession, uri: str, *, version: int | None) -> DataFrame:
    """``spark.read.format("delta")`` with optional time travel."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(uri)


def merge(df: DataFrame, uri: str, *, keys: list[str], update: bool) -> int:
    """Spark SQL ``MERGE INTO`` with a null-safe match on the keys."""
    spark = df.sparkSession
    source = dedupe(df, keys)
    view = f"cardiolake_merge_{abs(hash((uri, id(df))))}"
    source.createOrReplaceTempView(view)
    try:
        on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
        matched = "WHEN MATCHED THEN UPDATE SET * " if update else ""
        spark.sql(
            f"MERGE INTO delta.`{uri}` AS t USING {view} AS s ON {on} "
            f"{matched}WHEN NOT MATCHED THEN INSERT *"
        )
    finally:
        spark.catalog.dropTempView(view)
    return version(spark, uri)


def version(spark: SparkSession, uri: str) -> int:
    """The table's latest version, from ``DESCRIBE HISTORY``."""
    row = spark.sql(f"DESCRIBE HISTORY delta.`{uri}` LIMIT 1").first()
    assert row is not None
    return int(row["version"])


def optimize(spark: SparkSession, uri: str, *, zorder: list[str], target_file_bytes: int) -> None:
    """Delta SQL ``OPTIMIZE`` (with ``ZORDER BY`` when columns are given)."""
    clause = f" ZORDER BY ({', '.join(f'`{c}`' for c in zorder)})" if zorder else ""
    with _conf(spark, _MAX_FILE_SIZE, str(target_file_bytes)):
        spark.sql(f"OPTIMIZE delta.`{uri}`{clause}").collect()


def vacuum(
    spark: SparkSession, uri: str, *, retention_hours: int, dry_run: bool, check_retention: bool
) -> list[str]:
    """Delta SQL ``VACUUM … RETAIN n HOURS``; returns the files a dry run would delete."""
    statement = f"VACUUM delta.`{uri}` RETAIN {int(retention_hours)} HOURS"
    check = "true" if check_retention else "false"
    with _conf(spark, _RETENTION_CHECK, check):
        if dry_run:
            root = uri.rstrip("/") + "/"
            paths = [str(r[0]) for r in spark.sql(f"{statement} DRY RUN").collect()]
            return [p.split(root, 1)[-1] for p in paths]
        spark.sql(statement).collect()
    return []


_MAX_FILE_SIZE = "spark.databricks.delta.optimize.maxFileSize"
_RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"


@contextmanager
def _conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """Set a session configuration for the duration of one statement."""
    previous = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)
