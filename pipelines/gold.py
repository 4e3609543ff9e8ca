"""Gold: per-beat ECG R-peak <-> echo keyframe alignment and the training example tables.

``alignment`` pairs every silver echo with the same patient's concurrent ECG and records, per
beat, the R peak, the echo's ED/ES keyframes on the ECG's time axis, their lags, the clock
offset and which source of synchrony gave it. The example tables feed the three training
stages; each carries a deterministic patient-level split so no patient straddles splits.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from cardiolake import lake, tables
from cardiolake.domain import FINDINGS, STANDARD_LEADS
from pipelines import schemas
from pipelines.quarantine import (
    GATE_STAGE_PREFIX,
    gate_failed_keys,
    merge_new,
    quarantine_rows,
    write_quarantine,
)
from pipelines.settings import IngestSettings
from pipelines.signal.alignment import AlignmentSettings, align_recording

logger = logging.getLogger(__name__)

_LEADS = [schemas.lead_column(lead) for lead in STANDARD_LEADS]
#: Table property of a gold output: the fingerprint of the inputs its step last finished.
INPUTS_PROPERTY = "cardiolake.gold.inputs"


def inputs_fingerprint(
    lake_root: Path, inputs: tuple[tuple[tables.Table, str], ...], *settings: Any
) -> str:
    """A digest of what a gold step reads: its input tables' versions, which of their rows the
    quality gates failed (what :func:`passed_gates` drops), and the settings that shape its
    rows. Only key columns are read, with delta-rs on the driver.

    Args:
        lake_root: the lake root.
        inputs: each input table with the key column the gates record (``record_key``, ...).
        settings: values the step's output depends on.
    """
    failed = pa.array(sorted(gate_failed_keys(lake_root)), type=pa.string())
    parts: list[str] = [repr(s) for s in settings]
    for table, key in inputs:
        if not lake.table_exists(table, lake_root=lake_root):
            parts.append(f"{table}=absent")
            continue
        parts.append(f"{table}={lake.table_version(table, lake_root=lake_root)}")
        if len(failed):
            keys = lake.read_arrow(table, lake_root=lake_root, columns=[key])[key].cast(pa.string())
            held = keys.filter(pc.is_in(keys, value_set=failed))
            parts += sorted(f"{table}:{k}" for k in held.to_pylist())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _finished(outputs: tuple[tables.Table, ...], lake_root: Path, fingerprint: str) -> bool:
    """Whether the step last finished over exactly these inputs: every table it writes exists
    and carries the fingerprint (a table deleted or rebuilt since makes it run again)."""
    for table in outputs:
        if not lake.table_exists(table, lake_root=lake_root):
            return False
        config = DeltaTable(lake.table_uri(table, lake_root)).metadata().configuration
        if config.get(INPUTS_PROPERTY) != fingerprint:
            return False
    return True


def _mark_finished(outputs: tuple[tables.Table, ...], lake_root: Path, fingerprint: str) -> None:
    """Record on each output table that its step finished over these inputs (a metadata
    commit). Gold rows are a function of the inputs, so the next run with the same fingerprint
    has nothing to add and skips the step without planning a Spark job.
    """
    for table in outputs:
        if lake.table_exists(table, lake_root=lake_root):
            DeltaTable(lake.table_uri(table, lake_root)).alter.set_table_properties(
                {INPUTS_PROPERTY: fingerprint}, raise_if_not_exists=False
            )


def split_column(patient: Column, shares: tuple[float, float, float]) -> Column:
    """Deterministic patient-level split (train / validation / test) from the key's hash."""
    bucket = F.conv(F.substring(F.sha2(patient, 256), 1, 8), 16, 10).cast("double") / float(
        0xFFFFFFFF
    )
    train, val, _ = shares
    return (
        F.when(bucket < train, "train").when(bucket < train + val, "validation").otherwise("test")
    )


#: The alignment task's output: alignment rows, or one row per pair that aligned nothing.
ALIGNMENT_TASK_OUTPUT = StructType(
    [
        *schemas.ALIGNMENT.fields,
        StructField("unaligned_reason", StringType()),
        StructField("echo_source_uri", StringType()),
    ]
)


def unaligned_reason(
    rpeaks_s: np.ndarray, ed_s: np.ndarray, frame_times_s: np.ndarray, r_wave_s: np.ndarray | None
) -> str:
    """Why a concurrent ECG/echo pair gave no aligned beat (a quarantine reason)."""
    if np.asarray(rpeaks_s).size == 0:
        return "unaligned: no_ecg_rpeaks"
    if np.asarray(frame_times_s).size == 0 or np.asarray(ed_s).size == 0:
        return "unaligned: no_echo_keyframes"
    if r_wave_s is not None and np.isfinite(np.asarray(r_wave_s, dtype=float)).sum() >= 2:
        return "unaligned: r_wave_contradicts_keyframes"
    return "unaligned: no_phase_match"


def _alignment_rows(pairs: pd.DataFrame, settings: AlignmentSettings, run_id: str) -> pd.DataFrame:
    out: list[dict[str, Any]] = []
    for pair in pairs.to_dict("records"):
        fs = float(pair["fs"])
        times = np.asarray(pair["frame_times_s"], dtype=float)
        ed = np.asarray(pair["ed_times_s"], dtype=float)
        es = np.asarray(pair["es_times_s"], dtype=float)
        r_wave = pair["r_wave_times_s"]
        result = align_recording(
            ecg_rpeaks_s=np.asarray(pair["rpeaks"], dtype=float) / fs,
            ecg_start=pair["ecg_time"].to_pydatetime().replace(tzinfo=None),
            echo_start=pair["echo_time"].to_pydatetime().replace(tzinfo=None),
            echo_ed_s=ed,
            echo_es_s=es,
            echo_frame_times_s=times,
            dicom_r_wave_s=None if r_wave is None else np.asarray(r_wave, dtype=float),
            synchronized=bool(pair["synchronized"]),
            ecg_duration_s=float(pair["duration_s"]),
            settings=settings,
        )
        has_r_wave = r_wave is not None and np.isfinite(np.asarray(r_wave, dtype=float)).sum() >= 2
        if has_r_wave and result.sync_source != "dicom_r_wave":
            # the clip's own R-wave times contradict its keyframes: whatever a fallback
            # found, the pair is inconsistent and is quarantined rather than promoted
            result = replace(result, beats=())
        if not result.beats:
            # nothing vanishes: the pair is quarantined with the reason it did not align
            key = f"{pair['ecg_record_key']}|{pair['echo_record_key']}|unaligned"
            out.append(
                {
                    "alignment_key": hashlib.sha256(key.encode()).hexdigest(),
                    "patient_key": pair["patient_key"],
                    "ecg_record_key": pair["ecg_record_key"],
                    "echo_record_key": pair["echo_record_key"],
                    "sync_source": result.sync_source,
                    "run_id": run_id,
                    "unaligned_reason": unaligned_reason(
                        np.asarray(pair["rpeaks"], dtype=float), ed, times,
                        None if r_wave is None else np.asarray(r_wave, dtype=float),
                    ),
                    "echo_source_uri": pair.get("echo_source_uri"),
                }
            )  # fmt: skip
        for beat in result.beats:
            key = f"{pair['ecg_record_key']}|{pair['echo_record_key']}|{beat.beat_index}"
            out.append(
                {
                    "alignment_key": hashlib.sha256(key.encode()).hexdigest(),
                    "patient_key": pair["patient_key"],
                    "ecg_record_key": pair["ecg_record_key"],
                    "echo_record_key": pair["echo_record_key"],
                    "beat": int(beat.beat_index),
                    "r_peak_s": float(beat.r_peak_s),
                    "ed_s": _f(beat.ed_s),
                    "es_s": _f(beat.es_s),
                    "lag_ed_s": _f(beat.lag_ed_s),
                    "lag_es_s": _f(beat.lag_es_s),
                    "clock_offset_s": float(result.clock_offset_s),
                    "sync_source": result.sync_source,
                    "quality": _f(beat.quality),
                    "ecg_hr_bpm": _f(result.ecg_hr_bpm),
                    "echo_cycle_bpm": _f(result.echo_cycle_bpm),
                    "run_id": run_id,
                    "unaligned_reason": None,
                    "echo_source_uri": None,
                }
            )
    return pd.DataFrame(out, columns=ALIGNMENT_TASK_OUTPUT.fieldNames())


def _f(value: Any) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def passed_gates(
    spark: SparkSession, df: DataFrame, settings: IngestSettings, *, key: str
) -> DataFrame:
    """Rows the quality gates did not quarantine (gate stages record the row key as row_id)."""
    root = settings.lake_root
    if not lake.table_exists(tables.QUARANTINE, lake_root=root):
        return df
    failed = (
        lake.read_table(spark, tables.QUARANTINE, lake_root=root)
        .where(F.col("stage").startswith(GATE_STAGE_PREFIX) & F.col("row_id").isNotNull())
        .select(F.col("row_id").alias("_failed"))
        .distinct()
    )
    return df.join(failed, df[key] == failed["_failed"], "left_anti")


def concurrent_pairs(spark: SparkSession, settings: IngestSettings) -> DataFrame | None:
    """Each silver echo with the same patient's ECG recorded around it (clock slack allowed)."""
    root = settings.lake_root
    if not (
        lake.table_exists(tables.ECG, lake_root=root)
        and lake.table_exists(tables.ECHO, lake_root=root)
    ):
        return None
    ecg = passed_gates(
        spark, lake.read_table(spark, tables.ECG, lake_root=root), settings, key="record_key"
    )
    echo_silver = passed_gates(
        spark, lake.read_table(spark, tables.ECHO, lake_root=root), settings, key="record_key"
    )
    ecg = ecg.select(
        F.col("record_key").alias("ecg_record_key"),
        "patient_key",
        F.col("acquisition_time").alias("ecg_time"),
        "fs",
        "rpeaks",
        "duration_s",
    )
    echo = echo_silver.select(
        F.col("record_key").alias("echo_record_key"),
        F.col("patient_key").alias("_p"),
        F.col("acquisition_time").alias("echo_time"),
        "frame_times_s",
        "ed_times_s",
        "es_times_s",
        "r_wave_times_s",
        "synchronized",
        F.col("source_uri").alias("echo_source_uri"),
    )
    slack = float(settings.max_clock_offset_s)
    start = F.col("ecg_time").cast("double")
    t = F.col("echo_time").cast("double")
    pairs = ecg.join(
        echo,
        (F.col("patient_key") == F.col("_p"))
        & (t >= start - slack)
        & (t <= start + F.col("duration_s") + slack),
    ).drop("_p")
    if lake.table_exists(tables.ALIGNMENT, lake_root=root):
        done = (
            lake.read_table(spark, tables.ALIGNMENT, lake_root=root)
            .select("ecg_record_key", "echo_record_key")
            .distinct()
        )
        pairs = pairs.join(done, ["ecg_record_key", "echo_record_key"], "left_anti")
    return pairs


def build_alignment(spark: SparkSession, settings: IngestSettings, *, run_id: str) -> int:
    """Align every new concurrent ECG/echo pair beat by beat into gold ``alignment``."""
    root = settings.lake_root
    fingerprint = inputs_fingerprint(
        root,
        ((tables.ECG, "record_key"), (tables.ECHO, "record_key")),
        settings.max_clock_offset_s,
    )
    if _finished((tables.ALIGNMENT,), root, fingerprint):
        logger.info("alignment: inputs unchanged since the last run, nothing to align")
        return 0
    pairs = concurrent_pairs(spark, settings)
    if pairs is None:
        return 0
    align_settings = AlignmentSettings(max_clock_offset_s=settings.max_clock_offset_s)

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            yield _alignment_rows(frame, align_settings, run_id)

    out = pairs.repartition(settings.task_slices).mapInPandas(run, ALIGNMENT_TASK_OUTPUT).persist()
    try:
        rows = out.where(F.col("unaligned_reason").isNull()).select(*schemas.ALIGNMENT.fieldNames())
        added = merge_new(rows, tables.ALIGNMENT, settings.lake_root, keys=["alignment_key"])
        unaligned = out.where(F.col("unaligned_reason").isNotNull()).select(
            F.coalesce("echo_source_uri", F.lit("")).alias("source_uri"),
            F.col("echo_record_key").alias("sha256"),
            F.concat_ws("|", "ecg_record_key", "echo_record_key").alias("row_id"),
            F.lit("ecg_echo_pair").alias("input_kind"),
            F.col("unaligned_reason").alias("reason"),
            F.concat(
                F.lit("ECG "), "ecg_record_key", F.lit(" and echo "), "echo_record_key",
                F.lit(" overlap in time but no beat aligned (sync tried: "), "sync_source",
                F.lit(")"),
            ).alias("detail"),
        )  # fmt: skip
        write_quarantine(
            quarantine_rows(
                unaligned, stage="gold_alignment", run_id=run_id, now=datetime.now(UTC)
            ),
            settings.lake_root,
        )
    finally:
        out.unpersist()
    _mark_finished((tables.ALIGNMENT,), root, fingerprint)
    return added


def _ecg_columns(prefix: str = "") -> list[Column]:
    return [F.col(c).alias(f"{prefix}{c}") for c in ("fs", "n_samples", "leads", *_LEADS)]


def build_examples(spark: SparkSession, settings: IngestSettings, *, run_id: str) -> dict[str, int]:
    """Fill the three gold example tables from silver and the alignment (new keys only)."""
    root = settings.lake_root
    added: dict[str, int] = {}
    if not lake.table_exists(tables.ECG, lake_root=root):
        return added
    fingerprint = inputs_fingerprint(
        root,
        (
            (tables.ECG, "record_key"),
            (tables.ECHO, "record_key"),
            (tables.ALIGNMENT, "alignment_key"),
            (tables.LABELS, "exam_key"),
        ),
        settings.split_shares,
    )
    outputs = _example_outputs(root)
    if _finished(outputs, root, fingerprint):
        logger.info("examples: inputs unchanged since the last run, nothing to add")
        return {t.name: 0 for t in _EXAMPLE_TABLES}
    ecg = passed_gates(
        spark, lake.read_table(spark, tables.ECG, lake_root=root), settings, key="record_key"
    ).where(F.col("patient_key").isNotNull())
    split = split_column(F.col("patient_key"), settings.split_shares)

    # 1. pretraining: every usable ECG and echo recording, per modality (no labels needed)
    ecg_rows = ecg.where(F.size("rpeaks") > 0).select(
        F.col("record_key").alias("example_key"),
        F.lit("ecg").alias("modality"),
        "record_key",
        "patient_key",
        split.alias("split"),
        "device_kind",
        "heart_rate_bpm",
        *_ecg_columns(),
        F.lit(None).cast("binary").alias("frames"),
        F.lit(None).cast("int").alias("n_frames"),
        F.lit(None).cast("int").alias("size"),
        F.lit(None).cast("double").alias("fps"),
        F.lit(run_id).alias("run_id"),
    )
    pretrain = ecg_rows
    if lake.table_exists(tables.ECHO, lake_root=root):
        echo = passed_gates(
            spark, lake.read_table(spark, tables.ECHO, lake_root=root), settings, key="record_key"
        ).where(F.col("patient_key").isNotNull())
        echo_rows = echo.select(
            F.col("record_key").alias("example_key"),
            F.lit("echo").alias("modality"),
            "record_key",
            "patient_key",
            split.alias("split"),
            F.lit(None).cast("string").alias("device_kind"),
            F.lit(None).cast("double").alias("heart_rate_bpm"),
            F.lit(None).cast("int").alias("fs"),
            F.lit(None).cast("int").alias("n_samples"),
            F.lit(None).cast("array<string>").alias("leads"),
            *[F.lit(None).cast("array<float>").alias(c) for c in _LEADS],
            "frames",
            "n_frames",
            "size",
            "fps",
            F.lit(run_id).alias("run_id"),
        )
        pretrain = pretrain.unionByName(echo_rows)
    added["examples_pretrain"] = merge_new(
        pretrain, tables.EXAMPLES_PRETRAIN, root, keys=["example_key"]
    )

    # 2. cross-modal alignment: one example per aligned ECG/echo pair with its beat landmarks
    if lake.table_exists(tables.ALIGNMENT, lake_root=root) and lake.table_exists(
        tables.ECHO, lake_root=root
    ):
        beats = passed_gates(
            spark,
            lake.read_table(spark, tables.ALIGNMENT, lake_root=root),
            settings,
            key="alignment_key",
        )
        per_pair = beats.groupBy("patient_key", "ecg_record_key", "echo_record_key").agg(
            F.first("clock_offset_s").alias("clock_offset_s"),
            F.first("sync_source").alias("sync_source"),
            F.count("*").alias("n_beats"),
            F.sort_array(F.collect_list(F.struct("beat", "r_peak_s", "ed_s", "es_s"))).alias("_b"),
        )
        echo = lake.read_table(spark, tables.ECHO, lake_root=root).select(
            F.col("record_key").alias("echo_record_key"),
            F.col("acquisition_time").alias("_echo_time"),
            "frames",
            "n_frames",
            "size",
            "fps",
            "frame_times_s",
        )
        align = (
            per_pair.join(
                ecg.select(
                    F.col("record_key").alias("ecg_record_key"),
                    F.col("acquisition_time").alias("_ecg_time"),
                    *_ecg_columns(),
                ),
                "ecg_record_key",
            )
            .join(echo, "echo_record_key")
            .select(
                F.sha2(F.concat_ws("|", "ecg_record_key", "echo_record_key"), 256).alias(
                    "example_key"
                ),
                "patient_key",
                split.alias("split"),
                "ecg_record_key",
                "echo_record_key",
                "clock_offset_s",
                # the clip's first frame on the ECG's time axis: echo frame time of a keyframe
                # at ECG time t is t - clip_start_s (see pipelines.signal.alignment)
                (
                    F.col("_echo_time").cast("double")
                    - F.col("_ecg_time").cast("double")
                    - F.col("clock_offset_s")
                ).alias("clip_start_s"),
                "sync_source",
                F.col("n_beats").cast("int").alias("n_beats"),
                F.col("_b.r_peak_s").alias("r_peaks_s"),
                F.col("_b.ed_s").alias("ed_s"),
                F.col("_b.es_s").alias("es_s"),
                "fs",
                "n_samples",
                "leads",
                *_LEADS,
                "frames",
                "n_frames",
                "size",
                "fps",
                "frame_times_s",
                F.lit(run_id).alias("run_id"),
            )
        )
        added["examples_align"] = merge_new(
            align, tables.EXAMPLES_ALIGN, root, keys=["example_key"]
        )

    # 3. labelled: resolved exams with the 12-lead ECG taken closest to the exam time
    if lake.table_exists(tables.LABELS, lake_root=root):
        labels = passed_gates(
            spark, lake.read_table(spark, tables.LABELS, lake_root=root), settings, key="exam_key"
        ).where(F.col("triage_urgent").isNotNull() & ~F.col("needs_adjudication"))
        rest = ecg.where(F.col("device_kind") == "resting_12lead").select(
            F.col("record_key").alias("ecg_record_key"),
            F.col("patient_key").alias("_p"),
            F.col("acquisition_time").alias("_t"),
            *_ecg_columns(),
        )
        gap = F.abs(F.col("_t").cast("double") - F.col("exam_time").cast("double"))
        joined = labels.join(rest, (F.col("patient_key") == F.col("_p")) & (gap <= 86400.0))
        ranked = joined.withColumn(
            "_rank", F.row_number().over(_by_exam().orderBy(gap, F.col("ecg_record_key")))
        ).where(F.col("_rank") == 1)
        labeled = ranked.select(
            F.col("exam_key").alias("example_key"),
            "exam_key",
            "patient_key",
            split.alias("split"),
            "exam_time",
            "label_time",
            "triage_urgent",
            *FINDINGS,
            "adjudicated",
            "agreement",
            "ecg_record_key",
            "fs",
            "n_samples",
            "leads",
            *_LEADS,
            F.lit(run_id).alias("run_id"),
        )
        added["examples_labeled"] = merge_new(
            labeled, tables.EXAMPLES_LABELED, root, keys=["example_key"]
        )
    _mark_finished(outputs, root, fingerprint)
    return added


_EXAMPLE_TABLES = (tables.EXAMPLES_PRETRAIN, tables.EXAMPLES_ALIGN, tables.EXAMPLES_LABELED)


def _example_outputs(root: Path) -> tuple[tables.Table, ...]:
    """The example tables :func:`build_examples` writes given which inputs exist."""
    out = [tables.EXAMPLES_PRETRAIN]
    if lake.table_exists(tables.ALIGNMENT, lake_root=root) and lake.table_exists(
        tables.ECHO, lake_root=root
    ):
        out.append(tables.EXAMPLES_ALIGN)
    if lake.table_exists(tables.LABELS, lake_root=root):
        out.append(tables.EXAMPLES_LABELED)
    return tuple(out)


def _by_exam() -> Any:
    from pyspark.sql import Window

    return Window.partitionBy("exam_key")


__all__ = ["build_alignment", "build_examples", "concurrent_pairs", "split_column"]
