"""Feast feature views: labs, ECG measurements and the three embedding views.

Each view's tags name the Delta table it reads and (after :func:`feature_repo.store.pin`)
the pinned ``delta_version`` whose Parquet snapshot it reads.
"""

from __future__ import annotations

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Array, Bool, Float32, Float64, Int64, String

from feature_repo.entities import patient
from feature_repo.snapshot import INTERVAL_COLUMNS, LAB_ANALYTES
from feature_repo.sources import (
    ecg_embedding_source,
    ecg_measurements_source,
    echo_embedding_source,
    fused_embedding_source,
    labs_features_source,
)

#: How far back a lab value still describes the patient (a year: chronic markers).
LABS_TTL = timedelta(days=365)
#: How far back an ECG or embedding still describes the patient.
EXAM_TTL = timedelta(days=365)

# Latest value of each analyte (canonical unit) as of the row's draw time.
labs_latest = FeatureView(
    name="labs_latest",
    entities=[patient],
    ttl=LABS_TTL,
    schema=[Field(name=col, dtype=Float64) for col in LAB_ANALYTES.values()],
    source=labs_features_source,
    online=True,
    tags={"delta_table": "features.labs_features", "modality": "labs"},
)

# Trailing 30-day aggregates: the peak of the acute markers and how often blood was drawn.
labs_window = FeatureView(
    name="labs_window",
    entities=[patient],
    ttl=LABS_TTL,
    schema=[
        Field(name="ntprobnp_max_30d", dtype=Float64),
        Field(name="troponin_max_30d", dtype=Float64),
        Field(name="draws_30d", dtype=Int64),
        Field(name="draws_total", dtype=Int64),
    ],
    source=labs_features_source,
    online=True,
    tags={"delta_table": "features.labs_features", "modality": "labs", "window": "30d"},
)

# What silver ecg measures: HR and RR variability from the R-peaks, PR/QRS/QT/QTc and the
# frontal axis from the median beat (null where not measurable, e.g. PR in AF), quality.
ecg_measurements = FeatureView(
    name="ecg_measurements",
    entities=[patient],
    ttl=EXAM_TTL,
    schema=[
        Field(name="heart_rate_bpm", dtype=Float64),
        Field(name="rr_mean_ms", dtype=Float64),
        Field(name="rr_sdnn_ms", dtype=Float64),
        Field(name="rr_rmssd_ms", dtype=Float64),
        *(Field(name=col, dtype=Float64) for col in INTERVAL_COLUMNS),
        Field(name="n_beats", dtype=Int64),
        Field(name="duration_s", dtype=Float64),
        Field(name="device_kind", dtype=String),
        Field(name="n_quality_flags", dtype=Int64),
        Field(name="quality_ok", dtype=Bool),
        Field(name="quality_flags", dtype=String),
    ],
    source=ecg_measurements_source,
    online=True,
    tags={"delta_table": "features.ecg_measurements", "modality": "ecg"},
)


def _embedding_view(name: str, source: object, modality: str) -> FeatureView:
    return FeatureView(
        name=name,
        entities=[patient],
        ttl=EXAM_TTL,
        schema=[
            Field(name=name, dtype=Array(Float32)),
            Field(name=f"{modality}_model_version", dtype=String),
        ],
        source=source,  # type: ignore[arg-type]
        online=True,
        tags={"delta_table": f"features.{name}", "modality": modality},
    )


# ECG encoder output (training stage 1 fills features.ecg_embedding).
ecg_embedding = _embedding_view("ecg_embedding", ecg_embedding_source, "ecg")
# Echo encoder output (training stage 1 fills features.echo_embedding).
echo_embedding = _embedding_view("echo_embedding", echo_embedding_source, "echo")
# Cross-modal aligned embedding (training stage 2 fills features.fused_embedding).
fused_embedding = _embedding_view("fused_embedding", fused_embedding_source, "fused")

#: Every feature view, in apply order.
FEATURE_VIEWS: tuple[FeatureView, ...] = (
    labs_latest,
    labs_window,
    ecg_measurements,
    ecg_embedding,
    echo_embedding,
    fused_embedding,
)
