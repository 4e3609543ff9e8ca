"""Bronze: one row per source file or record, or one quarantine row saying why not.

Files are hashed and fully decoded inside Spark tasks (a file that cannot be decoded is
quarantined here, so every later stage can trust bronze); the tables keep the URI, SHA-256,
size, format, parsed de-identified header and ingest time. Tabular exports (labs, notes,
labels) are read by Spark's CSV reader, one bronze row per CSV row.

Incremental discovery (the Auto Loader model): each row records the size and newest
modification time (ns) its file had when found. A landing file whose path, size and mtime a
bronze or bronze-quarantine row already holds is skipped on the driver, unread; only the other
files (new, or changed since) are hashed, and only those whose (URI, SHA-256) is new are
decoded. A file touched but identical gets its new mtime recorded and adds nothing. Rows are
merged on their content key, so a re-run adds nothing and a run with new files adds only
those. The same bytes under a second name are quarantined as a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from deltalake.schema import Field, PrimitiveType
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import LongType, StringType, StructField, StructType

from cardiolake import lake, tables
from cardiolake.pseudonym import DEVELOPMENT_SECRET, SecretError, date_shift, patient_key
from pipelines import schemas
from pipelines.csv_format import BadRow, read_rows
from pipelines.ecg_source import read_ecg_source
from pipelines.echo_source import read_echo_clip
from pipelines.landing import LandingInventory, SourceFile
from pipelines.quarantine import merge_new, quarantine_rows, write_quarantine
from pipelines.readers import InputError
from pipelines.readers.dicom_reader import check_dicom_file
from pipelines.readers.limits import DEFAULT_LIMITS, ReadLimits, memory_guard
from pipelines.settings import IngestSettings

logger = logging.getLogger(__name__)

#: Output of the per-file task: a bronze row of either table, or a quarantine row.
_FILE_FIELDS = [f for f in schemas.ECG_RAW.fields if f.name not in {"run_id", "ingest_time"}]
_FILE_FIELDS += [
    f
    for f in schemas.ECHO_RAW.fields
    if f.name not in {x.name for x in _FILE_FIELDS} | {"run_id", "ingest_time"}
]
FILE_TASK_OUTPUT = StructType(
    [
        StructField("target", StringType()),
        *_FILE_FIELDS,
        StructField("reason", StringType()),
        StructField("detail", StringType()),
    ]
)
_TASK_INPUT = StructType(
    [
        StructField("uri", StringType()),
        StructField("format", StringType()),
        StructField("companions", StringType()),
        StructField("context", StringType()),
        StructField("mtime_ns", LongType()),  # from the landing scan
    ]
)
#: What discovery reads of bronze and quarantine: narrow scalar columns, never a header.
_KNOWN_COLUMNS = ["source_uri", "sha256", "size_bytes", "source_mtime_ns"]
#: Columns newer code added to tables an older lake already has (all nullable longs).
_ADDED: dict[tables.Table, tuple[str, ...]] = {
    tables.ECG_RAW: ("source_mtime_ns",),
    tables.ECHO_RAW: ("source_mtime_ns",),
    tables.QUARANTINE: ("size_bytes", "source_mtime_ns"),
    tables.LABS_RAW: ("size_bytes", "source_mtime_ns"),
    tables.NOTES_RAW: ("size_bytes", "source_mtime_ns"),
    tables.LABELS_RAW: ("size_bytes", "source_mtime_ns"),
}


@dataclass(frozen=True)
class _TaskConfig:
    secret: str
    seen: frozenset[tuple[str, str]]  # (uri, sha256) already in bronze or quarantine
    limits: ReadLimits = DEFAULT_LIMITS
    date_shift_max_days: int = 0

    def __post_init__(self) -> None:
        if self.secret == DEVELOPMENT_SECRET:
            # a caller without a lake (a benchmark's plain loop): keys under a throwaway
            # random secret, never a public one; ingest_files always passes the lake's
            object.__setattr__(self, "secret", secrets.token_hex(32))


_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"|b'[^'\n]*'")


def safe_detail(text: str) -> str:
    """A quarantine detail without quoted values: parsers quote the offending header text or
    cell verbatim, and that text may be an identifier."""
    return _QUOTED.sub("'…'", text)[:500]


def _sha256_of(paths: list[str]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
    return digest.hexdigest(), size


def _key(mrn: str | None, secret: str) -> str | None:
    return patient_key(mrn, secret) if mrn and mrn.strip() else None


def shift_header_dates(header: dict[str, Any], shift: timedelta) -> dict[str, Any]:
    """The header with its ISO date-times moved by the patient's shift."""
    out = dict(header)
    for name in ("AcquisitionDateTime",):
        value = out.get(name)
        if isinstance(value, str):
            try:
                out[name] = (datetime.fromisoformat(value) + shift).isoformat()
            except ValueError:
                out.pop(name)  # an unreadable date is dropped, never kept as it came
    return out


def _shift_of(row: dict[str, Any], config: _TaskConfig) -> timedelta:
    """The row's patient's date shift (a file without a patient: keyed by its SHA-256)."""
    key = row.get("patient_key") or row.get("sha256") or ""
    return date_shift(key, config.secret, config.date_shift_max_days)


def parse_file(task: dict[str, Any], config: _TaskConfig) -> dict[str, Any]:
    """Hash and decode one source file; return its bronze or quarantine row (never raises)."""
    uri, fmt = task["uri"], task["format"]
    context = json.loads(task["context"] or "{}")
    companions = json.loads(task["companions"] or "[]")
    row: dict[str, Any] = {"source_uri": uri, "format": fmt}
    try:
        if context.get("problem"):  # found by the landing scan (symlink loop, unreadable)
            raise InputError(context["problem"], context.get("problem_detail", ""), uri=uri)
        try:
            sha, size = _sha256_of([uri, *[c for c in companions if Path(c).exists()]])
        except FileNotFoundError as exc:
            raise InputError("missing_file", str(exc.strerror), uri=uri) from exc
        except OSError as exc:
            raise InputError("unreadable_path", str(exc.strerror), uri=uri) from exc
        row.update(
            sha256=sha, record_key=sha, size_bytes=size, source_mtime_ns=task.get("mtime_ns")
        )
        if (uri, sha) in config.seen:
            return {**row, "target": "skip"}
        if fmt == "unknown":
            raise InputError("unknown_format", "no reader for this kind of file", uri=uri)
        with memory_guard(config.limits.task_memory_bytes):
            return _decode(row, uri, fmt, context, config)
    except InputError as exc:
        detail = safe_detail(str(exc))
        return {**row, "target": "quarantine", "reason": exc.reason, "detail": detail}
    except MemoryError:
        detail = f"{uri}: decoding needs more memory than the task may use"
        return {**row, "target": "quarantine", "reason": "memory_limit", "detail": detail}
    except SecretError:
        raise  # a configuration error, not a bad file: fail the run
    except Exception as exc:  # noqa: BLE001 - a reader bug must not stop the batch
        detail = safe_detail(f"{uri}: {type(exc).__name__}: {exc}")
        return {**row, "target": "quarantine", "reason": "unreadable", "detail": detail}


def _decode(
    row: dict[str, Any], uri: str, fmt: str, context: dict[str, Any], config: _TaskConfig
) -> dict[str, Any]:
    """Decode one file into its bronze row (raises InputError for a bad file)."""
    if fmt == "dicom":
        check_dicom_file(uri, uri, config.limits)  # before even the SOP class is read
    if fmt == "wfdb" or (fmt == "dicom" and _dicom_is_ecg(uri)):
        ecg = read_ecg_source(uri, fmt, context=context, limits=config.limits)
        row.update(patient_key=_key(ecg.mrn, config.secret))
        shift = _shift_of(row, config)
        when = ecg.acquisition_datetime
        row.update(
            target="ecg_raw",
            format=ecg.format,
            device_kind=ecg.device_kind,
            acquisition_time=None if when is None else when + shift,
            fs=float(ecg.fs),
            n_samples=int(ecg.signals_mv.shape[0]),
            lead_names=list(ecg.lead_names),
            header_fields=shift_header_dates(ecg.header_fields, shift),
            header_json=json.dumps(
                shift_header_dates(ecg.header, shift), sort_keys=True, default=str
            ),
        )
        return row
    # headers only: silver decodes the pixels once, frame by frame
    clip = read_echo_clip(uri, fmt, limits=config.limits, pixels="header")
    row.update(patient_key=_key(clip.mrn, config.secret))
    shift = _shift_of(row, config)
    header = shift_header_dates(clip.header, shift)
    when = clip.acquisition_datetime
    row.update(
        target="echo_raw",
        format=clip.source_format,
        acquisition_time=None if when is None else when + shift,
        n_frames=clip.shape[0],
        height=clip.shape[1],
        width=clip.shape[2],
        fps=float(clip.fps),
        synchronized=clip.synchronized,
        has_r_wave_vector=clip.r_wave_times_s is not None,
        header_fields={k: str(v) for k, v in header.items() if not isinstance(v, (list, dict))},
        header_json=json.dumps(header, sort_keys=True, default=str),
    )
    return row


def _dicom_is_ecg(uri: str) -> bool:
    import pydicom

    try:
        ds = pydicom.dcmread(uri, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - read_dicom gives the precise reason later
        return False
    return "1.2.840.10008.5.1.4.1.1.9." in str(ds.get("SOPClassUID", ""))


def _file_tasks(config: _TaskConfig) -> Any:
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        schema = _arrow_output_schema()
        for batch in batches:
            rows = [parse_file(task, config) for task in batch.to_pylist()]
            for r in rows:
                if r.get("acquisition_time") is not None:
                    r["acquisition_time"] = r["acquisition_time"].replace(tzinfo=UTC)
            yield pa.RecordBatch.from_pylist(rows, schema=schema)

    return run


def _arrow_output_schema() -> pa.Schema:
    return to_arrow_schema(FILE_TASK_OUTPUT, timezone="UTC")


def file_sources(inventory: LandingInventory) -> list[SourceFile]:
    """The inventory's per-file inputs (ECG, echo, unknown; not the tabular exports)."""
    return [
        src
        for src in [*inventory.records, *inventory.unknown]
        if src.format not in {"labs_csv", "notes_csv", "labels_csv"}
    ]


def _task_frame(
    spark: SparkSession, inventory: LandingInventory, sources: list[SourceFile], slices: int
) -> DataFrame:
    ptbxl = _ptbxl_context(inventory) if any(s.format == "wfdb" for s in sources) else {}
    rows = []
    for src in sources:
        context: dict[str, Any] = {}
        if src.format == "wfdb":
            context.update(ptbxl.get(str(Path(src.uri).with_suffix("")), {}))
        if src.problem:
            context.update(problem=src.problem, problem_detail=src.problem_detail)
        rows.append(
            (src.uri, src.format, json.dumps(list(src.companions)), json.dumps(context),
             src.mtime_ns)
        )  # fmt: skip
    return spark.createDataFrame(rows, _TASK_INPUT).repartition(max(1, min(slices, len(rows) or 1)))


def _ptbxl_context(inventory: LandingInventory) -> dict[str, dict[str, Any]]:
    """PTB-XL-style index rows keyed by record path: the MRN, device and recording time.

    Malformed rows are skipped here (their records then lack the index's MRN) and
    quarantined by :func:`pipelines.bronze_tabular.ingest_exports`.
    """
    out: dict[str, dict[str, Any]] = {}
    for index in inventory.indexes.get("ptbxl_index", []):
        for _, row in read_rows(index, required=("filename_hr",)):
            if isinstance(row, BadRow):
                continue
            stem = (index.parent / row["filename_hr"]).resolve()
            out[str(stem)] = {
                "mrn": row.get("patient_id"),
                "device": row.get("device"),
                "recording_date": row.get("recording_date"),
            }
    return out


def widen_tables(lake_root: Path) -> None:
    """Add the columns newer code writes to an older lake's bronze and quarantine tables.

    They are nullable: rows written before read as null there (discovery then reads each of
    those files once and records its size and mtime).
    """
    for table, columns in _ADDED.items():
        if not lake.table_exists(table, lake_root=lake_root):
            continue
        delta = DeltaTable(lake.table_uri(table, lake_root))
        have = {f.name for f in delta.schema().fields}
        missing = [Field(c, PrimitiveType("long"), nullable=True) for c in columns if c not in have]
        if missing:
            delta.alter.add_columns(missing)
            logger.info("%s: added columns %s", table, [f.name for f in missing])


@dataclass(frozen=True)
class KnownFiles:
    """What bronze and quarantine (stage bronze) hold about landing files, read on the driver."""

    stats: frozenset[tuple[str, int, int]]  # (uri, size, mtime ns) recorded when found
    seen: frozenset[tuple[str, str]]  # (uri, sha256) already ingested or quarantined
    problems: frozenset[tuple[str, str]]  # (uri, reason) quarantined before any read
    bronze_shas: frozenset[str]  # content already in ecg_raw / echo_raw
    where: dict[tuple[str, str], tables.Table]  # (uri, sha256) -> the table holding it

    def unchanged(self, src: SourceFile) -> bool:
        """Whether a landing file is known with the same size and mtime (or the same problem)."""
        if src.problem:
            return (src.uri, src.problem) in self.problems
        if src.size_bytes is None or src.mtime_ns is None:
            return False
        return (src.uri, src.size_bytes, src.mtime_ns) in self.stats


def known_files(lake_root: Path) -> KnownFiles:
    """Read the narrow discovery columns of bronze and quarantine with delta-rs (no Spark)."""
    stats: set[tuple[str, int, int]] = set()
    seen: set[tuple[str, str]] = set()
    problems: set[tuple[str, str]] = set()
    shas: set[str] = set()
    where: dict[tuple[str, str], tables.Table] = {}
    for table in (tables.ECG_RAW, tables.ECHO_RAW, tables.QUARANTINE):
        if not lake.table_exists(table, lake_root=lake_root):
            continue
        extra = ["stage", "reason"] if table == tables.QUARANTINE else []
        frame = lake.read_arrow(table, lake_root=lake_root, columns=[*_KNOWN_COLUMNS, *extra])
        if table == tables.QUARANTINE:
            frame = frame.filter(pc.equal(frame["stage"], "bronze"))
        columns = [frame[c].to_pylist() for c in [*_KNOWN_COLUMNS, *extra]]
        for uri, sha, size, mtime, *rest in zip(*columns, strict=True):
            if sha is None:
                if rest:
                    problems.add((uri, rest[1]))
                continue
            seen.add((uri, sha))
            where.setdefault((uri, sha), table)
            if table != tables.QUARANTINE:
                shas.add(sha)
            if size is not None and mtime is not None:
                stats.add((uri, size, mtime))
    return KnownFiles(
        frozenset(stats), frozenset(seen), frozenset(problems), frozenset(shas), where
    )


@dataclass
class BronzeResult:
    """Counts of one bronze run."""

    files_seen: int
    skipped: int
    rows_added: dict[str, int]
    quarantined: dict[str, int]


def ingest_files(
    spark: SparkSession,
    inventory: LandingInventory,
    settings: IngestSettings,
    *,
    run_id: str,
    now: datetime,
) -> BronzeResult:
    """Land the inventory's new or changed record files into ``ecg_raw``/``echo_raw``.

    Files whose path, size and mtime bronze or quarantine already record are skipped on the
    driver, unread; only the others are hashed, and decoded when their content is new.

    Args:
        spark: the session.
        inventory: the landing zone's files (from :func:`pipelines.landing.scan_landing`).
        settings: ingestion settings.
        run_id: identifier of this run, stored on every row.
        now: the run's timestamp (ingest time).

    Returns:
        Counts of rows added per table and quarantined per reason.
    """
    widen_tables(settings.lake_root)
    sources = file_sources(inventory)
    known = known_files(settings.lake_root)
    candidates = [
        src for src in sources if not (settings.skip_unchanged_files and known.unchanged(src))
    ]
    unread = len(sources) - len(candidates)
    logger.info("bronze: %d of %d files new or changed", len(candidates), len(sources))
    if not candidates:
        return BronzeResult(
            files_seen=len(sources),
            skipped=unread,
            rows_added={tables.ECG_RAW.name: 0, tables.ECHO_RAW.name: 0},
            quarantined={},
        )
    uris = {src.uri for src in candidates}
    config = _TaskConfig(
        settings.secret(),
        frozenset(pair for pair in known.seen if pair[0] in uris),
        settings.limits,
        settings.date_shift_max_days,
    )
    tasks = _task_frame(spark, inventory, candidates, settings.task_slices)
    parsed = tasks.mapInArrow(_file_tasks(config), FILE_TASK_OUTPUT).persist()
    try:
        counts = {r["target"]: r["count"] for r in parsed.groupBy("target").count().collect()}
        _restamp(spark, parsed.where(F.col("target") == "skip"), known, settings.lake_root)
        good = parsed.where(F.col("target").isin("ecg_raw", "echo_raw"))
        # the same bytes under another name: keep the first URI, quarantine the others
        first = Window.partitionBy("sha256").orderBy("source_uri")
        ranked = good.withColumn("_rank", F.row_number().over(first))
        fresh = {r[0] for r in good.select("sha256").distinct().collect()}
        earlier = sorted(fresh & known.bronze_shas)  # candidates only: a short list
        dup_cond = (
            (F.col("_rank") > 1) | F.col("sha256").isin(earlier) if earlier else F.col("_rank") > 1
        )
        duplicates = ranked.where(dup_cond)
        keepers = ranked.where(~dup_cond).drop("_rank")
        stamp = {"run_id": F.lit(run_id), "ingest_time": F.lit(now)}
        added: dict[str, int] = {}
        for target, table, schema in (
            ("ecg_raw", tables.ECG_RAW, schemas.ECG_RAW),
            ("echo_raw", tables.ECHO_RAW, schemas.ECHO_RAW),
        ):
            rows = keepers.where(F.col("target") == target).withColumns(stamp)
            rows = schemas.conform(rows, schema)
            added[table.name] = merge_new(rows, table, settings.lake_root, keys=["record_key"])
        bad = parsed.where(F.col("target") == "quarantine").select(
            "source_uri",
            "sha256",
            "reason",
            "detail",
            F.lit(None).cast("string").alias("row_id"),
            F.col("format").alias("input_kind"),
            "size_bytes",
            "source_mtime_ns",
        )
        dups = duplicates.select(
            "source_uri",
            "sha256",
            F.lit("duplicate_content").alias("reason"),
            F.concat(F.lit("same SHA-256 as an earlier file: "), F.col("sha256")).alias("detail"),
            F.lit(None).cast("string").alias("row_id"),
            F.col("format").alias("input_kind"),
            "size_bytes",
            "source_mtime_ns",
        )
        quarantined = write_quarantine(
            quarantine_rows(bad.unionByName(dups), stage="bronze", run_id=run_id, now=now),
            settings.lake_root,
        )
        return BronzeResult(
            files_seen=len(sources),
            skipped=unread + counts.get("skip", 0),
            rows_added=added,
            quarantined=quarantined,
        )
    finally:
        parsed.unpersist()


def _restamp(spark: SparkSession, skipped: DataFrame, known: KnownFiles, lake_root: Path) -> None:
    """Record the new size and mtime of files read again whose content was already known.

    Such a file (touched, copied back, or found before these columns existed) adds no row;
    updating its existing row is what lets the next run skip it unread.
    """
    stamps = [
        (r["source_uri"], r["sha256"], r["size_bytes"], r["source_mtime_ns"])
        for r in skipped.select("source_uri", "sha256", "size_bytes", "source_mtime_ns").collect()
        if r["source_mtime_ns"] is not None
    ]
    if not stamps:
        return
    fresh = spark.createDataFrame(
        stamps, "source_uri string, sha256 string, _size long, _mtime long"
    )
    for table, key in (
        (tables.ECG_RAW, "record_key"),
        (tables.ECHO_RAW, "record_key"),
        (tables.QUARANTINE, "quarantine_key"),
    ):
        if not any(known.where.get((u, s)) == table for u, s, _, _ in stamps):
            continue
        rows = lake.read_table(spark, table, lake_root=lake_root)
        if table == tables.QUARANTINE:
            rows = rows.where(F.col("stage") == "bronze")
        columns = rows.columns
        updated = (
            rows.join(F.broadcast(fresh), ["source_uri", "sha256"])
            .withColumn("source_mtime_ns", F.col("_mtime"))
            .withColumn("size_bytes", F.col("_size"))
            .select(*columns)
        )
        lake.merge_table(updated, table, lake_root=lake_root, keys=[key], when_matched="update")
        logger.info("%s: recorded the new mtime of %d unchanged files", table, len(stamps))


def source_files(inventory: LandingInventory, kind: str) -> list[SourceFile]:
    """The inventory's tabular sources of one kind (``labs_csv``, ``notes_csv``, ``labels_csv``)."""
    return inventory.by_format(kind)  # type: ignore[arg-type]
