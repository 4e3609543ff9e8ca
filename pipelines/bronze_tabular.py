"""Bronze for tabular exports: one row per CSV record of the labs, notes and labels files.

Spark's CSV reader does the parsing (all columns as strings, malformed lines kept aside);
each row is keyed by a hash of its content, so re-exported files with extra rows add only
those. The MRN becomes the pseudonymous key here and is dropped; note text is not stored in
bronze at all (it carries identifiers) — only its hash and length.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import reduce
from pathlib import Path

import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from cardiolake import lake, tables
from cardiolake.domain import FINDINGS
from cardiolake.pseudonym import date_shift, patient_key
from pipelines import schemas
from pipelines.csv_format import BadRow, header_columns, read_rows, sniff_csv
from pipelines.landing import LandingInventory, SourceFile
from pipelines.quarantine import merge_new, quarantine_rows, write_quarantine
from pipelines.settings import IngestSettings
from pipelines.tabular.labs import parse_timestamp

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


#: Staff values kept as they are (they name a role, not a person).
_ROLES = frozenset({"adjudicated"})


def staff_udf(secret: str) -> Callable[[Column], Column]:
    """A column function turning a clinician's name (note author, label reader) into a
    stable pseudonym (``staff_<hex>``): agreement statistics still see the same reader."""

    @F.udf(returnType=StringType())
    def _staff(name: str | None) -> str | None:
        if name is None or not name.strip():
            return None
        value = name.strip()
        if value.lower() in _ROLES:
            return value.lower()
        return "staff_" + patient_key(f"staff|{value.lower()}", secret)[:12]

    return _staff


#: The time columns of each export, moved by the patient's date shift at bronze.
TIME_COLUMNS: dict[str, tuple[str, ...]] = {
    "labs_csv": ("draw_time",),
    "notes_csv": ("note_time",),
    "labels_csv": ("exam_time", "label_time"),
}


def shift_udf(secret: str, max_days: int) -> Callable[[Column, Column], Column]:
    """A column function moving an export's time string by its patient's date shift.

    A time that does not parse is left for silver to quarantine as it would any bad time.
    """

    @F.udf(returnType=StringType())
    def _shift(value: str | None, key: str | None) -> str | None:
        if value is None or not key or max_days <= 0:
            return value
        when = parse_timestamp(value)
        if when is None:
            return value
        return (when + date_shift(key, secret, max_days)).isoformat()

    return _shift


def _read_one(spark: SparkSession, kind: str, uri: str) -> DataFrame:
    """One export file, in its own encoding and delimiter, columns matched by header name."""
    columns = SOURCE_COLUMNS[kind]
    dialect = sniff_csv(Path(uri))
    names: list[str] = []
    for i, name in enumerate(header_columns(Path(uri), dialect)):
        names.append(name if name in columns and name not in names else f"_extra_{i}")
    schema = StructType(
        [StructField(n, StringType()) for n in names] + [StructField(_CORRUPT, StringType())]
    )
    df = (
        spark.read.option("header", True)
        .option("mode", "PERMISSIVE")
        .option("multiLine", True)
        .option("escape", '"')
        .option("sep", dialect.delimiter)
        .option("encoding", dialect.spark_encoding)
        .option("columnNameOfCorruptRecord", _CORRUPT)
        .schema(schema)
        .csv(uri)
    )
    return df.select(
        *[F.col(c) if c in names else F.lit(None).cast("string").alias(c) for c in columns],
        _CORRUPT,
        F.lit(uri).alias("source_uri"),
    )


def read_export(spark: SparkSession, kind: str, uris: list[str]) -> DataFrame:
    """Read tabular export files with every column as a string and the content key added.

    Each file is sniffed for its encoding (BOM, UTF-8, UTF-16, Windows-1252) and delimiter,
    and its columns are matched by header name, so the content key of a row does not depend
    on how the file was written. Rows Spark cannot parse keep their raw text in
    ``_corrupt_record`` (which is never stored).
    """
    columns = SOURCE_COLUMNS[kind]
    df = reduce(DataFrame.unionByName, [_read_one(spark, kind, uri) for uri in uris])
    content = F.concat_ws("\u001f", *[F.coalesce(F.col(c), F.lit("\u0000")) for c in columns])
    return df.withColumn("record_key", F.sha2(content, 256))


#: Columns an index row must fill, per index kind.
INDEX_REQUIRED: dict[str, tuple[str, ...]] = {
    "patient_index": ("mrn",),
    "ptbxl_index": ("filename_hr",),
}


def read_index(inventory: LandingInventory, kind: str) -> tuple[list[dict[str, str]], list[BadRow]]:
    """The well-formed rows of every index file of one kind, and the malformed ones apart.

    A truncated or mis-encoded row never stops the rest of the index from being used.
    """
    rows: list[dict[str, str]] = []
    bad: list[BadRow] = []
    for path in inventory.indexes.get(kind, []):
        try:
            for _, row in read_rows(Path(path), INDEX_REQUIRED.get(kind, ())):
                (bad if isinstance(row, BadRow) else rows).append(row)  # type: ignore[arg-type]
        except OSError as exc:
            bad.append(BadRow(str(path), 0, f"unreadable_{exc.errno}"))
    return rows, bad


def patient_index_keys(inventory: LandingInventory, secret: str) -> set[str] | None:
    """Pseudonymous keys of the master patient index, when the landing zone has one.

    Only MRNs are used and they are hashed at once; malformed rows are left out.
    """
    if not inventory.indexes.get("patient_index"):
        return None
    rows, _ = read_index(inventory, "patient_index")
    return {patient_key(r["mrn"], secret) for r in rows}


def _known_export_stats(lake_root: Path) -> set[tuple[str, int, int]]:
    """(URI, size, mtime ns) of the export files bronze has read: those its rows or bronze
    quarantine rows came from, and every file of the export manifest (rows or not)."""
    stats: set[tuple[str, int, int]] = set()
    columns = ["source_uri", "size_bytes", "source_mtime_ns"]
    for table in (*(t for t, _ in _TARGETS.values()), tables.EXPORT_FILES, tables.QUARANTINE):
        if not lake.table_exists(table, lake_root=lake_root):
            continue
        extra = ["stage"] if table == tables.QUARANTINE else []
        frame = lake.read_arrow(table, lake_root=lake_root, columns=[*columns, *extra])
        if extra:
            frame = frame.filter(pc.equal(frame["stage"], "bronze")).select(columns)
        frame = frame.filter(pc.is_valid(frame["source_mtime_ns"]))
        distinct = frame.group_by(columns).aggregate([])
        stats.update(zip(*(distinct[c].to_pylist() for c in columns), strict=True))
    return stats


def _quarantine_keys(lake_root: Path) -> set[str]:
    """Keys of the bronze quarantine rows (one narrow column, read on the driver)."""
    if not lake.table_exists(tables.QUARANTINE, lake_root=lake_root):
        return set()
    q = lake.read_arrow(tables.QUARANTINE, lake_root=lake_root, columns=["stage", "quarantine_key"])
    return set(q.filter(pc.equal(q["stage"], "bronze"))["quarantine_key"].to_pylist())


def _quarantine_key(uri: str, sha: str | None, row_id: str, reason: str) -> str:
    """What :func:`pipelines.quarantine.quarantine_rows` computes for a bronze row."""
    text = "|".join(["bronze", uri, sha or "", row_id or "", reason])
    return hashlib.sha256(text.encode()).hexdigest()


def _index_quarantine(
    spark: SparkSession,
    inventory: LandingInventory,
    settings: IngestSettings,
    run_id: str,
    now: datetime,
) -> dict[str, int]:
    """Quarantine rows for malformed index rows: file, line and problem, never the content.

    Indexes are small and read on the driver; Spark is only asked to write rows the
    quarantine lacks, so a run with nothing new starts no Spark job here.
    """
    bad: list[tuple[str, str | None, str, str, str, str]] = []
    for kind in INDEX_REQUIRED:
        for row in read_index(inventory, kind)[1]:
            try:
                sha = hashlib.sha256(Path(row.path).read_bytes()).hexdigest()
            except OSError:
                sha = None
            bad.append(
                (row.path, sha, f"line {row.line}", kind, "malformed_index_row",
                 f"line {row.line}: {row.problem}")
            )  # fmt: skip
    known = _quarantine_keys(settings.lake_root) if bad else set()
    bad = [b for b in bad if _quarantine_key(b[0], b[1], b[2], b[4]) not in known]
    if not bad:
        return {}
    schema = ", ".join(
        f"{c} string" for c in ("source_uri", "sha256", "row_id", "input_kind", "reason", "detail")
    )
    frame = spark.createDataFrame(bad, schema)
    return write_quarantine(
        quarantine_rows(frame, stage="bronze", run_id=run_id, now=now), settings.lake_root
    )


def _restamp(
    spark: SparkSession, table: tables.Table, sources: list[SourceFile], lake_root: Path
) -> None:
    """Record the current size and mtime on the rows an export file gave earlier.

    Rows merged this run carry them already; rows read before (an export re-written with
    extra rows, touched, or found before these columns existed) are updated, so the next
    run skips the file unread.
    """
    stamps = [(s.uri, s.size_bytes, s.mtime_ns) for s in sources if s.mtime_ns is not None]
    if not stamps or not lake.table_exists(table, lake_root=lake_root):
        return
    fresh = spark.createDataFrame(stamps, "source_uri string, _size long, _mtime long")
    rows = lake.read_table(spark, table, lake_root=lake_root)
    same = F.col("size_bytes").eqNullSafe(F.col("_size")) & F.col("source_mtime_ns").eqNullSafe(
        F.col("_mtime")
    )
    stale = (
        rows.join(F.broadcast(fresh), "source_uri")
        .where(~same)
        .withColumns({"size_bytes": F.col("_size"), "source_mtime_ns": F.col("_mtime")})
        .select(*rows.columns)
    )
    lake.merge_table(stale, table, lake_root=lake_root, keys=["record_key"], when_matched="update")


def _pairs(items: Iterable[tuple[str, int | None]]) -> list[Column]:
    """Literal key/value columns for ``F.create_map``."""
    return [c for uri, value in items for c in (F.lit(uri), F.lit(value).cast("long"))]


def ingest_exports(
    spark: SparkSession,
    inventory: LandingInventory,
    settings: IngestSettings,
    *,
    run_id: str,
    now: datetime,
) -> tuple[dict[str, int], dict[str, int]]:
    """Land every row of the labs, notes and labels exports in bronze.

    Only export files whose path, size and modification time no bronze (or bronze quarantine)
    row records are read; the others are skipped unread.

    Returns:
        Rows added per bronze table, and rows quarantined per reason (malformed lines).
    """
    from pipelines.bronze import widen_tables

    widen_tables(settings.lake_root)
    added: dict[str, int] = {}
    quarantined = _index_quarantine(spark, inventory, settings, run_id, now)
    known = _known_export_stats(settings.lake_root)
    to_key = key_udf(settings.secret())
    to_staff = staff_udf(settings.secret())
    to_shifted = shift_udf(settings.secret(), settings.date_shift_max_days)
    read: list[tuple[SourceFile, str, int]] = []
    for kind, (table, schema) in _TARGETS.items():
        sources = [
            s
            for s in inventory.by_format(kind)  # type: ignore[arg-type]
            if not settings.skip_unchanged_files
            or s.mtime_ns is None
            or (s.uri, s.size_bytes, s.mtime_ns) not in known
        ]
        if not sources:
            continue
        uris = [s.uri for s in sources]
        stat = {
            "size_bytes": F.create_map(*_pairs((s.uri, s.size_bytes) for s in sources)),
            "source_mtime_ns": F.create_map(*_pairs((s.uri, s.mtime_ns) for s in sources)),
        }
        df = read_export(spark, kind, uris)
        df = df.withColumns(
            {c: F.element_at(m, F.col("source_uri")).cast("long") for c, m in stat.items()}
        ).persist()
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
                        "author": to_staff(F.col("author")),
                    }
                )
            if kind == "labels_csv":
                good = good.withColumn("reader", to_staff(F.col("reader")))
            # every date of a patient moves by the same shift: intervals survive, dates not
            good = good.withColumns(
                {c: to_shifted(F.col(c), F.col("patient_key")) for c in TIME_COLUMNS[kind]}
            )
            rows = schemas.conform(good, schema)
            earlier = lake.table_exists(table, lake_root=settings.lake_root)
            added[table.name] = merge_new(rows, table, settings.lake_root, keys=["record_key"])
            if earlier:  # a new table holds only rows of this run, stamped already
                _restamp(spark, table, sources, settings.lake_root)
            bad = df.where(F.col(_CORRUPT).isNotNull()).select(
                "source_uri",
                F.col("record_key").alias("sha256"),
                F.lit(None).cast("string").alias("row_id"),
                F.lit(kind).alias("input_kind"),
                F.lit("malformed_row").alias("reason"),
                F.lit("the CSV line does not parse into the export's columns").alias("detail"),
                "size_bytes",
                "source_mtime_ns",
            )
            for reason, n in write_quarantine(
                quarantine_rows(bad, stage="bronze", run_id=run_id, now=now), settings.lake_root
            ).items():
                quarantined[reason] = quarantined.get(reason, 0) + n
            per_file: dict[str, int] = {
                r[0]: int(r[1]) for r in df.groupBy("source_uri").count().collect()
            }
            read.extend((s, kind, int(per_file.get(s.uri, 0))) for s in sources)
        finally:
            df.unpersist()
    _record_export_files(spark, read, settings.lake_root, run_id=run_id, now=now)
    return added, quarantined


def _record_export_files(
    spark: SparkSession,
    read: list[tuple[SourceFile, str, int]],
    lake_root: Path,
    *,
    run_id: str,
    now: datetime,
) -> None:
    """One manifest row per export file read this run (one commit for every kind)."""
    stamped = [(s, kind, n) for s, kind, n in read if s.mtime_ns is not None]
    if not stamped:
        return
    rows = [(s.uri, kind, s.size_bytes, s.mtime_ns, n, run_id, now) for s, kind, n in stamped]
    frame = spark.createDataFrame(rows, schemas.EXPORT_FILES)
    merge_new(frame, tables.EXPORT_FILES, lake_root,
              keys=["source_uri", "size_bytes", "source_mtime_ns"])  # fmt: skip
