"""Batch scoring of a cohort's mobile recordings with a registered device model, on Spark.

``score_cohort`` resolves a ``cardiolake-student`` version (alias or number), fetches its
files once (checked against the SHA-256 the export recorded), ships the model to the workers
(``SparkContext.addFile``) and scores recordings in ``mapInPandas`` tasks with one onnxruntime
session per Python worker. Recordings come from a landing folder, read by the ingestion's own
reader (:func:`pipelines.ecg_source.read_ecg_source`: same lead naming, same size checks, same
patient keys), or from a silver ECG table. Each goes through the device preprocessing
(:func:`serving.device_script.preprocess`) — the same code the bundle's script runs, so a
device and the batch agree on every score.

Output: ``scoring.predictions`` (merge on ``prediction_key`` = model version x recording, so a
re-run adds nothing and a new version adds its own rows); unreadable recordings and those that
fail the signal-quality check go to quarantine (stage ``scoring``) with a reason while the rest
is scored; the run's drift figures go to ``monitoring.drift`` with a PNG report
(:mod:`serving.monitoring`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cardiolake import lake, tables
from cardiolake.tracking import DEVICE_MODEL
from serving.artifacts import DEVICE_DIR, FP32_FILE, HASH_TAG, INT8_FILE, REFERENCE_FILE, SPEC_FILE
from serving.monitoring import DriftThresholds

logger = logging.getLogger(__name__)

#: Quarantine stage of scoring rejections.
STAGE = "scoring"
#: Columns of ``scoring.predictions`` (in order).
PREDICTION_COLUMNS = (
    "prediction_key", "model_name", "model_version", "model_alias", "precision",
    "patient_key", "recording_key", "source_uri", "source_sha256", "lead_set", "n_leads",
    "source_fs", "seconds", "windows", "logit", "score", "threshold", "decision",
    "rms_mv", "range_mv", "clipped_fraction", "quality_flags", "run_id", "scored_at",
)  # fmt: skip


@dataclass(frozen=True)
class ScoringSettings:
    """``cardiolake score`` (YAML section ``score:``).

    Attributes:
        alias: the device-model alias (or version number) to score with.
        precision: ``int8`` or ``fp32`` (None: what the version ships).
        reject_flags: signal-quality flags that send a recording to quarantine.
        min_seconds: recordings shorter than this are flagged ``short``.
        partitions: Spark partitions (None: 4 per core).
        drift: when the monitoring figures alert.
    """

    alias: str = "champion"
    precision: str | None = None
    reject_flags: tuple[str, ...] = ("flat_line", "short")
    min_seconds: float = 5.0
    partitions: int | None = None
    drift: DriftThresholds = DriftThresholds()


@dataclass(frozen=True)
class ModelFiles:
    """A device-model version's files on local disk, checked."""

    name: str
    version: str
    alias: str | None
    precision: str
    model: Path
    spec: dict[str, Any]
    reference: dict[str, Any] | None


def fetch_model(ref: str, cache: Path, precision: str | None = None) -> ModelFiles:
    """Download (once) and check a version's files; ``ref`` is an alias or a number.

    Raises:
        serving.registry.PromotionError: unknown alias or version.
        ValueError: a file does not match the hash the export recorded.
    """
    import mlflow

    from serving.device_script import sha256
    from serving.registry import figures, resolve

    version = resolve(ref)
    client = mlflow.MlflowClient()
    mv = client.get_model_version(DEVICE_MODEL, version)
    shipped = precision or str(figures(version).get("shipped", "fp32"))
    folder = cache / DEVICE_MODEL / f"v{version}"
    if not (folder / DEVICE_DIR / SPEC_FILE).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=DEVICE_DIR,
                                            dst_path=str(folder))  # fmt: skip
    local = folder / DEVICE_DIR
    name = FP32_FILE if shipped == "fp32" else INT8_FILE
    recorded = (mv.tags or {}).get(f"{HASH_TAG}{name}")
    digest = sha256(local / name)
    if recorded is not None and digest != recorded:
        raise ValueError(f"{local / name} does not match {DEVICE_MODEL} v{version}'s hash")
    # SparkFiles are keyed by file name for the life of the SparkContext, and a second file of
    # the same name with other bytes fails every later task: name the copy by its content
    model = folder / "spark" / f"{digest[:16]}-{name}"
    if not model.is_file() or sha256(model) != digest:
        model.parent.mkdir(exist_ok=True)
        shutil.copyfile(local / name, model)
    ref_path = local / REFERENCE_FILE
    return ModelFiles(DEVICE_MODEL, version, None if ref.isdigit() else ref, shipped,
                      model, json.loads((local / SPEC_FILE).read_text()),
                      json.loads(ref_path.read_text()) if ref_path.is_file() else None)  # fmt: skip


def prediction_key(model: str, version: str, recording_key: str) -> str:
    """One prediction per model version and recording."""
    return hashlib.sha256(f"{model}|{version}|{recording_key}".encode()).hexdigest()


_SESSIONS: dict[str, Any] = {}


def _session(path: str) -> Any:
    """One onnxruntime session per Python worker and model file (reused across tasks)."""
    if path not in _SESSIONS:
        from serving.latency import ort_session

        _SESSIONS[path] = ort_session(Path(path), threads=1)
    return _SESSIONS[path]


@dataclass(frozen=True)
class _Job:
    """What every task needs (pickled once into the task closure)."""

    model_file: str  # name under SparkFiles, or a local path
    spec: dict[str, Any]
    model: str
    version: str
    alias: str | None
    precision: str
    secret: str
    reject_flags: tuple[str, ...]
    min_seconds: float
    run_id: str
    scored_at: dt.datetime
    done: frozenset[str] = frozenset()  # recording keys this version already scored


def _model_path(job: _Job) -> str:
    from pyspark import SparkFiles

    try:
        path = SparkFiles.get(job.model_file)
        if Path(path).is_file():
            return path
    except Exception:  # noqa: BLE001 - outside Spark (the Python loop): a local path
        pass
    return job.model_file


def score_recording(rec: Any, job: _Job, session: Any) -> dict[str, Any]:
    """Score one decoded recording (``serving.device_script.Recording``): a prediction row's
    fields, or ``{"reason": ..., "detail": ...}`` when it fails the signal-quality check.
    """
    from serving.device_script import decide, preprocess
    from serving.monitoring import input_stats, lead_set_name, quality_flags

    spec = job.spec
    windows, mask = preprocess(rec, spec)
    seconds = rec.signal.shape[1] / rec.fs
    flags = quality_flags(windows, mask, int(spec["rate_hz"]), float(spec["clip_mv"]), seconds,
                          job.min_seconds)  # fmt: skip
    rejected = [f for f in flags if f in job.reject_flags]
    if rejected:
        return {
            "reason": f"signal_quality_{rejected[0]}",
            "detail": f"{rec.name}: failed the signal-quality check ({', '.join(rejected)})",
        }
    masks = np.repeat(mask[None], len(windows), axis=0)
    names = spec["input_names"]
    logits = session.run([spec["output_name"]], {names[0]: windows, names[1]: masks})[0]
    mean = float(logits[:, 0].astype(np.float64).mean())
    leads = [lead for lead, m in zip(spec["leads"], mask, strict=True) if m > 0]
    result = decide(mean, len(leads), spec)
    return {"lead_set": lead_set_name(leads), "n_leads": len(leads), "source_fs": float(rec.fs),
            "seconds": float(seconds), "windows": int(len(windows)), "logit": mean,
            "score": result["probability"], "threshold": result["threshold"],
            "decision": result["decision"], **input_stats(windows, mask, float(spec["clip_mv"])),
            "quality_flags": flags}  # fmt: skip


def score_file(uri: str, companions: list[str], job: _Job, session: Any) -> dict[str, Any]:
    """Read, check and score one landing file; a prediction row or a quarantine row."""
    from cardiolake.pseudonym import patient_key
    from pipelines.bronze import _sha256_of
    from pipelines.ecg_source import read_ecg_source
    from pipelines.readers import InputError
    from pipelines.readers.limits import DEFAULT_LIMITS, memory_guard
    from serving.device_script import RecordError, Recording

    row: dict[str, Any] = {"source_uri": uri}
    try:
        try:
            sha, _size = _sha256_of([uri, *[c for c in companions if Path(c).exists()]])
        except OSError as exc:
            raise InputError("missing_file", str(exc.strerror), uri=uri) from exc
        row.update(source_sha256=sha, recording_key=sha)
        if sha in job.done:
            return {**row, "target": "skip"}
        # the ingestion's caps apply inside the reader; the guard catches what they cannot
        with memory_guard(DEFAULT_LIMITS.task_memory_bytes):
            source = read_ecg_source(uri, "wfdb" if uri.endswith(".hea") else "dicom")
            rec = Recording(Path(uri).name, float(source.fs), tuple(source.lead_names),
                            np.ascontiguousarray(source.signals_mv.T))  # fmt: skip
        scored = score_recording(rec, job, session)
        if "reason" in scored:
            return {**row, **scored, "target": "quarantine"}
        key = patient_key(source.mrn, job.secret) if source.mrn and source.mrn.strip() else None
        return {**row, **scored, "patient_key": key, "target": "prediction"}
    except InputError as exc:
        return {**row, "target": "quarantine", "reason": exc.reason, "detail": str(exc)[:500]}
    except RecordError as exc:
        return {**row, "target": "quarantine", "reason": "no_limb_lead", "detail": str(exc)[:500]}
    except MemoryError:
        return {
            **row,
            "target": "quarantine",
            "reason": "memory_cap",
            "detail": f"{uri}: decoding exceeded the memory available to a task",
        }
    except Exception as exc:  # noqa: BLE001 - one bad file never stops the cohort
        return {
            **row,
            "target": "quarantine",
            "reason": "unreadable",
            "detail": f"{uri}: {type(exc).__name__}"[:500],
        }


def score_row(row: dict[str, Any], job: _Job, session: Any) -> dict[str, Any]:
    """Score one silver ECG row (the ``--table`` source)."""
    from serving.device_script import RecordError, Recording

    base = {"source_uri": row.get("source_uri") or row["record_key"],
            "source_sha256": row.get("sha256"), "recording_key": row["record_key"],
            "patient_key": row.get("patient_key")}  # fmt: skip
    if row["record_key"] in job.done:
        return {**base, "target": "skip"}
    leads = [lead for lead in job.spec["leads"] if row.get(f"lead_{lead}") is not None]
    try:
        if not leads:
            raise RecordError(f"{row['record_key']}: none of the leads {job.spec['leads']}")
        signal = np.stack([np.asarray(row[f"lead_{lead}"], np.float32) for lead in leads])
        rec = Recording(str(row["record_key"]), float(row["fs"]), tuple(leads), signal)
        scored = score_recording(rec, job, session)
    except RecordError as exc:
        return {**base, "target": "quarantine", "reason": "no_limb_lead", "detail": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one bad row never stops the cohort
        return {**base, "target": "quarantine", "reason": "unreadable",
                "detail": f"{row['record_key']}: {type(exc).__name__}"}  # fmt: skip
    if "reason" in scored:
        return {**base, **scored, "target": "quarantine"}
    return {**base, **scored, "target": "prediction"}


def _finish(rows: list[dict[str, Any]], job: _Job) -> pd.DataFrame:
    """Task output: prediction and quarantine fields in one frame (JSON for the variable part)."""
    out = []
    for r in rows:
        if r["target"] == "prediction":
            r = {**r, "prediction_key": prediction_key(job.model, job.version, r["recording_key"])}
        out.append({"target": r["target"], "source_uri": r["source_uri"],
                    "payload": json.dumps(r, default=str)})  # fmt: skip
    return pd.DataFrame(out, columns=["target", "source_uri", "payload"])


def _table_tasks(job: _Job) -> Any:
    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        session = _session(_model_path(job))
        for frame in frames:
            yield _finish([score_row(r, job, session) for r in frame.to_dict("records")], job)

    return run


@dataclass
class ScoringResult:
    """What a scoring run did."""

    run_id: str
    model: str
    version: str
    scored: int
    inserted: int
    skipped: int
    quarantined: dict[str, int]
    predictions_version: int | None
    drift: list[dict[str, Any]]
    drift_alert: bool
    report_png: Path | None


def landing_recordings(landing: Path) -> list[tuple[str, list[str]]]:
    """Every WFDB record (and DICOM file) of a landing folder, with its companion files."""
    from pipelines.landing import scan_landing

    inventory = scan_landing(landing)
    return [(r.uri, list(r.companions)) for r in inventory.records
            if r.format in ("wfdb", "dicom")]  # fmt: skip


def score_cohort(
    spark: Any, lake_root: Path, settings: ScoringSettings, *, secret: str,
    landing: Path | None = None, table: tables.Table | None = None,
    cache: Path | None = None,
) -> ScoringResult:  # fmt: skip
    """Score a landing folder's recordings (or a silver ECG table) into ``scoring.predictions``.

    Args:
        spark: the session (local or a cluster).
        lake_root: the lake whose predictions, quarantine and monitoring tables receive rows
            (and whose registry holds the model, unless MLflow points elsewhere).
        settings: the model alias, quality rules and drift thresholds.
        secret: the pseudonym secret of this lake (patient keys match ingestion's).
        landing: a folder of recordings (WFDB/DICOM, any layout).
        table: a silver ECG table instead (``silver.ecg``).
        cache: where model files are kept (default ``<lake>/_serving``).

    Raises:
        ValueError: neither or both of ``landing`` and ``table``.
    """

    if (landing is None) == (table is None):
        raise ValueError("score either a landing folder or a table, not both or neither")
    files = fetch_model(settings.alias, cache or Path(lake_root) / "_serving", settings.precision)
    job = make_job(files, settings, secret, scored_keys(lake_root, files.version))
    run_id = job.run_id
    spark.sparkContext.addFile(str(files.model))
    if landing is not None:
        tasks = landing_recordings(landing)
        if not tasks:
            raise ValueError(f"{landing}: no recordings (WFDB headers or DICOM files) found")
        rows = score_tasks(spark, tasks, job, settings.partitions)
    else:
        assert table is not None
        parts = settings.partitions or 4 * spark.sparkContext.defaultParallelism
        source = lake.read_table(spark, table, lake_root=lake_root)
        leads = [f"lead_{lead}" for lead in files.spec["leads"]]
        keep = ["record_key", "patient_key", "fs", *[c for c in leads if c in source.columns]]
        keep += [c for c in ("source_uri", "sha256") if c in source.columns]
        out = (
            source.select(*keep)
            .repartition(parts)
            .mapInPandas(_table_tasks(job), "target string, source_uri string, payload string")
        )
        rows = [json.loads(r["payload"]) for r in out.collect()]
    predictions = [r for r in rows if r["target"] == "prediction"]
    skipped = sum(1 for r in rows if r["target"] == "skip")
    rejected = [r for r in rows if r["target"] == "quarantine"]
    version_before = _version(tables.PREDICTIONS, lake_root)
    inserted = write_predictions(spark, predictions, job, lake_root)
    quarantined = write_rejections(spark, rejected, job, lake_root)
    figures, alert, png = monitor_run(spark, predictions, files, job, settings.drift, lake_root)
    version_after = _version(tables.PREDICTIONS, lake_root)
    return ScoringResult(run_id, files.name, files.version, len(predictions), inserted, skipped,
                         quarantined, version_after if version_after != version_before else None,
                         figures, alert, png)  # fmt: skip


def make_job(files: ModelFiles, settings: ScoringSettings, secret: str,
             done: frozenset[str] = frozenset()) -> _Job:  # fmt: skip
    """The per-task constants of one scoring run."""
    return _Job(files.model.name, files.spec, files.name, files.version, files.alias,
                files.precision, secret, tuple(settings.reject_flags), settings.min_seconds,
                uuid.uuid4().hex, dt.datetime.now(dt.UTC), done)  # fmt: skip


def score_tasks(spark: Any, tasks: list[tuple[str, list[str]]], job: _Job,
                partitions: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Score landing files on Spark (the model file must be in ``SparkFiles``): result rows.

    The file list is small (paths), so it is parallelised straight into partitions: no
    shuffle, no SQL plan, no Arrow round trip; each partition scores its files with its
    worker's session and returns one JSON line per file.
    """
    parts = max(1, min(partitions or 4 * spark.sparkContext.defaultParallelism, len(tasks)))

    def run(items: Iterator[tuple[str, list[str]]]) -> Iterator[str]:
        session = _session(_model_path(job))
        for uri, companions in items:
            yield _finish([score_file(uri, companions, job, session)], job)["payload"].iloc[0]

    rdd = spark.sparkContext.parallelize(tasks, parts).mapPartitions(run)
    return [json.loads(line) for line in rdd.collect()]


def score_loop(tasks: list[tuple[str, list[str]]], job: _Job, model: Path
               ) -> list[dict[str, Any]]:  # fmt: skip
    """The same scoring in one Python loop with one session (the benchmark's baseline)."""
    session = _session(str(model))
    return [score_file(uri, companions, job, session) for uri, companions in tasks]


def scored_keys(lake_root: Path, version: str, model: str = DEVICE_MODEL) -> frozenset[str]:
    """Recordings a re-run skips: scored by this version, or rejected by scoring unchanged."""
    if not lake.table_exists(tables.PREDICTIONS, lake_root=lake_root):
        return frozenset()
    frame = lake.read_pandas(tables.PREDICTIONS, lake_root=lake_root,
                             columns=["model_name", "model_version", "recording_key"])  # fmt: skip
    hit = (frame["model_name"] == model) & (frame["model_version"] == version)
    done = set(frame.loc[hit, "recording_key"].astype(str))
    if lake.table_exists(tables.QUARANTINE, lake_root=lake_root):  # unchanged rejected files
        q = lake.read_pandas(tables.QUARANTINE, lake_root=lake_root, columns=["stage", "sha256"])
        done |= set(q.loc[(q["stage"] == STAGE) & q["sha256"].notna(), "sha256"].astype(str))
    return frozenset(done)


def _version(table: tables.Table, lake_root: Path) -> int | None:
    if not lake.table_exists(table, lake_root=lake_root):
        return None
    return int(lake.table_version(table, lake_root=lake_root))


#: Spark schema of ``scoring.predictions``.
PREDICTIONS_SCHEMA = (
    "prediction_key string, model_name string, model_version string, model_alias string, "
    "precision string, patient_key string, recording_key string, source_uri string, "
    "source_sha256 string, lead_set string, n_leads int, source_fs double, seconds double, "
    "windows int, logit double, score double, threshold double, decision string, "
    "rms_mv double, range_mv double, clipped_fraction double, quality_flags array<string>, "
    "run_id string, scored_at timestamp"
)


def write_predictions(spark: Any, rows: list[dict[str, Any]], job: _Job, lake_root: Path) -> int:
    """Merge prediction rows on ``prediction_key``; returns how many were new."""
    from pipelines.quarantine import merge_new

    if not rows:
        return 0
    fixed = {
        "model_name": job.model,
        "model_version": job.version,
        "model_alias": job.alias,
        "precision": job.precision,
        "run_id": job.run_id,
        "scored_at": job.scored_at,
    }
    records = [tuple({**r, **fixed}.get(c) for c in PREDICTION_COLUMNS) for r in rows]
    df = spark.createDataFrame(records, PREDICTIONS_SCHEMA)
    return merge_new(df, tables.PREDICTIONS, lake_root, keys=["prediction_key"])


def write_rejections(spark: Any, rows: list[dict[str, Any]], job: _Job, lake_root: Path
                     ) -> dict[str, int]:  # fmt: skip
    """Quarantine rows of recordings that could not be scored (reason per row)."""
    from pipelines.quarantine import quarantine_rows, write_quarantine

    if not rows:
        return {}
    frame = pd.DataFrame([{"source_uri": r["source_uri"], "sha256": r.get("source_sha256"),
                           "row_id": None, "input_kind": "mobile_ecg", "reason": r["reason"],
                           "detail": str(r.get("detail", ""))[:500]} for r in rows])  # fmt: skip
    df = spark.createDataFrame(
        frame,
        "source_uri string, sha256 string, row_id string, "
        "input_kind string, reason string, detail string",
    )
    shaped = quarantine_rows(df, stage=STAGE, run_id=job.run_id, now=job.scored_at)
    return write_quarantine(shaped, lake_root)


def monitor_run(spark: Any, rows: list[dict[str, Any]], files: ModelFiles, job: _Job,
                thresholds: DriftThresholds, lake_root: Path
                ) -> tuple[list[dict[str, Any]], bool, Path | None]:  # fmt: skip
    """Drift figures of this run's cohort against the model's reference (table + PNG)."""
    from serving.monitoring import NUMERIC, drift, plot_report

    if files.reference is None or not rows:
        return [], False, None
    stats = [{k: float(r[k]) for k in NUMERIC} for r in rows]
    scores = [float(r["score"]) for r in rows]
    figures = drift(files.reference, stats, scores, [r["lead_set"] for r in rows],
                    [list(r["quality_flags"]) for r in rows], thresholds)  # fmt: skip
    png = plot_report(files.reference, stats, scores, figures,
                      Path(lake_root) / "_monitoring" / f"{job.run_id}.png",
                      f"{job.model} v{job.version}: {len(rows)} recordings vs training "
                      "reference")  # fmt: skip
    records = [{"run_id": job.run_id, "model_name": job.model, "model_version": job.version,
                "scored_at": job.scored_at, "rows": len(rows), "report_png": str(png),
                **f.as_row()} for f in figures]  # fmt: skip
    df = spark.createDataFrame(pd.DataFrame(records), MONITORING_SCHEMA)
    lake.write_table(df, tables.MONITORING, lake_root=lake_root, mode="append")
    return [f.as_row() for f in figures], any(f.alert for f in figures), png


MONITORING_SCHEMA = (
    "run_id string, model_name string, model_version string, scored_at timestamp, rows int, "
    "report_png string, metric string, statistic string, value double, threshold double, "
    "p_value double, alert boolean, detail string"
)


def latest_figures(lake_root: Path) -> pd.DataFrame:
    """The newest scoring run's monitoring rows (empty when nothing was scored)."""
    if not lake.table_exists(tables.MONITORING, lake_root=lake_root):
        return pd.DataFrame()
    frame = lake.read_pandas(tables.MONITORING, lake_root=lake_root)
    if frame.empty:
        return frame
    newest = frame.sort_values("scored_at")["run_id"].iloc[-1]
    return frame[frame["run_id"] == newest].reset_index(drop=True)
