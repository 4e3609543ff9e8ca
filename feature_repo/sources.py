"""Feast sources: Parquet snapshots of pinned Delta versions of the feature tables.

Paths are relative to the runtime repo folder ``lake_root/_feast`` (Feast resolves relative
file paths against the repo path). :func:`feature_repo.store.pin` swaps each placeholder
``current`` folder for the exported ``v<version>`` snapshot before ``apply``.
"""

from __future__ import annotations

from feast import FileSource
from feast.data_format import ParquetFormat

from cardiolake import tables
from cardiolake.tables import Table
from feature_repo.snapshot import ECG_MEASUREMENTS, EVENT_TIME


def _snapshot_source(
    table: Table, description: str, field_mapping: dict[str, str] | None = None
) -> FileSource:
    return FileSource(
        name=table.name,
        path=f"snapshots/{table.name}/current",
        file_format=ParquetFormat(),
        timestamp_field=EVENT_TIME,
        field_mapping=field_mapping,
        description=description,
        tags={"delta_table": str(table)},
    )


def _embedding_fields(modality: str) -> dict[str, str]:
    return {"embedding": f"{modality}_embedding", "model_version": f"{modality}_model_version"}


# Lab results pivoted per draw: latest value per analyte plus trailing-window aggregates.
labs_features_source = _snapshot_source(
    tables.LABS_FEATURES, "features.labs_features: one row per patient and draw time"
)

# ECG measurements per recording (HR, RR variability, quality) derived from silver ecg.
ecg_measurements_source = _snapshot_source(
    ECG_MEASUREMENTS, "features.ecg_measurements: one row per ECG recording"
)

# Embeddings the training stages write later; empty snapshots until then.
# The three tables share one schema (EMBEDDING_SCHEMA); the field mapping gives each view
# distinct feature names so a feature service can hold all three without prefixes.
ecg_embedding_source = _snapshot_source(
    tables.ECG_EMBEDDING,
    "features.ecg_embedding: pretrained ECG encoder output per exam",
    _embedding_fields("ecg"),
)
echo_embedding_source = _snapshot_source(
    tables.ECHO_EMBEDDING,
    "features.echo_embedding: pretrained echo encoder output per exam",
    _embedding_fields("echo"),
)
fused_embedding_source = _snapshot_source(
    tables.FUSED_EMBEDDING,
    "features.fused_embedding: aligned multimodal embedding per exam",
    _embedding_fields("fused"),
)

#: Every source, keyed by the feature table it snapshots.
SOURCES: dict[Table, FileSource] = {
    tables.LABS_FEATURES: labs_features_source,
    ECG_MEASUREMENTS: ecg_measurements_source,
    tables.ECG_EMBEDDING: ecg_embedding_source,
    tables.ECHO_EMBEDDING: echo_embedding_source,
    tables.FUSED_EMBEDDING: fused_embedding_source,
}
