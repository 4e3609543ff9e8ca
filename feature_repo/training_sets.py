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
from cardiolake.domain import FINDINGS
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
        examples_version: the ``gold.examples_labeled`` version the labels came from.
    """

    table: Table
    version: int
    rows: int
    service: str
    examples_version: int


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
    joined = training_set(store, labels, features=service, event_time="label_time")
    # embeddings come back as object arrays; Delta wants list<float32>
    for col in joined.columns:
        if joined[col].dtype == object and len(joined) and _is_vector(joined[col]):
            joined[col] = [None if v is None else np.asarray(v, np.float32) for v in joined[col]]
    arrow = pa.Table.from_pandas(joined, preserve_index=False)
    uri = str(table.path(lake_root))
    fs = store.get_feature_service(service)
    updated = fs.last_updated_timestamp or fs.created_timestamp
    meta = {"feature_service": service, "examples_labeled_version": str(examples_version),
            "feast_project": store.project,
            "feature_service_updated": str(updated)}  # fmt: skip
    Path(uri).mkdir(parents=True, exist_ok=True)
    write_deltalake(uri, arrow, mode="overwrite", schema_mode="overwrite",
                    commit_properties=CommitProperties(custom_metadata=meta))  # fmt: skip
    version = DeltaTable(uri).version()
    logger.info("%s v%d: %d rows (%s)", table, version, arrow.num_rows, json.dumps(meta))
    return TrainingSet(table, version, arrow.num_rows, service, examples_version)


def _is_vector(column: pd.Series) -> bool:
    first = next((v for v in column if v is not None), None)
    return isinstance(first, list | np.ndarray)
