"""Silver labs, notes and labels from their bronze rows.

Labs: converted to one canonical unit; rows that cannot be read are quarantined here, rows
that read but are implausible (unknown LOINC, value outside the limits) are left to the labs
gate. Notes: re-read from the export and de-identified (names, MRNs, dates, ids removed) — the
raw text never lands. Labels: reader votes resolved per exam (adjudication wins; unresolved
disagreements, orphan patients and early labels are kept for the labels gate).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StringType, StructField, StructType

from cardiolake import lake, tables
from cardiolake.domain import FINDINGS
from cardiolake.pseudonym import patient_key
from pipelines import schemas
from pipelines.bronze_tabular import read_export
from pipelines.landing import LandingInventory
from pipelines.quarantine import merge_new, quarantine_rows, unprocessed, write_quarantine
from pipelines.settings import IngestSettings
from pipelines.silver_signals import pending_count
from pipelines.tabular import (
    LabelVote,
    LabResult,
    RowError,
    deidentify_note,
    normalize_lab,
    parse_label,
)
from pipelines.tabular.deid_verify import verify_note
from pipelines.tabular.labels import resolve_exam_labels

_OUTCOME = [StructField(n, StringType()) for n in ("target", "reason", "detail")]


def _utc(t: datetime | None) -> datetime | None:
    return None if t is None else t.replace(tzinfo=UTC) if t.tzinfo is None else t


def _quarantine(
    bad: DataFrame, kind: str, stage: str, settings: IngestSettings, run_id: str, now: datetime
) -> dict[str, int]:
    rows = bad.select(
        "source_uri",
        F.col("record_key").alias("sha256"),
        F.col("row_id"),
        F.lit(kind).alias("input_kind"),
        "reason",
        "detail",
    )
    return write_quarantine(
        quarantine_rows(rows, stage=stage, run_id=run_id, now=now), settings.lake_root
    )


def _row_id(item: dict[str, Any], column: str) -> str | None:
    return item.get(column) or None


def silver_labs(
    spark: SparkSession,
    settings: IngestSettings,
    known: set[str] | None,
    *,
    run_id: str,
    now: datetime,
) -> tuple[int, dict[str, int]]:
    """Normalise new bronze lab rows into silver ``labs``."""
    if not pending_count(
        tables.LABS_RAW, done=tables.LABS, stage="silver_labs", lake_root=settings.lake_root
    ):
        return 0, {}
    todo = unprocessed(
        spark, tables.LABS_RAW, done=tables.LABS, stage="silver_labs", lake_root=settings.lake_root
    )
    if todo is None:
        return 0, {}
    out = StructType(
        [
            *[f for f in schemas.LABS.fields if f.name != "run_id"],
            StructField("row_id", StringType()),
            StructField("source_uri", StringType()),
            *_OUTCOME,
        ]
    )

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        schema = to_arrow_schema(out, timezone="UTC")
        for batch in batches:
            rows = []
            for item in batch.to_pylist():
                base = {
                    "record_key": item["record_key"],
                    "patient_key": item["patient_key"],
                    "row_id": item["specimen_id"],
                    "source_uri": item["source_uri"],
                }
                result: LabResult | RowError
                if item["patient_key"] and known is not None and item["patient_key"] not in known:
                    result = RowError("unknown_patient", "the patient is not in the patient index")
                else:
                    result = normalize_lab({**item, "mrn": item["patient_key"] or ""})
                if isinstance(result, RowError):
                    rows.append(
                        {
                            **base,
                            "target": "quarantine",
                            "reason": result.reason,
                            "detail": result.detail,
                        }
                    )
                    continue
                rows.append(
                    {
                        **base,
                        "target": "silver",
                        "specimen_id": result.specimen_id,
                        "loinc": result.loinc,
                        "analyte": result.analyte,
                        "value": result.value,
                        "unit": result.unit,
                        "original_value": str(result.original_value),
                        "original_unit": result.original_unit,
                        "draw_time": _utc(result.draw_time),
                    }
                )
            yield pa.RecordBatch.from_pylist(rows, schema=schema)

    done = todo.mapInArrow(run, out).persist()
    try:
        good = done.where(F.col("target") == "silver").withColumn("run_id", F.lit(run_id))
        added = merge_new(
            schemas.conform(good, schemas.LABS),
            tables.LABS,
            settings.lake_root,
            keys=["record_key"],
        )
        quarantined = _quarantine(
            done.where(F.col("target") == "quarantine"),
            "labs_csv",
            "silver_labs",
            settings,
            run_id,
            now,
        )
        return added, quarantined
    finally:
        done.unpersist()


def _patient_identities(inventory: LandingInventory) -> dict[str, tuple[list[str], list[str]]]:
    """MRN -> (names, birth dates) from the master patient index, to scrub notes in memory."""
    from pipelines.bronze_tabular import read_index

    out: dict[str, tuple[list[str], list[str]]] = {}
    for row in read_index(inventory, "patient_index")[0]:
        names, births = out.setdefault(row["mrn"], ([], []))
        if row.get("name"):
            names.append(row["name"])
        if row.get("birth_date"):
            births.append(row["birth_date"])
    return out


def silver_notes(
    spark: SparkSession,
    settings: IngestSettings,
    inventory: LandingInventory,
    *,
    run_id: str,
    now: datetime,
) -> tuple[int, dict[str, int]]:
    """De-identify new notes into silver ``notes`` (text re-read from the export, never raw)."""
    if not pending_count(
        tables.NOTES_RAW, done=tables.NOTES, stage="silver_notes", lake_root=settings.lake_root
    ):
        return 0, {}
    todo = unprocessed(
        spark,
        tables.NOTES_RAW,
        done=tables.NOTES,
        stage="silver_notes",
        lake_root=settings.lake_root,
    )
    uris = [s.uri for s in inventory.by_format("notes_csv")]
    if todo is None or not uris:
        return 0, {}
    identities = _patient_identities(inventory)
    texts = (
        read_export(spark, "notes_csv", uris)
        .where(F.col("_corrupt_record").isNull())
        .select("record_key", "mrn", "text")
    )
    result = StructType([StructField("text", StringType()), StructField("problems", StringType())])

    @F.udf(returnType=result)
    def scrub(text: str | None, mrn: str | None) -> tuple[str | None, str | None]:
        if text is None:
            return None, None
        names, births = identities.get(mrn or "", ([], []))
        mrns = [mrn] if mrn else []
        clean = deidentify_note(text, known_names=names, known_mrns=mrns, known_birth_dates=births)
        # an independent check; a note it flags is quarantined, never stored
        problems = verify_note(clean, known_names=names, known_mrns=mrns, known_birth_dates=births)
        return clean, ",".join(problems) or None

    scrubbed = (
        todo.join(texts, "record_key")
        .withColumn("_scrub", scrub(F.col("text"), F.col("mrn")))
        .withColumns(
            {
                "text": F.col("_scrub.text"),
                "_problems": F.col("_scrub.problems"),
                "note_time": F.to_timestamp("note_time"),
                "run_id": F.lit(run_id),
            }
        )
        .drop("_scrub", "mrn")
        .persist()
    )
    try:
        added = merge_new(
            schemas.conform(scrubbed.where(F.col("_problems").isNull()), schemas.NOTES),
            tables.NOTES,
            settings.lake_root,
            keys=["record_key"],
        )
        bad = scrubbed.where(F.col("_problems").isNotNull()).select(
            "source_uri",
            "record_key",
            F.col("note_id").alias("row_id"),
            F.lit("deid_verification_failed").alias("reason"),
            F.concat(F.lit("identifier categories left after scrubbing: "), "_problems").alias(
                "detail"
            ),
        )
        quarantined = _quarantine(bad, "notes_csv", "silver_notes", settings, run_id, now)
    finally:
        scrubbed.unpersist()
    return added, quarantined


def exam_key(patient: str, exam_time: datetime) -> str:
    """Identifier of one exam: hash of the patient key and the exam's start."""
    return hashlib.sha256(f"{patient}|{exam_time.isoformat()}".encode()).hexdigest()


def silver_labels(
    spark: SparkSession,
    settings: IngestSettings,
    *,
    run_id: str,
    now: datetime,
) -> tuple[int, dict[str, int]]:
    """Resolve reader votes of exams with new votes into silver ``labels`` (upsert per exam).

    Votes that cannot be read are quarantined here; a label of a patient with no exam in the
    lake, or stamped before its exam, reaches silver and the labels gate holds it back.
    """
    if not pending_count(
        tables.LABELS_RAW,
        done=tables.LABELS,
        done_column="vote_keys",
        stage="silver_labels",
        lake_root=settings.lake_root,
    ):
        return 0, {}
    todo = unprocessed(
        spark,
        tables.LABELS_RAW,
        done=tables.LABELS,
        done_column="vote_keys",
        stage="silver_labels",
        lake_root=settings.lake_root,
    )
    if todo is None:
        return 0, {}
    votes = cast(pd.DataFrame, todo.toPandas())  # label exports are small: thousands of rows
    if votes.empty:
        return 0, {}
    bad_rows: list[dict[str, Any]] = []
    parsed: list[tuple[str, str, LabelVote]] = []
    for item in votes.to_dict("records"):
        result = parse_label({**item, "mrn": item["patient_key"] or ""})
        if isinstance(result, RowError):
            bad_rows.append(
                {
                    "record_key": item["record_key"],
                    "source_uri": item["source_uri"],
                    "row_id": item["label_id"],
                    "reason": result.reason,
                    "detail": result.detail,
                }
            )
        else:
            parsed.append((item["patient_key"], item["record_key"], result))
    quarantined: dict[str, int] = {}
    if bad_rows:
        quarantined = _quarantine(
            spark.createDataFrame(pd.DataFrame(bad_rows)),
            "labels_csv",
            "silver_labels",
            settings,
            run_id,
            now,
        )
    if not parsed:
        return 0, quarantined
    # every earlier vote of an affected exam takes part in its resolution again
    affected = {exam_key(p, v.exam_time) for p, _, v in parsed}
    earlier = _earlier_votes(spark, settings, affected)
    by_exam: dict[str, list[tuple[str, str, LabelVote]]] = {}
    for p, key, vote in [*earlier, *parsed]:
        by_exam.setdefault(exam_key(p, vote.exam_time), []).append((p, key, vote))
    rows = []
    for ekey, items in sorted(by_exam.items()):
        resolved = resolve_exam_labels([v for _, _, v in items])
        rows.append(
            {
                "exam_key": ekey,
                "patient_key": items[0][0],
                "exam_time": _utc(resolved.exam_time),
                "label_time": _utc(resolved.label_time),
                "triage_urgent": resolved.urgent,
                **{f: resolved.findings.get(f) for f in FINDINGS},
                "n_readers": resolved.n_readers,
                "readers": list(resolved.readers),
                "reader_triage_urgent": list(resolved.reader_votes),
                "agreement": resolved.agreement,
                "adjudicated": resolved.adjudicated,
                "needs_adjudication": resolved.needs_adjudication,
                "vote_keys": sorted({k for _, k, _ in items}),
                "run_id": run_id,
            }
        )
    frame = spark.createDataFrame(rows, schemas.LABELS)
    before = lake.table_exists(tables.LABELS, lake_root=settings.lake_root)
    lake.merge_table(
        frame, tables.LABELS, lake_root=settings.lake_root, keys=["exam_key"], when_matched="update"
    )
    return (len(rows) if not before else len(affected)), quarantined


def _earlier_votes(
    spark: SparkSession, settings: IngestSettings, affected: set[str]
) -> list[tuple[str, str, LabelVote]]:
    if not lake.table_exists(tables.LABELS, lake_root=settings.lake_root):
        return []
    labels = lake.read_table(spark, tables.LABELS, lake_root=settings.lake_root)
    keys = [
        r[0]
        for r in labels.where(F.col("exam_key").isin(list(affected)))
        .select(F.explode("vote_keys"))
        .collect()
    ]
    if not keys:
        return []
    raw = lake.read_table(spark, tables.LABELS_RAW, lake_root=settings.lake_root).where(
        F.col("record_key").isin(keys)
    )
    out = []
    for item in cast(pd.DataFrame, raw.toPandas()).to_dict("records"):
        vote = parse_label({**item, "mrn": item["patient_key"] or ""})
        if isinstance(vote, LabelVote):
            out.append((item["patient_key"], item["record_key"], vote))
    return out


def known_patients(
    spark: SparkSession, inventory: LandingInventory, settings: IngestSettings
) -> set[str] | None:
    """Keys of known patients: the master index, else everyone with an ECG or echo in bronze."""
    from pipelines.bronze_tabular import patient_index_keys

    keys = patient_index_keys(inventory, settings.secret())
    if keys is not None:
        return keys
    found: set[str] = set()
    for table in (tables.ECG_RAW, tables.ECHO_RAW):
        if lake.table_exists(table, lake_root=settings.lake_root):
            # one narrow column on the driver: no Spark job on a run with nothing to do
            keys = lake.read_arrow(table, lake_root=settings.lake_root, columns=["patient_key"])
            found.update(k for k in pc.unique(keys["patient_key"]).to_pylist() if k)
    return found or None


__all__ = [
    "exam_key",
    "known_patients",
    "patient_key",
    "silver_labels",
    "silver_labs",
    "silver_notes",
]
