"""Petastorm readers over pinned Delta versions, and the tensors each stage trains on.

A reader opens exactly the Parquet files of one pinned version (:func:`training.lake.pin`),
keeps the rows of one split, reads its shard of row groups (``cur_shard``/``shard_count``: a
distributed worker reads only its part), shuffles row groups and then rows in a buffer, and
runs the stage's transform (:mod:`training.transforms`) in its thread pool.

Example:
    >>> pinned = pin(tables.EXAMPLES_PRETRAIN, lake_root)
    >>> with ecg_loader(pinned, data, split="train", batch_size=64) as batches:
    ...     for batch in batches:
    ...         batch["ecg"].shape  # (64, 12, 800)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import torch

from cardiolake import tables
from training.lake import PinnedTable, read_columns
from training.settings import DataSettings
from training.transforms import (
    LEAD_COLUMNS,
    N_LEADS,
    BeatShape,
    EcgShape,
    EchoShape,
    beat_rows,
    ecg_rows,
    echo_rows,
    make_transform,
)

logger = logging.getLogger(__name__)

_ECG_FIELDS = ["record_key", "fs", "n_samples", *LEAD_COLUMNS]
_PRETRAIN_ECG_FIELDS = ["modality", "split", *_ECG_FIELDS]
_PRETRAIN_ECHO_FIELDS = ["modality", "split", "record_key", "frames", "n_frames", "size", "fps"]
_ALIGN_FIELDS = [
    "example_key", "patient_key", "split", "r_peaks_s", "ed_s", "clip_start_s", "fs", "n_samples",
    *LEAD_COLUMNS, "frames", "n_frames", "size", "fps", "frame_times_s",
]  # fmt: skip


@dataclass(frozen=True)
class Shard:
    """The part of a table one process reads.

    Attributes:
        index: this process's shard (its rank).
        count: shards in all (the world size).
    """

    index: int = 0
    count: int = 1


def _split_filter(split: str | None) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        return frame if split is None else frame[frame["split"] == split]

    return keep


def _chain(first: Any, then: Any, columns: list[str]) -> Any:
    import functools

    return functools.partial(_apply_both, first=first, then=then, columns=columns)


def _apply_both(frame: pd.DataFrame, first: Any, then: Any, columns: list[str]) -> pd.DataFrame:
    # Petastorm wants exactly the selected fields back
    return then(first(frame))[columns]


def _row_group_of(pinned: PinnedTable, column: str, value: str) -> list[str]:
    """Files holding at least one row with ``column == value`` (skips whole files early)."""
    keep = []
    for path, url in zip(pinned.paths, pinned.files, strict=True):
        if ds.dataset(path, format="parquet").count_rows(filter=ds.field(column) == value):
            keep.append(url)
    return keep


@contextlib.contextmanager
def batches(
    pinned: PinnedTable,
    *,
    fields: list[str],
    transform: Callable[[pd.DataFrame], pd.DataFrame],
    edit_fields: list[tuple[str, Any, tuple[int, ...], bool]],
    tensor_fields: list[str],
    split: str | None,
    batch_size: int,
    data: DataSettings,
    shard: Shard = Shard(),
    shuffle: bool = True,
    seed: int = 0,
    modality: str | None = None,
    drop_last: bool = True,
) -> Iterator[Iterator[dict[str, torch.Tensor]]]:
    """A one-epoch stream of tensor batches from a pinned table.

    Args:
        pinned: the table version.
        fields: columns to read (signal columns only where needed).
        transform: row-group function (split filter applied before it).
        edit_fields: what the transform adds (Petastorm ``TransformSpec`` fields).
        tensor_fields: the transform's output columns that become tensors.
        split: keep rows of this split (None: all).
        batch_size: rows per batch.
        data: loader knobs (workers, shuffle buffer).
        shard: this process's part of the row groups.
        shuffle: shuffle row groups and rows (off for inference).
        seed: seed of the row-group shuffle.
        modality: only open files holding rows of this modality.
        drop_last: drop the last short batch (training).

    Yields:
        An iterator of dicts of tensors.
    """
    from petastorm import TransformSpec, make_batch_reader
    from petastorm.errors import NoDataAvailableError
    from petastorm.pytorch import BatchedDataLoader

    files = _row_group_of(pinned, "modality", modality) if modality else list(pinned.files)
    if not files:
        yield iter(())
        return
    spec = TransformSpec(
        _chain(_split_filter(split), transform, tensor_fields),
        edit_fields=edit_fields,
        selected_fields=tensor_fields,
    )
    try:
        reader = make_batch_reader(
            files,
            schema_fields=fields,
            transform_spec=spec,
            reader_pool_type=data.reader_pool,
            workers_count=data.reader_workers,
            shuffle_row_groups=shuffle,
            seed=seed,
            cur_shard=shard.index if shard.count > 1 else None,
            shard_count=shard.count if shard.count > 1 else None,
            num_epochs=1,
        )
    except NoDataAvailableError:
        # fewer row groups than shards: this process has nothing (synced() stops the others)
        logger.warning("%s: no row groups for shard %d of %d", pinned.tag, shard.index, shard.count)
        yield iter(())
        return
    loader = BatchedDataLoader(
        reader,
        batch_size=batch_size,
        shuffling_queue_capacity=data.shuffle_capacity if shuffle else 0,
    )
    try:
        yield _dicts(loader, batch_size, drop_last)
    finally:
        reader.stop()
        reader.join()


def _dicts(loader: Any, batch_size: int, drop_last: bool) -> Iterator[dict[str, torch.Tensor]]:
    for batch in loader:
        out = dict(batch)
        n = len(next(iter(out.values())))
        if drop_last and n < batch_size:
            continue
        yield out


def ecg_shape(data: DataSettings, *, seconds: float, random_crop: bool, seed: int) -> EcgShape:
    """The ECG tensor shape a stage wants."""
    return EcgShape(fs=data.ecg_fs, seconds=seconds, random_crop=random_crop, seed=seed)


def ecg_loader(
    pinned: PinnedTable,
    data: DataSettings,
    *,
    split: str | None,
    batch_size: int,
    seconds: float = 10.0,
    shard: Shard = Shard(),
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = True,
) -> contextlib.AbstractContextManager[Iterator[dict[str, torch.Tensor]]]:
    """ECG examples of ``gold.examples_pretrain`` (or any table with silver lead columns).

    Each row becomes ``ecg`` (12 x ``seconds*ecg_fs``; 30 s mobile strips give a random
    10 s segment) and ``lead_mask``.
    """
    shape = ecg_shape(data, seconds=seconds, random_crop=shuffle, seed=seed)
    pretrain = pinned.table == tables.EXAMPLES_PRETRAIN
    return batches(
        pinned,
        fields=_PRETRAIN_ECG_FIELDS if pretrain else ["split", *_ECG_FIELDS],
        transform=make_transform(ecg_rows, shape),
        edit_fields=[
            ("ecg", np.float32, (N_LEADS, shape.samples), False),
            ("lead_mask", np.float32, (N_LEADS,), False),
        ],
        tensor_fields=["ecg", "lead_mask"],
        split=split,
        batch_size=batch_size,
        data=data,
        shard=shard,
        shuffle=shuffle,
        seed=seed,
        modality="ecg" if pretrain else None,
        drop_last=drop_last,
    )


def echo_loader(
    pinned: PinnedTable,
    data: DataSettings,
    *,
    split: str | None,
    batch_size: int,
    views: int = 2,
    shard: Shard = Shard(),
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = True,
) -> contextlib.AbstractContextManager[Iterator[dict[str, torch.Tensor]]]:
    """Echo examples of ``gold.examples_pretrain``: ``clips`` (views x frames x size x size)."""
    shape = EchoShape(
        size=data.echo_size, frames=data.echo_frames, clip_s=data.echo_clip_s, views=views,
        random_start=shuffle, seed=seed,
    )  # fmt: skip
    return batches(
        pinned,
        fields=_PRETRAIN_ECHO_FIELDS,
        transform=make_transform(echo_rows, shape),
        edit_fields=[("clips", np.uint8, (views, shape.frames, shape.size, shape.size), False)],
        tensor_fields=["clips"],
        split=split,
        batch_size=batch_size,
        data=data,
        shard=shard,
        shuffle=shuffle,
        seed=seed,
        modality="echo",
        drop_last=drop_last,
    )


def beat_shape(data: DataSettings, *, beats: int, seed: int) -> BeatShape:
    """The stage-2 beat shape of some data settings."""
    return BeatShape(
        fs=data.ecg_fs, ecg_before_s=data.beat_window_s[0], ecg_after_s=data.beat_window_s[1],
        size=data.echo_size, frames=data.beat_frames, key_before_s=data.key_window_s[0],
        key_after_s=data.key_window_s[1], beats=beats, seed=seed,
    )  # fmt: skip


def beat_loader(
    pinned: PinnedTable,
    data: DataSettings,
    *,
    split: str | None,
    batch_size: int,
    beats: int,
    shard: Shard = Shard(),
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = True,
) -> contextlib.AbstractContextManager[Iterator[dict[str, torch.Tensor]]]:
    """Beats of ``gold.examples_align``: ``ecg`` window, ``lead_mask``, ``keyframes``, patient."""
    shape = beat_shape(data, beats=beats, seed=seed)
    return batches(
        pinned,
        fields=_ALIGN_FIELDS,
        transform=make_transform(beat_rows, shape),
        edit_fields=[
            ("ecg", np.float32, (N_LEADS, shape.ecg_samples), False),
            ("lead_mask", np.float32, (N_LEADS,), False),
            ("keyframes", np.uint8, (shape.frames, shape.size, shape.size), False),
            ("patient", np.int64, (), False),
            ("beat", np.int64, (), False),
        ],
        tensor_fields=["ecg", "lead_mask", "keyframes", "patient", "beat"],
        split=split,
        batch_size=batch_size,
        data=data,
        shard=shard,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
    )


def count_rows(pinned: PinnedTable, *, split: str | None, modality: str | None = None) -> int:
    """Rows of a pinned table in one split (and modality)."""
    filt = None
    if split is not None:
        filt = ds.field("split") == split
    if modality is not None:
        m = ds.field("modality") == modality
        filt = m if filt is None else filt & m
    columns = ["split"] + (["modality"] if modality else [])
    return read_columns(pinned, columns, filter=filt).num_rows


def iter_rows(
    pinned: PinnedTable,
    columns: list[str],
    *,
    batch_rows: int = 64,
    filter: ds.Expression | None = None,
) -> Iterator[pd.DataFrame]:
    """Plain pyarrow-dataset batches of a pinned table, in file order (inference, baselines)."""
    dataset = ds.dataset(pinned.paths, format="parquet")
    for batch in dataset.to_batches(columns=columns, filter=filter, batch_size=batch_rows):
        if batch.num_rows:
            yield batch.to_pandas()
