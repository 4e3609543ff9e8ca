"""Names of the lake's Delta tables, grouped by layer.

Every stage names its tables through these constants, never through string literals, so a
rename happens in one place. A table lives at ``lake_root / layer / name``.

Example:
    >>> from cardiolake import tables
    >>> tables.ECG.path("/lake")
    PosixPath('/lake/silver/ecg')
    >>> tables.get_table("gold.alignment") is tables.ALIGNMENT
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

Layer = Literal["bronze", "silver", "gold", "features", "scoring", "monitoring", "quarantine"]

#: Layers in data-flow order.
LAYER_NAMES: tuple[Layer, ...] = get_args(Layer)


@dataclass(frozen=True, order=True)
class Table:
    """A named Delta table in one layer of the lake.

    Attributes:
        layer: the layer folder under the lake root.
        name: the table folder under the layer.
    """

    layer: str
    name: str

    def __post_init__(self) -> None:
        for part in (self.layer, self.name):
            if not part or "/" in part or "." in part or part.startswith("_"):
                raise ValueError(f"invalid table part {part!r} in {self.layer}.{self.name}")

    def __str__(self) -> str:
        return f"{self.layer}.{self.name}"

    def path(self, lake_root: str | os.PathLike[str]) -> Path:
        """The table folder under a local lake root.

        Args:
            lake_root: the lake's root folder.

        Returns:
            ``lake_root / layer / name``.
        """
        return Path(lake_root) / self.layer / self.name


# bronze: one row per source file or record, as received
ECG_RAW = Table("bronze", "ecg_raw")
ECHO_RAW = Table("bronze", "echo_raw")
LABS_RAW = Table("bronze", "labs_raw")
NOTES_RAW = Table("bronze", "notes_raw")
LABELS_RAW = Table("bronze", "labels_raw")
# every CSV export file bronze has read (also those without a row): what discovery skips
EXPORT_FILES = Table("bronze", "export_files")
# silver: parsed, cleaned, typed
ECG = Table("silver", "ecg")
ECHO = Table("silver", "echo")
LABS = Table("silver", "labs")
NOTES = Table("silver", "notes")
LABELS = Table("silver", "labels")
# gold: beat alignment and training examples
ALIGNMENT = Table("gold", "alignment")
EXAMPLES_PRETRAIN = Table("gold", "examples_pretrain")
EXAMPLES_ALIGN = Table("gold", "examples_align")
EXAMPLES_LABELED = Table("gold", "examples_labeled")
# features: Feast sources
ECG_EMBEDDING = Table("features", "ecg_embedding")
ECHO_EMBEDDING = Table("features", "echo_embedding")
FUSED_EMBEDDING = Table("features", "fused_embedding")
LABS_FEATURES = Table("features", "labs_features")
# point-in-time training set of the teacher (Feast service teacher_training on label times)
TEACHER_TRAINING_SET = Table("features", "teacher_training_set")
# the same service point-in-time at every 12-lead ECG's time: the teacher's view of the
# unlabelled pool, which it scores for distillation
DISTILLATION_SET = Table("features", "distillation_set")
# the teacher's soft targets and ECG embedding per 12-lead ECG (several teacher versions)
TEACHER_TARGETS = Table("features", "teacher_targets")
# scoring: batch predictions of registered models
PREDICTIONS = Table("scoring", "predictions")
# monitoring: drift and quality figures of each scoring run against the model's reference
MONITORING = Table("monitoring", "drift")
# quarantine: every input that failed, with stage and reason
QUARANTINE = Table("quarantine", "quarantine")

#: The known tables of each layer, in data-flow order.
LAYERS: dict[str, tuple[Table, ...]] = {
    "bronze": (ECG_RAW, ECHO_RAW, LABS_RAW, NOTES_RAW, LABELS_RAW, EXPORT_FILES),
    "silver": (ECG, ECHO, LABS, NOTES, LABELS),
    "gold": (ALIGNMENT, EXAMPLES_PRETRAIN, EXAMPLES_ALIGN, EXAMPLES_LABELED),
    "features": (
        ECG_EMBEDDING,
        ECHO_EMBEDDING,
        FUSED_EMBEDDING,
        LABS_FEATURES,
        TEACHER_TRAINING_SET,
        DISTILLATION_SET,
        TEACHER_TARGETS,
    ),  # fmt: skip
    "scoring": (PREDICTIONS,),
    "monitoring": (MONITORING,),
    "quarantine": (QUARANTINE,),
}

#: Every known table, in data-flow order.
ALL_TABLES: tuple[Table, ...] = tuple(t for layer in LAYERS.values() for t in layer)

_BY_NAME: dict[str, Table] = {t.name: t for t in ALL_TABLES}


def tables_in(layer: str) -> tuple[Table, ...]:
    """The known tables of one layer.

    Args:
        layer: a layer name such as ``"silver"``.

    Returns:
        The layer's tables in data-flow order.

    Raises:
        KeyError: when the layer is unknown.
    """
    try:
        return LAYERS[layer]
    except KeyError:
        raise KeyError(f"unknown layer {layer!r}; known: {', '.join(LAYERS)}") from None


def get_table(ref: Table | str) -> Table:
    """Resolve a table reference: a :class:`Table`, ``"layer.name"`` or a known bare name.

    Args:
        ref: the reference. ``"layer.name"`` may name a table outside the known set;
            a bare name must be one of the known tables (names are unique across layers).

    Returns:
        The table.

    Raises:
        KeyError: when a bare name is not a known table.
        ValueError: when the reference is malformed.

    Example:
        >>> get_table("ecg")
        Table(layer='silver', name='ecg')
    """
    if isinstance(ref, Table):
        return ref
    if "." in ref:
        layer, _, name = ref.partition(".")
        return Table(layer, name)
    try:
        return _BY_NAME[ref]
    except KeyError:
        raise KeyError(
            f"unknown table {ref!r}; use 'layer.name' for tables outside the known set"
        ) from None
