"""Bronze for tabular exports: one row per CSV record of the labs, notes and labels files.

Spark's CSV reader does the parsing (all columns as strings, malformed lines kept aside);
each row is keyed by a hash of its content, so re-exported files with extra rows add only
those. The MRN becomes the pseudonymous key here and is dropped; note text is not stored in
bronze at all (it carries identifiers) — only its hash and length.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from cardiolake import tables
from cardiolake.domain import FINDINGS
from cardiolake.pseudonym import patient_key
from pipelines import schemas
from pipelines.landing import LandingInventory
from pipelines.quarantine import merge_new, quarantine_rows, write_quarantine
from pipelines.settings import IngestSettings

#: Columns each export must have, in the order the content key hashes them.
SOURCE_COLUMNS: dict[str, tuple[str, ...]] = {
    "labs_csv": ("specimen_id", "mrn", "loinc", "test_name", "value", "unit", "draw_time"),
    "notes_csv": ("note_id", "mrn", "note_time", "author", "text"),
    "labels_csv": ("label_id", "mrn", "exam_time", "label_time", "reader", "triage", *FINDINGS),
}
_TARGETS = {
    "labs_csv": (tables.LABS_RAW, schemas.LABS_RAW),
    "notes_csv": (tables.NOTES_RAW, schemas.NOTES_RAW),
    "labels_csv": (tables.LABELS_RAW, schemas.LABELS_RAW),
}
_CORRUPT = "_corrupt_record"


def key_udf(secret: str) -> Callable[[Column], Column]:
    """A column function turning an MRN column into the pseudonymous patient key."""

    @F.udf(returnType=StringType())
    def _key(mrn: str | None) -> str | None:
        return patient_key(mrn, secret) if mrn and mrn.strip() else None

    return _key


def read_export(spark: SparkSession, kind: str, uris: list[str]) -> DataFrame:
    """Read tabular export files with every column as a string and the content key added.

    Rows Spark cannot parse keep their raw text in ``_corrupt_record``.
    """
    columns = SOURCE_COLUMNS[kind]
    schema = StructType(
        [StructField(c, StringType()) for c in columns] + [StructField(_CORRUPT, StringType())]
    )
    df = (
        spark.read.option("header", True)
        .option("mode", "PERMISSIVE")
        .option("multiLine", True)
        .option("escape", '"')
        .option("columnNameOfCorruptRecord", _CORRUPT)
        .schema(schema)
        .csv(uris)
    )
    content = F.concat_ws("\u001f", *[F.coalesce(F.col(c), F.lit("\u0000")) for c in columns])
    return df.withColumns(
        {
            "record_key": F.sha2(content, 256),
            "source_uri": F.regexp_replace(F.input_file_name(), "^file:(//)?", ""),
        }
    )


def patient_index_keys(inventory: LandingInventory, secret: str) -> set[str] | None:
    """Pseudonymous keys of the master patient index, when the landing zone has one.

    Only MRNs are read and they are hashed at once: names and birth dates are never loaded.
    """
    files = inventory.indexes.get("patient_index", [])
    if not files:
        return None
    keys: set[str] = set()
    for path in files:
        with Path(path).open(newline="", encoding="utf-8") as fh:
            keys.update(patient_key(r["mrn"], secret) for r in csv.DictReader(fh) if r.get("mrn"))
    return keys


def ingest_exports(
    spark: SparkSession,
    inventory: LandingInventory,
    settings: IngestSettings,
    *,
    run_id: str,
    now: datetime,
) -> tuple[dict[str, int], dict[str, int]]:
    """Land every row of the labs, notes and labels exports in bronze.

    Returns:
        Rows added per bronze table, and rows quarantined per reason (malformed lines).
    """
    added: dict[str, int] = {}
    quarantined: dict[str, int] = {}
    to_key = key_udf(settings.pseudonym_secret)
    for kind, (table, schema) in _TARGETS.items():
        uris = [s.uri for s in inventory.by_format(kind)]  # type: ignore[arg-type]
        if not uris:
            continue
        df = read_export(spark, kind, uris).persist()
        try:
            good = df.where(F.col(_CORRUPT).isNull()).withColumns(
                {
                    "patient_key": to_key(F.col("mrn")),
                    "run_id": F.lit(run_id),
                    "ingest_time": F.lit(now),
                }
            )
            if kind == "notes_csv":
                good = good.withColumns(
                    {
                        "text_sha256": F.sha2(F.coalesce("text", F.lit("")), 256),
                        "text_chars": F.length("text"),
                    }
                )
            rows = schemas.conform(good, schema)
            added[table.name] = merge_new(rows, table, settings.lake_root, keys=["record_key"])
            bad = df.where(F.col(_CORRUPT).isNotNull()).select(
                "source_uri",
                F.col("record_key").alias("sha256"),
                F.lit(None).cast("string").alias("row_id"),
                F.lit(kind).alias("input_kind"),
                F.lit("malformed_row").alias("reason"),
                F.lit("the CSV line does not parse into the export's columns").alias("detail"),
            )
            for reason, n in write_quarantine(
                quarantine_rows(bad, stage="bronze", run_id=run_id, now=now), settings.lake_root
            ).items():
                quarantined[reason] = quarantined.get(reason, 0) + n
        finally:
            df.unpersist()
    return added, quarantined
