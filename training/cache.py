"""ECG examples at the training rate, materialised once per pinned version.

Gold keeps ECGs at the canonical 500 Hz; the CPU default trains at 100 Hz. Reading and
resampling 500 Hz lists every epoch made the Petastorm loader slower than the ECG training
step (it decoded 5x the samples it kept). So the first reader of a pinned version writes its
ECG rows, resampled, as a Delta table under ``<lake>/_cache/`` (``list<float32>`` leads in
256-row groups), and every epoch and later run read that instead. The cache is keyed by the
source table, its Delta version and the rate, so it is never stale; runs still record the
source version as their lineage.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable, WriterProperties, write_deltalake

from training.data import iter_rows
from training.lake import PinnedTable
from training.transforms import LEAD_COLUMNS, ecg_matrices

logger = logging.getLogger(__name__)

#: Bumped whenever the cache's columns or values change, so an older cache is never read as a
#: newer one (3: format-2 caches resampled to 300 Hz held amplitudes tripled by the old
#: anti-alias filter).
CACHE_FORMAT = 3
#: Source columns carried into the cache when the source has them.
OPTIONAL_COLUMNS = ("device_kind",)
#: Rows per Parquet row group of the cache (Petastorm reads and shuffles by row group).
ROW_GROUP_ROWS = 256


def cache_root(lake_root: Path) -> Path:
    """Where derived training tables live (outside the ``layer/name`` table layout)."""
    return Path(lake_root).resolve() / "_cache"


def ecg_at_rate(pinned: PinnedTable, lake_root: Path, fs: int, *, key: str = "record_key"
                ) -> PinnedTable:  # fmt: skip
    """The ECG rows of a pinned table resampled to ``fs`` (built on first use).

    Args:
        pinned: a pinned table with silver lead columns (``gold.examples_pretrain``,
            ``gold.examples_labeled``).
        lake_root: the lake root.
        fs: the training rate.
        key: the column naming the ECG record (``ecg_record_key`` in examples_labeled); the
            cache calls it ``record_key``.

    Returns:
        The cache table pinned (its ``table`` is the source's, so loaders treat it alike).
    """
    name = f"{pinned.table.layer}_{pinned.table.name}_v{pinned.version}_ecg{fs}hz_f{CACHE_FORMAT}"
    path = cache_root(lake_root) / name
    if DeltaTable.is_deltatable(str(path)):
        return _pinned(pinned, path)
    columns = [key, "patient_key", "split", "fs", "n_samples", *LEAD_COLUMNS]
    source_columns = _columns(pinned)
    columns += [c for c in OPTIONAL_COLUMNS if c in source_columns]
    filt = ds.field("modality") == "ecg" if "modality" in source_columns else None
    if filt is not None:
        columns = ["modality", *columns]
    floats = pa.list_(pa.float32())
    batches = []
    for frame in iter_rows(pinned, columns, batch_rows=256, filter=filt):
        mats = ecg_matrices(frame, fs)
        out = {c: frame[c].to_numpy() for c in columns if c not in LEAD_COLUMNS and c != "fs"}
        out["record_key"] = out.pop(key)
        out["modality"] = np.array(["ecg"] * len(frame), dtype=object)
        out["fs"] = np.full(len(frame), fs, dtype=np.int32)
        out["n_samples"] = np.array([m[0].shape[-1] for m in mats], dtype=np.int32)
        arrays = {k: pa.array(v) for k, v in out.items()}
        for i, col in enumerate(LEAD_COLUMNS):
            arrays[col] = pa.array([m[0][i] if m[1][i] > 0 else None for m in mats], type=floats)
        batches.append(pa.table(arrays))
    if not batches:
        raise ValueError(f"{pinned.tag} has no ECG rows")
    table = pa.concat_tables(batches)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    props = WriterProperties(max_row_group_size=ROW_GROUP_ROWS)
    write_deltalake(str(tmp), table, mode="error", writer_properties=props)
    try:
        tmp.rename(path)  # whole or not at all: a killed build leaves no half cache
    except OSError:  # another process (a distributed worker) finished first
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("cached %s ECG rows of %s at %d Hz in %s", table.num_rows, pinned.tag, fs, path)
    return _pinned(pinned, path)


def _columns(pinned: PinnedTable) -> list[str]:
    return ds.dataset(pinned.paths[:1], format="parquet").schema.names


def _pinned(source: PinnedTable, path: Path) -> PinnedTable:
    dt = DeltaTable(str(path))
    files = tuple(sorted(f if "://" in f else Path(f).resolve().as_uri() for f in dt.file_uris()))
    cached = PinnedTable(source.table, str(path), source.version, files, 0)
    rows = ds.dataset(cached.paths, format="parquet").count_rows()
    return PinnedTable(source.table, str(path), source.version, files, rows)
