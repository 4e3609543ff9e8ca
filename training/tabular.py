"""Tabular features of a training set (labs, ECG measurements) as a model input with a mask.

Feast hands the point-in-time join back with NaN where a patient had no draw or no
measurement; that absence is information, not a reason to drop the row. So every column
becomes a value (robustly standardised on the training split, skewed positive analytes on a
log scale first) and a presence flag; the model sees both. The spec is fitted once on the
train split and travels with the model, so validation, test and scoring use the same scales.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Training-set columns that are never inputs (keys, times, labels, bookkeeping).
NOT_FEATURES = frozenset(
    {"exam_key", "patient_key", "split", "label_time", "exam_time", "event_timestamp",
     "ecg_record_key", "record_key", "adjudicated", "triage_urgent", "agreement"}
)  # fmt: skip


def numeric_columns(frame: pd.DataFrame, exclude: Iterable[str] = ()) -> list[str]:
    """Numeric and boolean columns of a training set that can be model inputs."""
    skip = NOT_FEATURES | set(exclude)
    out = []
    for col in frame.columns:
        if col in skip or col.endswith("_model_version"):
            continue
        if pd.api.types.is_bool_dtype(frame[col]) or pd.api.types.is_numeric_dtype(frame[col]):
            out.append(col)
    return out


@dataclass(frozen=True)
class TabularSpec:
    """How a frame's columns become (values, presence) arrays.

    Attributes:
        columns: input columns, in order.
        log: per column, whether values are log-transformed first (skewed positive analytes).
        center: per column, the training median (after the log).
        scale: per column, the training IQR / 1.349 (a robust standard deviation), > 0.
    """

    columns: tuple[str, ...]
    log: tuple[bool, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]

    @classmethod
    def fit(cls, frame: pd.DataFrame, columns: Iterable[str]) -> TabularSpec:
        """Fit the scales on ``frame`` (the train split)."""
        cols, logs, centers, scales = [], [], [], []
        for col in columns:
            v = pd.to_numeric(frame[col], errors="coerce").astype(np.float64).to_numpy()
            v = v[np.isfinite(v)]
            use_log = bool(len(v) and v.min() > 0 and np.median(v) > 0
                           and np.percentile(v, 99) / np.median(v) > 10)  # fmt: skip
            if use_log:
                v = np.log(v)
            center = float(np.median(v)) if len(v) else 0.0
            iqr = float(np.subtract(*np.percentile(v, [75, 25]))) if len(v) else 0.0
            std = float(v.std()) if len(v) else 0.0
            scale = iqr / 1.349 if iqr > 0 else std if std > 0 else 1.0
            cols.append(col)
            logs.append(use_log)
            centers.append(center)
            scales.append(scale)
        return cls(tuple(cols), tuple(logs), tuple(centers), tuple(scales))

    @property
    def width(self) -> int:
        """Number of input columns."""
        return len(self.columns)

    def transform(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(N, F) standardised values (0 where absent, clipped to +-6) and (N, F) presence."""
        n = len(frame)
        values = np.zeros((n, self.width), dtype=np.float32)
        present = np.zeros((n, self.width), dtype=np.float32)
        for j, col in enumerate(self.columns):
            if col not in frame.columns:
                continue
            v = pd.to_numeric(frame[col], errors="coerce").astype(np.float64).to_numpy()
            ok = np.isfinite(v)
            if self.log[j]:
                ok &= v > 0
                v = np.log(np.where(ok, v, 1.0))
            z = np.clip((v - self.center[j]) / self.scale[j], -6.0, 6.0)
            values[ok, j] = z[ok]
            present[ok, j] = 1.0
        return values, present

    def as_dict(self) -> dict[str, list]:
        """JSON-ready form (logged with the model; rebuilt by :meth:`from_dict`)."""
        return {"columns": list(self.columns), "log": list(self.log),
                "center": list(self.center), "scale": list(self.scale)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, list]) -> TabularSpec:
        """The inverse of :meth:`as_dict`."""
        return cls(tuple(data["columns"]), tuple(bool(x) for x in data["log"]),
                   tuple(float(x) for x in data["center"]),
                   tuple(float(x) for x in data["scale"]))  # fmt: skip
