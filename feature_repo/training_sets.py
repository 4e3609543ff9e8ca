"""Training sets: Feast's point-in-time join onto the labelled examples, written as Delta.

The training environment has no Feast (it needs a newer pyarrow than Petastorm), so the
platform environment runs the join and commits the result as a versioned Delta table before a
training subprocess starts; the stage then reads that pinned version like any other table.
The table's commit records where it came from: the feature service, the Feast registry's
last update and the Delta version of ``gold.examples_labeled`` whose rows are the entities.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from feast import FeatureStore

from cardiolake import lake, tables
from cardiolake.domain import FINDINGS, RESTING_12LEAD
from cardiolake.tables import Table
from feature_repo.store import training_set

logger = logging.getLogger(__name__)

#: Columns of ``gold.examples_labeled`` carried into the training set (no signals).
LABEL_COLUMNS = ("exam_key", "patient_key", "split", "label_time", "exam_time", "triage_urgent",
                 *FINDINGS, "adjudicated", "ecg_record_key")  # fmt: skip
#: Training-set table of each feature service.
TRAINING_SET_TABLES: dict[str, Table] = {"teacher_training": tables.TEACHER_TRAINING_SET}


@dataclass(frozen=True)
class TrainingSet:
    """A written training set.

    Attributes:
        table: its Delta table.
        version: the committed version.
        rows: label rows.
        service: the Feast feature service joined.
        examples_version: the version of the gold table whose rows are the entities
            (``examples_labeled`` for a training set, ``examples_pretrain`` for distillation).
    """

    table: Table
    version: int
    rows: int
    service: str
    examples_version: int


def distillation_entities(lake_root: Path) -> tuple[pd.DataFrame, int]:
    """Every 12-lead ECG of ``gold.examples_pretrain`` with its acquisition time.

    Returns:
        (rows ``ecg_record_key, patient_key, split, ecg_time``; the examples' Delta version).
    """
    version = lake.table_version(tables.EXAMPLES_PRETRAIN, lake_root=lake_root)
    rows = lake.read_pandas(
        tables.EXAMPLES_PRETRAIN, lake_root=lake_root, version=version,
        columns=["record_key", "patient_key", "split", "modality", "device_kind"],
    )  # fmt: skip
    rows = rows[(rows["modality"] == "ecg") & (rows["device_kind"] == RESTING_12LEAD)]
    times = lake.read_pandas(tables.ECG, lake_root=lake_root,
                             columns=["record_key", "acquisition_time"])  # fmt: skip
    rows = rows.merge(times, on="record_key").rename(
        columns={"record_key": "ecg_record_key", "acquisition_time": "ecg_time"}
    )
    return rows[["ecg_record_key", "patient_key", "split", "ecg_time"]], version


def write_distillation_set(
    store: FeatureStore, lake_root: Path, *, service: str = "teacher_training"
) -> TrainingSet:
    """Join ``service`` point-in-time onto every 12-lead ECG (at its acquisition time).

    The teacher scores these rows for the student: its view of the unlabelled pool (and of
    the labelled patients' ECGs) with no feature newer than the ECG itself.
    """
    entities, version = distillation_entities(lake_root)
    return _commit(store, lake_root, entities, event_time="ecg_time", service=service,
                   table=tables.DISTILLATION_SET,
                   meta={"examples_pretrain_version": str(version)})  # fmt: skip


def write_training_set(
    store: FeatureStore, lake_root: Path, *, service: str = "teacher_training"
) -> TrainingSet:
    """Join ``service`` point-in-time onto every labelled example and commit it as Delta.

    Args:
        store: the Feast store (after ``apply``).
        lake_root: the lake root.
        service: the feature service.

    Returns:
        The written training set.

    Raises:
        KeyError: no training-set table for the service.
        cardiolake.lake.TableNotFoundError: ``gold.examples_labeled`` is missing.
    """
    table = TRAINING_SET_TABLES[service]
    examples_version = lake.table_version(tables.EXAMPLES_LABELED, lake_root=lake_root)
    labels = lake.read_pandas(
        tables.EXAMPLES_LABELED, lake_root=lake_root, columns=list(LABEL_COLUMNS),
        version=examples_version,
    )  # fmt: skip
    return _commit(store, lake_root, labels, event_time="label_time", service=service, table=table,
                   meta={"examples_labeled_version": str(examples_version)})  # fmt: skip


def _commit(
    store: FeatureStore, lake_root: Path, entities: pd.DataFrame, *, event_time: str,
    service: str, table: Table, meta: dict[str, str],
) -> TrainingSet:  # fmt: skip
    joined = training_set(store, entities, features=service, event_time=event_time)
    # embeddings come back as object arrays; Delta wants list<float32>
    for col in joined.columns:
        if joined[col].dtype == object and len(joined) and _is_vector(joined[col]):
            joined[col] = [None if v is None else np.asarray(v, np.float32) for v in joined[col]]
    arrow = pa.Table.from_pandas(joined, preserve_index=False)
    uri = str(table.path(lake_root))
    fs = store.get_feature_service(service)
    updated = fs.last_updated_timestamp or fs.created_timestamp
    meta = {"feature_service": service, **meta, "feast_project": store.project,
            "feature_service_updated": str(updated)}  # fmt: skip
    Path(uri).mkdir(parents=True, exist_ok=True)
    write_deltalake(uri, arrow, mode="overwrite", schema_mode="overwrite",
                    commit_properties=CommitProperties(custom_metadata=meta))  # fmt: skip
    version = DeltaTable(uri).version()
    logger.info("%s v%d: %d rows (%s)", table, version, arrow.num_rows, json.dumps(meta))
    source_version = int(next(v for k, v in meta.items() if k.endswith("_version")))
    return TrainingSet(table, version, arrow.num_rows, service, source_version)


def _is_vector(column: pd.Series) -> bool:
    first = next((v for v in column if v is not None), None)
    return isinstance(first, list | np.ndarray)
