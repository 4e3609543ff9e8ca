"""Spark schemas of the bronze, silver, gold and quarantine tables.

Later stages import these (and the table names in :mod:`cardiolake.tables`), never the jobs.
Signal arrays are ``array<float>`` (Arrow ``list<float32>``) so Petastorm reads them fast;
echo frames are one ``binary`` of ``n_frames x size x size`` uint8 pixels.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DataType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from cardiolake.domain import FINDINGS, STANDARD_LEADS


def _struct(*fields: tuple[str, DataType]) -> StructType:
    return StructType([StructField(name, dtype, nullable=True) for name, dtype in fields])


#: Columns added to existing tables after they were first written (all nullable): a writer
#: whose rows lack one gets nulls, and :func:`add_missing_columns` widens an older table.
ADDED_COLUMNS = frozenset({"source_mtime_ns", "size_bytes"})


def conform(df: DataFrame, schema: StructType) -> DataFrame:
    """Select a table's columns in its order, cast to its types (what every writer passes).

    A column of :data:`ADDED_COLUMNS` the rows lack is filled with nulls, so writers that
    predate it (the quality gates writing quarantine rows) need no change.
    """
    have = set(df.columns)
    return df.select(
        *[
            F.col(f.name).cast(f.dataType)
            if f.name in have or f.name not in ADDED_COLUMNS
            else F.lit(None).cast(f.dataType).alias(f.name)
            for f in schema.fields
        ]
    )


def lead_column(lead: str) -> str:
    """Silver column holding one standard lead (``lead_I`` ... ``lead_V6``)."""
    return f"lead_{lead}"


_S, _L, _D, _I, _B, _T = (
    StringType(),
    LongType(),
    DoubleType(),
    IntegerType(),
    BooleanType(),
    TimestampType(),
)
_FLOATS = ArrayType(FloatType())

QUARANTINE = _struct(
    ("quarantine_key", _S),  # sha256(stage | uri | sha256 | row_id | reason): re-runs add nothing
    ("stage", _S),
    ("input_kind", _S),
    ("source_uri", _S),
    ("sha256", _S),
    ("row_id", _S),
    ("reason", _S),
    ("detail", _S),
    ("run_id", _S),
    ("quarantined_at", _T),
    # bronze rows only: the file's size and newest modification time (ns) when it was found,
    # so the next run skips it unread while both are unchanged (null: found before these)
    ("size_bytes", _L),
    ("source_mtime_ns", _L),
)

#: Newest modification time (ns) of the record's files when found; with ``size_bytes`` it lets
#: discovery skip unchanged files without reading them (null in tables written before it).
_SOURCE_MTIME = ("source_mtime_ns", _L)

_FILE_COMMON = (
    ("record_key", _S),  # the content's SHA-256: the same bytes are one record
    ("source_uri", _S),
    ("sha256", _S),
    ("size_bytes", _L),
    ("format", _S),
    ("patient_key", _S),
    ("acquisition_time", _T),  # on the acquiring device's clock
    ("header_fields", MapType(_S, _S)),
    ("header_json", _S),
)

ECG_RAW = _struct(
    *_FILE_COMMON,
    ("device_kind", _S),
    ("fs", _D),
    ("n_samples", _L),
    ("lead_names", ArrayType(_S)),
    ("run_id", _S),
    ("ingest_time", _T),
    _SOURCE_MTIME,
)

ECHO_RAW = _struct(
    *_FILE_COMMON,
    ("n_frames", _I),
    ("height", _I),
    ("width", _I),
    ("fps", _D),
    ("synchronized", _B),
    ("has_r_wave_vector", _B),
    ("run_id", _S),
    ("ingest_time", _T),
    _SOURCE_MTIME,
)

#: Size and modification time (ns) of the export file a tabular row was read from (null in
#: tables written before them): discovery skips an export unread while both are unchanged.
_EXPORT_STAT = (("size_bytes", _L), _SOURCE_MTIME)

#: One row per CSV export file bronze read: a file that gave no row (a header-only export)
#: is still known by path, size and mtime, so the next run skips it unread.
EXPORT_FILES = _struct(
    ("source_uri", _S),
    ("input_kind", _S),
    ("size_bytes", _L),
    ("source_mtime_ns", _L),
    ("rows", _L),
    ("run_id", _S),
    ("ingest_time", _T),
)

LABS_RAW = _struct(
    ("record_key", _S),
    ("source_uri", _S),
    ("specimen_id", _S),
    ("patient_key", _S),
    ("loinc", _S),
    ("test_name", _S),
    ("value", _S),
    ("unit", _S),
    ("draw_time", _S),
    ("run_id", _S),
    ("ingest_time", _T),
    *_EXPORT_STAT,
)

NOTES_RAW = _struct(
    ("record_key", _S),
    ("source_uri", _S),
    ("note_id", _S),
    ("patient_key", _S),
    ("note_time", _S),
    ("author", _S),
    ("text_sha256", _S),
    ("text_chars", _I),
    ("run_id", _S),
    ("ingest_time", _T),
    *_EXPORT_STAT,
)  # no note text in bronze: raw notes carry identifiers

LABELS_RAW = _struct(
    ("record_key", _S),
    ("source_uri", _S),
    ("label_id", _S),
    ("patient_key", _S),
    ("exam_time", _S),
    ("label_time", _S),
    ("reader", _S),
    ("triage", _S),
    *((f, _S) for f in FINDINGS),
    ("run_id", _S),
    ("ingest_time", _T),
    *_EXPORT_STAT,
)

ECG = _struct(
    ("record_key", _S),
    ("patient_key", _S),
    ("source_uri", _S),
    ("device_kind", _S),
    ("acquisition_time", _T),
    ("fs", _I),  # the canonical rate
    ("source_fs", _D),
    ("n_samples", _I),
    ("duration_s", _D),
    ("leads", ArrayType(_S)),  # standard leads present, in STANDARD_LEADS order
    *((lead_column(lead), _FLOATS) for lead in STANDARD_LEADS),
    ("quality_flags", ArrayType(_S)),
    ("rpeaks", ArrayType(_I)),  # sample indices at the canonical rate
    ("heart_rate_bpm", _D),
    # global intervals and frontal axis on the median beat (signal/intervals.py); null when
    # not measurable (no P wave in AF, no limb leads for the axis, too few beats)
    ("pr_ms", _D),
    ("qrs_ms", _D),
    ("qt_ms", _D),
    ("qtc_ms", _D),  # Bazett
    ("axis_deg", _D),
    ("run_id", _S),
)

ECHO = _struct(
    ("record_key", _S),
    ("patient_key", _S),
    ("source_uri", _S),
    ("source_format", _S),
    ("acquisition_time", _T),
    ("view", _S),
    ("n_frames", _I),
    ("size", _I),
    ("frames", BinaryType()),  # n_frames x size x size uint8, row-major
    ("frame_times_s", ArrayType(_D)),
    ("fps", _D),
    ("lv_area", _FLOATS),  # LV cavity area per frame (pixels at size x size)
    ("ed_frames", ArrayType(_I)),
    ("es_frames", ArrayType(_I)),
    ("ed_times_s", ArrayType(_D)),  # sub-frame refined keyframe times (alignment uses these)
    ("es_times_s", ArrayType(_D)),
    ("r_wave_times_s", ArrayType(_D)),  # (0018,6060) when present
    ("synchronized", _B),
    ("quality_flags", ArrayType(_S)),  # e.g. no_lv_found: no keyframes could be measured
    ("run_id", _S),
)

LABS = _struct(
    ("record_key", _S),
    ("patient_key", _S),
    ("specimen_id", _S),
    ("loinc", _S),
    ("analyte", _S),
    ("value", _D),
    ("unit", _S),
    ("original_value", _S),
    ("original_unit", _S),
    ("draw_time", _T),
    ("run_id", _S),
)

NOTES = _struct(
    ("record_key", _S),
    ("patient_key", _S),
    ("note_id", _S),
    ("note_time", _T),
    ("author", _S),
    ("text", _S),
    ("run_id", _S),
)

LABELS = _struct(
    ("exam_key", _S),  # sha256(patient_key | exam_time)
    ("patient_key", _S),
    ("exam_time", _T),
    ("label_time", _T),
    ("triage_urgent", _B),
    *((f, _B) for f in FINDINGS),
    ("n_readers", _I),
    ("readers", ArrayType(_S)),
    ("reader_triage_urgent", ArrayType(_B)),
    ("agreement", _D),
    ("adjudicated", _B),
    ("needs_adjudication", _B),
    ("vote_keys", ArrayType(_S)),  # bronze record keys this label was resolved from
    ("run_id", _S),
)

ALIGNMENT = _struct(
    ("alignment_key", _S),  # sha256(ecg record | echo record | beat)
    ("patient_key", _S),
    ("ecg_record_key", _S),
    ("echo_record_key", _S),
    ("beat", _I),
    ("r_peak_s", _D),  # on the ECG's time axis
    ("ed_s", _D),
    ("es_s", _D),
    ("lag_ed_s", _D),
    ("lag_es_s", _D),
    ("clock_offset_s", _D),  # estimated echo clock minus ECG clock
    ("sync_source", _S),
    ("quality", _D),
    ("ecg_hr_bpm", _D),
    ("echo_cycle_bpm", _D),
    ("run_id", _S),
)
