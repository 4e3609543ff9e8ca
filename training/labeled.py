"""The labelled set in memory: 12-lead ECGs, the echo embedding, labs and labels per label row.

The teacher trains on a few thousand label rows at most, each a 10 s 12-lead ECG at the
training rate (48 KB) plus a few hundred feature values, so the whole set lives in memory as
arrays and every epoch is a permutation of it; a streaming reader would only add latency.
Rows come from the training set the platform wrote (Feast's point-in-time join of the
``teacher_training`` service at each label's time, ``features.teacher_training_set``); their
ECGs from the ECG cache of ``gold.examples_labeled`` (both pinned, both logged as lineage).
A patient without an echo or without labs keeps the row: those inputs are masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cardiolake import tables
from cardiolake.domain import FINDINGS
from cardiolake.tables import Table
from training.cache import ecg_at_rate
from training.data import iter_rows
from training.lake import PinnedTable, TrainingDataError, pin, read_columns
from training.settings import DataSettings
from training.transforms import LEAD_COLUMNS, crop, ecg_matrices

#: What the teacher predicts: the triage decision, then every finding (multi-label).
TARGETS: tuple[str, ...] = ("triage_urgent", *FINDINGS)
#: Seconds of 12-lead ECG per example.
ECG_SECONDS = 10.0
#: The embedding columns of the training set that are not inputs of the teacher (it has the
#: ECG itself; the fused embedding repeats the echo's).
_UNUSED_VECTORS = ("ecg_embedding", "fused_embedding")


def withheld_patients(patients: np.ndarray, fraction: float, seed: int) -> set[str]:
    """Labelled train patients whose labels are withheld (the label-efficiency curve).

    The teacher and the student of one label fraction and seed withhold the same patients.
    """
    unique = np.array(sorted(set(patients)))
    if fraction >= 1.0 or len(unique) == 0:
        return set()
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(unique))[: int(round(fraction * len(unique)))]
    return set(unique) - set(unique[keep])


@dataclass
class LabeledSet:
    """Label rows as arrays (row ``i`` of every array is row ``i`` of ``frame``).

    Attributes:
        frame: keys, split, event time, labels and the tabular features.
        ecg: (N, 12, T) float32 mV at the training rate.
        lead_mask: (N, 12) present leads.
        echo: (N, D) the echo embedding (zeros where absent).
        echo_present: (N,) 1 where the patient had an echo by the label's time.
        targets: (N, len(TARGETS)) float32 labels, NaN where unknown.
        pinned: the Delta versions read (lineage).
    """

    frame: pd.DataFrame
    ecg: np.ndarray
    lead_mask: np.ndarray
    echo: np.ndarray
    echo_present: np.ndarray
    targets: np.ndarray
    pinned: dict[str, PinnedTable]

    def split(self, name: str) -> np.ndarray:
        """Row indices of one split."""
        return np.flatnonzero(self.frame["split"].to_numpy() == name)


def _vector_column(frame: pd.DataFrame, col: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, dim) vectors and (N,) presence; a missing, NaN or wrongly sized vector is absent."""
    values = frame[col].to_numpy() if col in frame.columns else np.array([None] * len(frame))
    out = np.zeros((len(frame), dim), dtype=np.float32)
    present = np.zeros(len(frame), dtype=np.float32)
    for i, v in enumerate(values):
        if v is not None and len(v) == dim and np.all(np.isfinite(v)):
            out[i] = np.asarray(v, dtype=np.float32)
            present[i] = 1.0
    return out, present


def ecg_by_record(
    pinned: PinnedTable, lake_root: Path, fs: int, keys: list[str], *, key: str,
    seconds: float = ECG_SECONDS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """ECG arrays of some records (in ``keys`` order) from a table's cache at ``fs``.

    Returns:
        (ecg (N, 12, T), lead mask (N, 12), found (N,) bool).
    """
    cache = ecg_at_rate(pinned, lake_root, fs, key=key)
    want = {k: i for i, k in enumerate(keys)}
    samples = int(round(seconds * fs))
    ecg = np.zeros((len(keys), len(LEAD_COLUMNS), samples), dtype=np.float32)
    mask = np.zeros((len(keys), len(LEAD_COLUMNS)), dtype=np.float32)
    found = np.zeros(len(keys), dtype=bool)
    columns = ["record_key", "fs", "n_samples", *LEAD_COLUMNS]
    for frame in iter_rows(cache, columns, batch_rows=256):
        frame = frame[frame["record_key"].isin(want)]
        if frame.empty:
            continue
        for rk, (signal, m) in zip(frame["record_key"], ecg_matrices(frame, fs), strict=True):
            i = want[rk]
            ecg[i] = crop(signal, samples, None)
            mask[i] = m
            found[i] = True
    return ecg, mask, found


def load_labeled(lake_root: Path, data: DataSettings, *, echo_dim: int,
                 version: int | None = None) -> LabeledSet:  # fmt: skip
    """The teacher's training set (label rows) joined with their 12-lead ECGs."""
    return load_rows(lake_root, data, training_set=tables.TEACHER_TRAINING_SET,
                     examples=tables.EXAMPLES_LABELED, examples_key="ecg_record_key",
                     echo_dim=echo_dim, version=version)  # fmt: skip


def load_distillation(lake_root: Path, data: DataSettings, *, echo_dim: int,
                      version: int | None = None) -> LabeledSet:  # fmt: skip
    """Every 12-lead ECG with the teacher's other inputs as of its time (no labels)."""
    return load_rows(lake_root, data, training_set=tables.DISTILLATION_SET,
                     examples=tables.EXAMPLES_PRETRAIN, examples_key="record_key",
                     echo_dim=echo_dim, version=version)  # fmt: skip


def load_rows(
    lake_root: Path, data: DataSettings, *, training_set: Table, examples: Table,
    examples_key: str, echo_dim: int, version: int | None = None,
) -> LabeledSet:  # fmt: skip
    """A Feast point-in-time set joined with its 12-lead ECGs (by ``ecg_record_key``).

    Args:
        lake_root: the lake root.
        data: the training rate (``ecg_fs``).
        training_set: the Feast set (``teacher_training_set`` or ``distillation_set``).
        examples: the gold table holding the ECGs.
        examples_key: its column naming the ECG record.
        echo_dim: the echo embedding's size (the echo encoder's; a set in which no row has
            an echo yet still gives the teacher inputs of its shape).
        version: the set's Delta version (None: the latest).

    Raises:
        TrainingDataError: no training set (run ``cardiolake features training-set``), or
            none of its rows has an ECG.
    """
    try:
        pinned = pin(training_set, lake_root, version=version)
    except TrainingDataError as exc:
        raise TrainingDataError(
            f"{exc}; write it with `cardiolake features apply && cardiolake features "
            f"training-set{' --entities ecg' if training_set == tables.DISTILLATION_SET else ''}`"
            " in the platform environment"
        ) from exc
    frame = read_columns(pinned, None).to_pandas()
    frame = frame.drop(columns=[c for c in _UNUSED_VECTORS if c in frame.columns])
    frame = frame.sort_values(["patient_key", "ecg_record_key"]).reset_index(drop=True)
    source = pin(examples, lake_root)
    ecg, mask, found = ecg_by_record(
        source, lake_root, data.ecg_fs, frame["ecg_record_key"].tolist(), key=examples_key
    )
    if not found.any():
        raise TrainingDataError(f"{pinned.tag}: no row's ECG is in {source.tag}")
    keep = np.flatnonzero(found)
    frame = frame.iloc[keep].reset_index(drop=True)
    echo, echo_present = _vector_column(frame, "echo_embedding", echo_dim)
    targets = np.full((len(frame), len(TARGETS)), np.nan, dtype=np.float32)
    for j, col in enumerate(TARGETS):
        if col in frame.columns:
            v = pd.to_numeric(frame[col].astype("float64"), errors="coerce").to_numpy()
            targets[:, j] = v
    return LabeledSet(
        frame=frame.drop(columns=["echo_embedding"], errors="ignore"), ecg=ecg[keep],
        lead_mask=mask[keep], echo=echo, echo_present=echo_present, targets=targets,
        pinned={"training_set": pinned, examples.name: source},
    )  # fmt: skip
