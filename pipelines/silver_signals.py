"""Silver ECG and echo: decoded, standardised signals with their beat and keyframe landmarks.

ECG: standard-lead-named float32 mV arrays resampled to the canonical rate, quality flags,
R-peak sample indices and heart rate. Echo: 112x112 grayscale uint8 frames, frame times, the
LV-cavity area curve measured from the images, ED/ES frame indices, DICOM R-wave times.
Each record is processed in a Spark task (``mapInArrow``) straight from its source file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StringType, StructField, StructType
from scipy.signal import resample_poly

from cardiolake import lake, tables
from cardiolake.domain import STANDARD_LEADS
from pipelines import schemas
from pipelines.ecg_source import STANDARD_ALIASES, EcgSource, read_ecg_source
from pipelines.echo_source import read_echo_clip
from pipelines.quarantine import merge_new, quarantine_rows, unprocessed, write_quarantine
from pipelines.readers import EchoClip, InputError
from pipelines.settings import IngestSettings
from pipelines.signal.echo_keyframes import detect_keyframes, lv_area_curve
from pipelines.signal.intervals import measure_intervals
from pipelines.signal.rpeaks import detect_rpeaks_multilead

logger = logging.getLogger(__name__)

#: Non-standard leads that stand in for a standard one (modified chest lead 1 ~ V1).
_STANDARD_STAND_INS = {**STANDARD_ALIASES, "MCL1": "V1"}


def resample(signal: np.ndarray, fs_in: float, fs_out: int) -> np.ndarray:
    """Polyphase resampling along axis 0 (anti-aliased), float32 out."""
    if abs(fs_in - fs_out) < 1e-9:
        return signal.astype(np.float32, copy=False)
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    out = resample_poly(signal, ratio.numerator, ratio.denominator, axis=0)
    return np.asarray(out, dtype=np.float32)


def quality_flags(signals: np.ndarray, fs: int) -> list[str]:
    """Flat line, clipping and noise flags of a (n, leads) mV signal."""
    flags: list[str] = []
    if signals.shape[0] < 2 * fs:
        flags.append("short")
    std = signals.std(axis=0)
    if (std < 0.01).any():
        flags.append("flat_line")
    lo, hi = signals.min(axis=0), signals.max(axis=0)
    at_rail = ((signals >= hi - 1e-6) | (signals <= lo + 1e-6)).mean(axis=0)
    if (at_rail > 0.01).any() and (hi - lo > 0.05).all():
        flags.append("clipping")
    # share of power above 40 Hz (EMG, mains): large on noisy recordings
    spectrum = np.abs(np.fft.rfft(signals - signals.mean(axis=0), axis=0)) ** 2
    freqs = np.fft.rfftfreq(signals.shape[0], 1.0 / fs)
    hf = spectrum[freqs > 40].sum(axis=0) / np.maximum(spectrum[freqs > 0.5].sum(axis=0), 1e-12)
    if (hf > 0.3).any():
        flags.append("noisy")
    return flags


def standardise_ecg(source: EcgSource, fs_out: int) -> dict[str, Any]:
    """The silver ECG fields of a decoded source: standard leads at ``fs_out`` plus landmarks."""
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(source.lead_names):
        lead = _STANDARD_STAND_INS.get(name, name)
        if lead in STANDARD_LEADS and lead not in columns:
            columns[lead] = source.signals_mv[:, j]
    if not columns:
        raise InputError(
            "no_standard_lead", f"no standard lead among {source.lead_names}", uri=source.uri
        )
    present = [lead for lead in STANDARD_LEADS if lead in columns]
    stacked = resample(np.stack([columns[lead] for lead in present], axis=1), source.fs, fs_out)
    rpeaks = detect_rpeaks_multilead(stacked, fs_out)
    intervals = measure_intervals(stacked, present, rpeaks, fs_out)
    rr = np.diff(rpeaks) / fs_out
    hr = float(60.0 / np.median(rr)) if rr.size else None
    row: dict[str, Any] = {
        "fs": fs_out,
        "source_fs": float(source.fs),
        "n_samples": int(stacked.shape[0]),
        "duration_s": stacked.shape[0] / fs_out,
        "leads": present,
        "quality_flags": quality_flags(stacked, fs_out),
        "rpeaks": rpeaks.astype(np.int32),
        "heart_rate_bpm": hr,
        **intervals.as_row(),
    }
    for lead in STANDARD_LEADS:
        row[schemas.lead_column(lead)] = (
            stacked[:, present.index(lead)] if lead in present else None
        )
    return row


def standardise_echo(clip: EchoClip) -> dict[str, Any]:
    """The silver echo fields of a decoded clip: 112x112 frames, LV area, ED/ES frames."""
    frames = np.ascontiguousarray(clip.frames_112, dtype=np.uint8)
    flags: list[str] = []
    empty = np.empty(0, dtype=np.int32)
    try:
        area = lv_area_curve(frames)
        keys = detect_keyframes(area, clip.frame_times_s)
        ed, es = keys.ed_idx.astype(np.int32), keys.es_idx.astype(np.int32)
        ed_s, es_s = np.asarray(keys.ed_s, float), np.asarray(keys.es_s, float)
    except ValueError:
        # not every clip shows a segmentable LV (other views, colour Doppler, 2 frames):
        # keep the clip for pretraining, flag it, and leave alignment nothing to match
        area, ed, es = None, empty, empty
        ed_s = es_s = np.empty(0, dtype=float)
        flags.append("no_lv_found")
    if area is not None and ed.size == 0:
        flags.append("no_keyframes")
    view = str(clip.header.get("view") or clip.header.get("SeriesDescription") or "A4C")
    return {
        "source_format": clip.source_format,
        "view": view,
        "n_frames": int(frames.shape[0]),
        "size": int(frames.shape[1]),
        "frames": frames.tobytes(),
        "frame_times_s": np.asarray(clip.frame_times_s, dtype=np.float64),
        "fps": float(clip.fps),
        "lv_area": None if area is None else np.asarray(area, dtype=np.float32),
        "ed_frames": ed,
        "es_frames": es,
        "ed_times_s": ed_s,
        "es_times_s": es_s,
        "r_wave_times_s": None
        if clip.r_wave_times_s is None
        else np.asarray(clip.r_wave_times_s, float),
        "synchronized": bool(clip.synchronized),
        "quality_flags": flags,
    }


def pending_count(
    source: tables.Table,
    *,
    done: tables.Table,
    done_column: str = "record_key",
    stage: str,
    lake_root: Path,
) -> int | None:
    """How many rows :func:`pipelines.quarantine.unprocessed` would return, counted cheaply.

    The same anti-join on key columns only, read with delta-rs on the driver (no Spark job,
    no signal column), so a stage with nothing to do returns before it plans anything.

    Returns:
        The number of pending source rows, or None when the source table does not exist.
    """
    work = pending_work(source, done=done, done_column=done_column, stage=stage,
                        lake_root=lake_root)  # fmt: skip
    return None if work is None else work[0]


def pending_work(
    source: tables.Table,
    *,
    done: tables.Table,
    done_column: str = "record_key",
    stage: str,
    lake_root: Path,
) -> tuple[int, int] | None:
    """:func:`pending_count`'s rows, and the source bytes behind them (``size_bytes``, where
    the source records it: 0 otherwise), so a stage sizes its partitions by input bytes."""
    if not lake.table_exists(source, lake_root=lake_root):
        return None
    try:
        frame = lake.read_arrow(source, lake_root=lake_root, columns=["record_key", "size_bytes"])
    except Exception:  # noqa: BLE001 - a source without file sizes: rows are all we size by
        frame = lake.read_arrow(source, lake_root=lake_root, columns=["record_key"])
    keys = frame["record_key"].cast(pa.string())
    sizes = frame["size_bytes"] if "size_bytes" in frame.column_names else None
    blocks: list[pa.Array] = []
    if lake.table_exists(done, lake_root=lake_root):
        out = lake.read_arrow(done, lake_root=lake_root, columns=[done_column])[done_column]
        out = out.combine_chunks()
        blocks.append(pc.list_flatten(out) if pa.types.is_list(out.type) else out)
    if lake.table_exists(tables.QUARANTINE, lake_root=lake_root):
        q = lake.read_arrow(tables.QUARANTINE, lake_root=lake_root, columns=["stage", "sha256"])
        blocks.append(q.filter(pc.equal(q["stage"], stage))["sha256"].combine_chunks())
    if not len(keys):
        return 0, 0
    pending = pa.array(np.ones(len(keys), dtype=bool))
    if blocks:
        known = pc.drop_null(pa.concat_arrays([b.cast(pa.string()) for b in blocks]))
        pending = pc.invert(pc.fill_null(pc.is_in(keys, value_set=known), False))
    rows = int(pc.sum(pending.cast(pa.int64())).as_py() or 0)
    size = 0
    if sizes is not None and rows:
        size = int(pc.sum(pc.fill_null(pc.filter(sizes, pending), 0)).as_py() or 0)
    return rows, size


def row_bytes(row: dict[str, Any]) -> int:
    """About how many bytes ``row`` adds to an Arrow batch (its payload dominates)."""
    total = 0
    for value in row.values():
        if isinstance(value, bytes | bytearray | str):
            total += len(value)
        elif isinstance(value, np.ndarray):
            total += int(value.nbytes)
        elif isinstance(value, list | tuple):
            total += 8 * len(value)
        else:
            total += 8
    return total


def _task(
    process: Callable[[dict[str, Any]], dict[str, Any]],
    out_schema: StructType,
    max_batch_bytes: int,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        schema = to_arrow_schema(out_schema, timezone="UTC")
        rows: list[dict[str, Any]] = []
        held = 0
        for batch in batches:
            for item in batch.to_pylist():
                # an output batch is cut by bytes, not by input rows: a batch of decoded
                # frames past 2 GiB cannot be built, and a smaller one caps worker memory
                if rows and held >= max_batch_bytes:
                    yield pa.RecordBatch.from_pylist(rows, schema=schema)
                    rows, held = [], 0
                base = {"record_key": item["record_key"], "source_uri": item["source_uri"]}
                try:
                    rows.append({**item, **process(item), "target": "silver"})
                except InputError as exc:
                    rows.append(
                        {
                            **base,
                            "sha256": item.get("sha256"),
                            "target": "quarantine",
                            "reason": exc.reason,
                            "detail": str(exc)[:500],
                        }
                    )
                except Exception as exc:  # noqa: BLE001 - one bad record must not stop the batch
                    detail = f"{item['source_uri']}: {type(exc).__name__}: {exc}"[:500]
                    rows.append(
                        {
                            **base,
                            "sha256": item.get("sha256"),
                            "target": "quarantine",
                            "reason": "processing_failed",
                            "detail": detail,
                        }
                    )
                held += row_bytes(rows[-1])
        if rows:
            yield pa.RecordBatch.from_pylist(rows, schema=schema)

    return run


def _with_outcome(schema: StructType) -> StructType:
    extra = [StructField(n, StringType()) for n in ("target", "sha256", "reason", "detail")]
    return StructType([*schema.fields, *[f for f in extra if f.name not in schema.fieldNames()]])


def _run_stage(
    spark: SparkSession,
    settings: IngestSettings,
    *,
    source: tables.Table,
    target: tables.Table,
    schema: StructType,
    process: Callable[[dict[str, Any]], dict[str, Any]],
    inputs: list[str],
    stage: str,
    run_id: str,
    now: Any,
) -> tuple[int, dict[str, int]]:
    work = pending_work(source, done=target, stage=stage, lake_root=settings.lake_root)
    if not work or not work[0]:
        return 0, {}
    todo = unprocessed(spark, source, done=target, stage=stage, lake_root=settings.lake_root)
    if todo is None:
        return 0, {}
    todo = todo.select(*inputs).repartition(settings.partitions_for(*work))
    out_schema = _with_outcome(StructType([f for f in schema.fields if f.name != "run_id"]))
    done = todo.mapInArrow(
        _task(process, out_schema, settings.max_batch_bytes), out_schema
    ).persist()
    try:
        rows = done.where(F.col("target") == "silver").withColumn("run_id", F.lit(run_id))
        rows = schemas.conform(rows, schema)
        added = merge_new(rows, target, settings.lake_root, keys=["record_key"])
        bad = done.where(F.col("target") == "quarantine").select(
            "source_uri",
            "sha256",
            "reason",
            "detail",
            F.lit(None).cast("string").alias("row_id"),
            F.lit(source.name).alias("input_kind"),
        )
        quarantined = write_quarantine(
            quarantine_rows(bad, stage=stage, run_id=run_id, now=now), settings.lake_root
        )
        return added, quarantined
    finally:
        done.unpersist()


def silver_ecg(
    spark: SparkSession, settings: IngestSettings, *, run_id: str, now: Any
) -> tuple[int, dict[str, int]]:
    """Decode the new bronze ECGs into silver ``ecg``; returns rows added and quarantined."""
    fs = settings.canonical_fs

    def process(item: dict[str, Any]) -> dict[str, Any]:
        fmt = "dicom" if item["format"] == "dicom_ecg" else "wfdb"
        source = read_ecg_source(item["source_uri"], fmt)
        return standardise_ecg(source, fs)

    return _run_stage(
        spark,
        settings,
        source=tables.ECG_RAW,
        target=tables.ECG,
        schema=schemas.ECG,
        process=process,
        stage="silver_ecg",
        run_id=run_id,
        now=now,
        inputs=[
            "record_key",
            "sha256",
            "source_uri",
            "format",
            "patient_key",
            "device_kind",
            "acquisition_time",
        ],
    )


def silver_echo(
    spark: SparkSession, settings: IngestSettings, *, run_id: str, now: Any
) -> tuple[int, dict[str, int]]:
    """Decode the new bronze echoes into silver ``echo``; returns rows added and quarantined."""

    def process(item: dict[str, Any]) -> dict[str, Any]:
        return standardise_echo(read_echo_clip(item["source_uri"], item["format"]))

    return _run_stage(
        spark,
        settings,
        source=tables.ECHO_RAW,
        target=tables.ECHO,
        schema=schemas.ECHO,
        process=process,
        stage="silver_echo",
        run_id=run_id,
        now=now,
        inputs=["record_key", "sha256", "source_uri", "format", "patient_key", "acquisition_time"],
    )
