"""Feature tables from silver, and Parquet snapshots of pinned Delta versions for Feast.

Feast's file source reads every Parquet file in a folder and ignores the Delta log, so it must
never point at a Delta table folder (removed files would come back to life). Instead each
Feast source reads ``lake_root/_feast/snapshots/<table>/v<version>/``: the rows of one
committed Delta version, exported once. The version is recorded in the feature view's tags.

The feature functions (:func:`labs_features`, :func:`ecg_measurements`) are plain pandas
functions: a silver frame in, a feature frame out, point-in-time correct by construction
(every row only uses draws at or before its own event time).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake

from cardiolake import lake, tables
from cardiolake.tables import Table
from pipelines.quarantine import gate_failed_keys

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

#: Feature column of each analyte's latest value (canonical unit), keyed by LOINC code.
LAB_ANALYTES: dict[str, str] = {
    "33762-6": "ntprobnp_pg_ml",
    "67151-1": "troponin_t_ng_l",
    "2160-0": "creatinine_mg_dl",
    "2823-3": "potassium_mmol_l",
    "718-7": "hemoglobin_g_dl",
    "2951-2": "sodium_mmol_l",
}
#: Trailing window of the windowed lab aggregates.
LAB_WINDOW = pd.Timedelta(days=30)
#: Event-time column of every feature table.
EVENT_TIME = "event_time"
#: ECG measurements per silver record (HR, RR variability, quality); not in cardiolake.tables
#: because only the feature repo writes and reads it.
ECG_MEASUREMENTS = Table("features", "ecg_measurements")
#: Tables whose snapshots the feature views read.
FEATURE_TABLES: tuple[Table, ...] = (
    tables.LABS_FEATURES,
    ECG_MEASUREMENTS,
    tables.ECG_EMBEDDING,
    tables.ECHO_EMBEDDING,
    tables.FUSED_EMBEDDING,
)
#: Embedding tables: rows of several encoder versions side by side, one served at a time.
EMBEDDING_TABLES: tuple[Table, ...] = (
    tables.ECG_EMBEDDING,
    tables.ECHO_EMBEDDING,
    tables.FUSED_EMBEDDING,
)
#: The columns of the embedding tables a Feast view reads (training writes more: the record
#: key, the encoder's model URI, its stage and run); an absent table gets an empty snapshot
#: of these.
EMBEDDING_SCHEMA = pa.schema(
    [
        ("patient_key", pa.string()),
        (EVENT_TIME, pa.timestamp("us", tz="UTC")),
        ("embedding", pa.list_(pa.float32())),
        ("model_version", pa.string()),
    ]
)
#: Snapshot folder name of a table that does not exist yet (an empty Parquet file).
ABSENT = "absent"


@dataclass(frozen=True)
class Snapshot:
    """One exported table version.

    Attributes:
        table: the Delta table.
        version: its pinned Delta version, or None when the table does not exist yet.
        path: the folder of Parquet files Feast reads.
        rows: rows in the snapshot.
        model_version: for an embedding table, the encoder version whose rows it holds.
    """

    table: Table
    version: int | None
    path: Path
    rows: int
    model_version: str | None = None

    @property
    def tag(self) -> str:
        """The version as a feature-view tag value (``absent`` for a missing table)."""
        return ABSENT if self.version is None else str(self.version)


def labs_features(labs: pd.DataFrame, *, window: pd.Timedelta = LAB_WINDOW) -> pd.DataFrame:
    """One row per patient and draw time: latest value per analyte and windowed aggregates.

    Every value in a row comes from draws at or before the row's ``event_time``, so a
    point-in-time join on ``event_time`` never sees a later draw.

    Args:
        labs: silver ``labs`` rows (patient_key, loinc, value, draw_time).
        window: trailing window of the aggregates (``(t - window, t]``).

    Returns:
        patient_key, event_time, one column per :data:`LAB_ANALYTES`, ``ntprobnp_max_30d``,
        ``troponin_max_30d``, ``draws_30d`` (distinct draw times in the window) and
        ``draws_total``.
    """
    cols = list(LAB_ANALYTES.values())
    frame = labs[labs["loinc"].isin(list(LAB_ANALYTES))].copy()
    if frame.empty:
        return _empty_labs(cols)
    frame["draw_time"] = pd.to_datetime(frame["draw_time"], utc=True)
    frame["analyte"] = frame["loinc"].map(LAB_ANALYTES)
    # several results of one analyte at one draw time: their mean is the draw's value
    wide = frame.pivot_table(
        index=["patient_key", "draw_time"], columns="analyte", values="value", aggfunc="mean"
    )
    wide = wide.reindex(columns=cols).sort_index().reset_index()
    latest = wide.groupby("patient_key", sort=False)[cols].ffill()
    out = pd.concat([wide[["patient_key", "draw_time"]], latest], axis=1)
    rolled = []
    for _, group in wide.groupby("patient_key", sort=False):
        g = group.set_index("draw_time")
        roll = g[["ntprobnp_pg_ml", "troponin_t_ng_l"]].rolling(window, closed="right").max()
        roll["draws_30d"] = g["ntprobnp_pg_ml"].notna().astype(float).rolling(window).count()
        roll.index = group.index
        rolled.append(roll)
    agg = pd.concat(rolled).loc[out.index]
    out["ntprobnp_max_30d"] = agg["ntprobnp_pg_ml"]
    out["troponin_max_30d"] = agg["troponin_t_ng_l"]
    out["draws_30d"] = agg["draws_30d"].astype("int64")
    out["draws_total"] = out.groupby("patient_key").cumcount().astype("int64") + 1
    out = out.rename(columns={"draw_time": EVENT_TIME})
    return out.sort_values(["patient_key", EVENT_TIME]).reset_index(drop=True)


def _empty_labs(cols: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "patient_key": pd.Series(dtype="string"),
            EVENT_TIME: pd.Series(dtype="datetime64[us, UTC]"),
        }
    )
    for col in [*cols, "ntprobnp_max_30d", "troponin_max_30d"]:
        frame[col] = pd.Series(dtype="float64")
    frame["draws_30d"] = pd.Series(dtype="int64")
    frame["draws_total"] = pd.Series(dtype="int64")
    return frame


def ecg_measurements(ecg: pd.DataFrame) -> pd.DataFrame:
    """Per-recording ECG measurements: rate, RR variability, intervals, axis, quality.

    PR, QRS, QT, QTc and the axis come from silver (measured on the median beat by
    ``pipelines.signal.intervals``); they are missing where silver could not measure them.

    Args:
        ecg: silver ``ecg`` rows (patient_key, acquisition_time, heart_rate_bpm, device_kind,
            quality_flags, rpeaks, fs, duration_s and the interval columns).

    Returns:
        patient_key, event_time, heart_rate_bpm, rr_mean_ms, rr_sdnn_ms, rr_rmssd_ms,
        pr_ms, qrs_ms, qt_ms, qtc_ms, axis_deg, n_beats, duration_s, device_kind,
        n_quality_flags, quality_ok, quality_flags (comma-joined).
    """
    rows = []
    for rec in ecg.itertuples(index=False):
        peaks = np.asarray(rec.rpeaks if rec.rpeaks is not None else [], dtype=float)
        rr = np.diff(peaks) / float(rec.fs) * 1000.0 if len(peaks) > 1 and rec.fs else peaks[:0]
        flags = [str(f) for f in (rec.quality_flags if rec.quality_flags is not None else [])]
        rows.append(
            {
                "patient_key": rec.patient_key,
                EVENT_TIME: rec.acquisition_time,
                "heart_rate_bpm": _float(rec.heart_rate_bpm),
                "rr_mean_ms": float(rr.mean()) if rr.size else np.nan,
                "rr_sdnn_ms": float(rr.std(ddof=1)) if rr.size > 1 else np.nan,
                "rr_rmssd_ms": float(np.sqrt(np.mean(np.diff(rr) ** 2))) if rr.size > 1 else np.nan,
                **{col: _float(getattr(rec, col, None)) for col in INTERVAL_COLUMNS},
                "n_beats": int(len(peaks)),
                "duration_s": _float(rec.duration_s),
                "device_kind": str(rec.device_kind or ""),
                "n_quality_flags": len(flags),
                "quality_ok": not flags,
                "quality_flags": ",".join(sorted(flags)),
            }
        )
    out = pd.DataFrame(rows, columns=_ECG_COLUMNS)
    out[EVENT_TIME] = pd.to_datetime(out[EVENT_TIME], utc=True)
    out = out.dropna(subset=["patient_key", EVENT_TIME])
    # two recordings of one patient at one instant: keep one, deterministically
    out = out.sort_values(["patient_key", EVENT_TIME, "n_beats"])
    out = out.drop_duplicates(["patient_key", EVENT_TIME], keep="last")
    return out.astype({"n_beats": "int64", "n_quality_flags": "int64", "quality_ok": "bool"})


#: The silver ``ecg`` interval columns served as features.
INTERVAL_COLUMNS = ("pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "axis_deg")

_ECG_COLUMNS = [
    "patient_key",
    EVENT_TIME,
    "heart_rate_bpm",
    "rr_mean_ms",
    "rr_sdnn_ms",
    "rr_rmssd_ms",
    *INTERVAL_COLUMNS,
    "n_beats",
    "duration_s",
    "device_kind",
    "n_quality_flags",
    "quality_ok",
    "quality_flags",
]


def _float(value: object) -> float:
    return float(value) if value is not None and pd.notna(value) else np.nan  # type: ignore[arg-type]


def build_feature_tables(lake_root: Path, *, spark: SparkSession | None = None) -> dict[Table, int]:
    """Compute the feature tables from silver and write them as Delta (overwrite).

    Rows a quality gate quarantined (a lab outside the limits, an ECG with a wrong gain) are
    left out: features only come from what the gates let through.

    Args:
        lake_root: the lake's root folder.
        spark: when given, write through :func:`cardiolake.lake.write_table`; otherwise
            commit the Arrow table with delta-rs directly (no Spark start-up).

    Returns:
        The Delta version each table was written at.

    Raises:
        cardiolake.lake.TableNotFoundError: silver ``labs`` or ``ecg`` is missing.
    """
    lab_cols = ["record_key", "patient_key", "loinc", "value", "draw_time"]
    labs = _passed(tables.LABS, lab_cols, lake_root)
    ecg_cols = ["record_key", "patient_key", "acquisition_time", "heart_rate_bpm", "device_kind"]
    ecg_cols += ["quality_flags", "rpeaks", "fs", "duration_s", *INTERVAL_COLUMNS]
    ecg = _passed(tables.ECG, ecg_cols, lake_root)
    versions = {
        tables.LABS_FEATURES: write_features(
            labs_features(labs), tables.LABS_FEATURES, lake_root, spark
        ),
        ECG_MEASUREMENTS: write_features(ecg_measurements(ecg), ECG_MEASUREMENTS, lake_root, spark),
    }
    for table, version in versions.items():
        logger.info("wrote %s at version %d", table, version)
    return versions


def _passed(table: Table, columns: list[str], lake_root: Path) -> pd.DataFrame:
    """The rows of a silver table its quality gate did not quarantine (by ``record_key``)."""
    frame = lake.read_pandas(table, lake_root=lake_root, columns=columns)
    keep = ~frame["record_key"].isin(gate_failed_keys(lake_root, table))
    return frame.loc[keep].drop(columns="record_key").reset_index(drop=True)


def write_features(
    frame: pd.DataFrame, table: Table, lake_root: Path, spark: SparkSession | None = None
) -> int:
    """Overwrite one feature table with a pandas frame; returns the committed version."""
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    if spark is not None:
        return lake.write_table(
            arrow, table, lake_root=lake_root, mode="overwrite", spark=spark, overwrite_schema=True
        )
    uri = str(table.path(lake_root))
    write_deltalake(uri, arrow, mode="overwrite", schema_mode="overwrite")
    return DeltaTable(uri).version()


def snapshot_root(lake_root: Path) -> Path:
    """Where the Parquet snapshots live: ``lake_root/_feast/snapshots``."""
    return Path(lake_root).resolve() / "_feast" / "snapshots"


def select_encoder(arrow: pa.Table, model_version: str | None) -> tuple[pa.Table, str | None]:
    """The rows of one encoder version of an embedding table (default: the newest written).

    Raises:
        ValueError: the requested version has no rows in the table.
    """
    if "model_version" not in arrow.column_names or arrow.num_rows == 0:
        return arrow, model_version
    if model_version is None:
        if "written_at" in arrow.column_names:
            newest = pc.max(arrow["written_at"])
            at = pc.equal(arrow["written_at"], newest)
            model_version = str(arrow.filter(at)["model_version"][0])
        else:
            model_version = str(arrow["model_version"][-1])
    chosen = arrow.filter(pc.equal(arrow["model_version"], model_version))
    if chosen.num_rows == 0:
        known = sorted(set(arrow["model_version"].to_pylist()))
        raise ValueError(f"no rows of encoder {model_version!r}; the table holds {known}")
    return chosen, model_version


def export_snapshot(
    table: Table,
    lake_root: Path,
    *,
    version: int | None = None,
    model_version: str | None = None,
) -> Snapshot:
    """Export one Delta version as plain Parquet for Feast (idempotent per version).

    Args:
        table: the table.
        lake_root: the lake's root folder.
        version: the version to pin; None pins the latest.
        model_version: for an embedding table, the encoder version to serve (``name/N``);
            None serves the newest written.

    Returns:
        The snapshot. A table that does not exist yet gets an empty snapshot with
        :data:`EMBEDDING_SCHEMA` (only the embedding tables may be missing).
    """
    base = snapshot_root(lake_root) / table.name
    if not lake.table_exists(table, lake_root=lake_root):
        folder = base / ABSENT
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(EMBEDDING_SCHEMA.empty_table(), folder / "part-0.parquet")
        logger.info("%s does not exist yet: empty snapshot at %s", table, folder)
        return Snapshot(table, None, folder, 0)
    pinned = lake.table_version(table, lake_root=lake_root) if version is None else version
    arrow: pa.Table | None = None
    if table in EMBEDDING_TABLES:
        arrow, model_version = select_encoder(
            lake.read_arrow(table, lake_root=lake_root, version=pinned), model_version
        )
    suffix = "" if model_version is None else "-" + model_version.replace("/", "_")
    folder = base / f"v{pinned}{suffix}"
    if not folder.exists():  # written to a temporary folder, renamed when complete
        if arrow is None:
            arrow = lake.read_arrow(table, lake_root=lake_root, version=pinned)
        tmp = base / f".v{pinned}{suffix}.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        for old in tmp.glob("*"):
            old.unlink()
        ds.write_dataset(
            arrow, tmp, format="parquet", basename_template="part-{i}.parquet",
            existing_data_behavior="overwrite_or_ignore",
        )  # fmt: skip
        tmp.rename(folder)
    rows = ds.dataset(folder, format="parquet").count_rows()
    logger.info("%s v%d%s: snapshot of %d rows at %s", table, pinned, suffix, rows, folder)
    return Snapshot(table, pinned, folder, rows, model_version)


def export_snapshots(
    lake_root: Path,
    *,
    versions: dict[Table, int] | None = None,
    encoders: dict[Table, str] | None = None,
) -> dict[Table, Snapshot]:
    """Snapshots of every :data:`FEATURE_TABLES` table (latest version unless pinned).

    Args:
        lake_root: the lake root.
        versions: Delta versions to pin instead of the latest.
        encoders: encoder versions to serve from the embedding tables (default: newest).
    """
    versions, encoders = versions or {}, encoders or {}
    return {
        t: export_snapshot(t, lake_root, version=versions.get(t), model_version=encoders.get(t))
        for t in FEATURE_TABLES
    }
