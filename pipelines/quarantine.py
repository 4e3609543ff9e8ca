"""The quarantine table: every input that failed, with its stage, reason and detail.

Rows are keyed by a hash of (stage, URI, SHA-256, row id, reason), so re-running a job on the
same bad inputs adds nothing. Nothing in a quarantine row identifies a patient: details come
from readers that name the file and the problem, never header values.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cardiolake import lake, tables
from pipelines import schemas

#: Stages of the quality gates start with this (``gate_ecg``, ``gate_labs``, ...); their rows
#: carry the failing row's table key as ``row_id``, which is how later stages skip them.
GATE_STAGE_PREFIX = "gate_"


def gate_stage(table: tables.Table) -> str:
    """The quarantine stage of one table's quality gate."""
    return f"{GATE_STAGE_PREFIX}{table.name}"


def gate_failed_keys(lake_root: Path, table: tables.Table | None = None) -> set[str]:
    """Row keys a quality gate quarantined (of one table, or of every gated table).

    Read with delta-rs, for consumers without Spark (the feature tables); the Spark stages
    anti-join the quarantine table instead.
    """
    if not lake.table_exists(tables.QUARANTINE, lake_root=lake_root):
        return set()
    q = lake.read_pandas(tables.QUARANTINE, lake_root=lake_root, columns=["stage", "row_id"])
    stage = q["stage"].fillna("")
    hit = stage == gate_stage(table) if table else stage.str.startswith(GATE_STAGE_PREFIX)
    return set(q.loc[hit & q["row_id"].notna(), "row_id"])


def quarantine_rows(df: DataFrame, *, stage: str, run_id: str, now: datetime) -> DataFrame:
    """Shape failed inputs as quarantine rows.

    Args:
        df: rows with ``source_uri``, ``sha256``, ``row_id``, ``input_kind``, ``reason``
            and ``detail``.
        stage: the stage that rejected them (``bronze``, ``silver_labs``, ...).
        run_id: this run's id.
        now: the run's timestamp.

    Returns:
        A DataFrame with the quarantine schema.
    """
    key = F.sha2(
        F.concat_ws(
            "|",
            F.lit(stage),
            F.col("source_uri"),
            F.coalesce(F.col("sha256"), F.lit("")),
            F.coalesce(F.col("row_id"), F.lit("")),
            F.col("reason"),
        ),
        256,
    )
    out = df.withColumns(
        {
            "quarantine_key": key,
            "stage": F.lit(stage),
            "run_id": F.lit(run_id),
            "quarantined_at": F.lit(now),
        }
    )
    return schemas.conform(out, schemas.QUARANTINE)


def write_quarantine(df: DataFrame, lake_root: Path) -> dict[str, int]:
    """Merge quarantine rows (new keys only); return the rows added per reason."""
    from pipelines.bronze import widen_tables  # bronze imports this module

    counts = {r["reason"]: int(r["count"]) for r in df.groupBy("reason").count().collect()}
    if not counts:
        return {}
    # the gates and batch scoring write here too: an older lake gains the newer columns
    # (nullable) before its first write by any of them, not only before an ingest
    widen_tables(lake_root)
    before = _reason_counts(lake_root)
    lake.merge_table(df, tables.QUARANTINE, lake_root=lake_root, keys=["quarantine_key"])
    after = _reason_counts(lake_root)
    return {
        r: after.get(r, 0) - before.get(r, 0) for r in counts if after.get(r, 0) > before.get(r, 0)
    }


def _reason_counts(lake_root: Path) -> dict[str, int]:
    if not lake.table_exists(tables.QUARANTINE, lake_root=lake_root):
        return {}
    frame = lake.read_pandas(tables.QUARANTINE, lake_root=lake_root, columns=["reason"])
    return {str(k): int(v) for k, v in frame["reason"].value_counts().items()}


def row_count(table: tables.Table, lake_root: Path) -> int:
    """Rows in a Delta table's current version (0 when it does not exist yet)."""
    if not lake.table_exists(table, lake_root=lake_root):
        return 0
    return int(DeltaTable(str(table.path(lake_root))).to_pyarrow_dataset().count_rows())


def merge_new(df: DataFrame, table: tables.Table, lake_root: Path, *, keys: list[str]) -> int:
    """Insert the rows whose keys the table lacks; return how many it gained."""
    before = row_count(table, lake_root)
    lake.merge_table(df, table, lake_root=lake_root, keys=keys)
    return row_count(table, lake_root) - before


def unprocessed(
    spark: SparkSession,
    source: tables.Table,
    *,
    done: tables.Table,
    done_column: str = "record_key",
    stage: str,
    lake_root: Path,
) -> DataFrame | None:
    """Rows of ``source`` a stage has neither written to ``done`` nor quarantined itself.

    Args:
        spark: the session.
        source: the upstream table (rows keyed by ``record_key``).
        done: the stage's output table.
        done_column: the column of ``done`` holding source keys (an array column is exploded).
        stage: the stage name its quarantine rows carry (other stages' rows do not count:
            a duplicate quarantined in bronze shares its SHA-256 with the kept original).
        lake_root: the lake root.

    Returns:
        The pending rows, or None when the source table does not exist yet.
    """
    if not lake.table_exists(source, lake_root=lake_root):
        return None
    todo = lake.read_table(spark, source, lake_root=lake_root)
    blocks = []
    if lake.table_exists(done, lake_root=lake_root):
        out = lake.read_table(spark, done, lake_root=lake_root)
        is_array = out.schema[done_column].dataType.typeName() == "array"
        blocks.append(
            out.select((F.explode(done_column) if is_array else F.col(done_column)).alias("_done"))
        )
    if lake.table_exists(tables.QUARANTINE, lake_root=lake_root):
        q = lake.read_table(spark, tables.QUARANTINE, lake_root=lake_root)
        blocks.append(q.where(F.col("stage") == stage).select(F.col("sha256").alias("_done")))
    for block in blocks:
        todo = todo.join(block, todo["record_key"] == block["_done"], "left_anti")
    return todo
