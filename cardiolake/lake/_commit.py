"""Driver side of a delta-rs write: add the tasks' files to the Delta log in one transaction.

The commit is the only step that changes what readers see. Before it, the table's folder may
hold new Parquet files, but no reader looks at files the log does not list; if the job dies
first, the table stays at its last committed version.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from cardiolake.lake._errors import (
    CommitConflictError,
    SchemaMismatchError,
    TableExistsError,
)
from cardiolake.lake._files import WrittenFile
from cardiolake.lake._schema import delta_schema, schema_difference

logger = logging.getLogger(__name__)

CommitMode = Literal["append", "overwrite", "create"]
#: Commit-info keys this package adds to every commit it makes.
WRITE_ID_KEY = "cardiolake.writeId"
OPERATION_KEY = "cardiolake.operation"
_OPTION = "cardiolake.spec"


@dataclass(frozen=True)
class RemovedFile:
    """A file a commit removes from the table (copy-on-write merges)."""

    path: str
    size: int | None
    partition_values: dict[str, str | None]
    num_rows: int | None


@dataclass(frozen=True)
class WriteSpec:
    """Everything the tasks and the commit of one delta-rs write need, passed as one option.

    Attributes:
        table_uri: the table's location.
        mode: ``append``, ``overwrite`` (replace all files) or ``create`` (fail if it exists).
        write_id: unique id of this write, recorded in the commit info.
        partition_by: partition columns.
        row_group_rows: rows per Parquet row group.
        compression: Parquet codec.
        operation: logical operation recorded in the commit info (``WRITE`` or ``MERGE``).
        read_version: the version the written data was derived from; when set, the commit
            fails with :class:`CommitConflictError` if the table moved past it.
        removes: files to drop in the same transaction (append mode only).
        overwrite_schema: let ``overwrite`` replace the table's schema.
        base_version: the table's version when the write started (-1: no table yet); the
            commit of this write, if it landed, is newer. None: unknown (scan recent history).
    """

    table_uri: str
    mode: CommitMode
    write_id: str
    partition_by: tuple[str, ...] = ()
    row_group_rows: int = 256
    compression: str = "snappy"
    operation: str = "WRITE"
    read_version: int | None = None
    removes: tuple[RemovedFile, ...] = field(default_factory=tuple)
    overwrite_schema: bool = False
    base_version: int | None = None

    def to_options(self) -> dict[str, str]:
        """The spec as Spark data source options."""
        return {_OPTION: json.dumps(asdict(self))}

    @classmethod
    def from_options(cls, options: Any) -> WriteSpec:
        """Rebuild the spec from data source options."""
        raw = json.loads(options[_OPTION])
        raw["partition_by"] = tuple(raw["partition_by"])
        raw["removes"] = tuple(RemovedFile(**r) for r in raw["removes"])
        return cls(**raw)


def commit_files(spec: WriteSpec, schema: pa.Schema, files: list[WrittenFile]) -> None:
    """Commit the written files (and removals) to the Delta log in one transaction.

    Args:
        spec: the write's spec.
        schema: the Arrow schema of the data (partition columns included).
        files: the files the tasks wrote.

    Raises:
        TableExistsError: ``create`` mode and the table exists.
        SchemaMismatchError: the data's schema differs from the table's.
        CommitConflictError: the table moved past ``spec.read_version``.
    """
    adds = [
        AddAction(f.path, f.size, f.partition_values, f.modification_time, True, f.stats)
        for f in files
    ]
    incoming = delta_schema(schema)
    metrics: dict[str, int] = {
        "numFiles": len(files),
        "numOutputRows": sum(f.num_rows for f in files),
        "numOutputBytes": sum(f.size for f in files),
    }
    uri = spec.table_uri
    if not DeltaTable.is_deltatable(uri):
        if spec.read_version is not None:
            raise CommitConflictError(f"{uri} disappeared after version {spec.read_version}")
        try:
            create_table_with_add_actions(
                uri,
                incoming,
                adds,
                mode="error",
                partition_by=list(spec.partition_by),
                commit_properties=_properties(spec, metrics),
            )
        except (CommitFailedError, DeltaError):
            if DeltaTable.is_deltatable(uri) and landed_version(uri, spec.write_id) is None:
                # another writer created the table between our check and our commit
                raise TableExistsError(f"a Delta table already exists at {uri}") from None
            raise
        return
    if spec.mode == "create":
        raise TableExistsError(f"a Delta table already exists at {uri}")
    table = (
        DeltaTable(uri) if spec.read_version is None else DeltaTable(uri, version=spec.read_version)
    )
    difference = schema_difference(table.schema(), incoming)
    partitions = list(table.metadata().partition_columns)
    if partitions != list(spec.partition_by):
        difference = f"partition columns {partitions} vs {list(spec.partition_by)}"
    if spec.mode == "overwrite":
        metrics.update(_removed_metrics(table))
        if difference is not None and spec.overwrite_schema:
            create_table_with_add_actions(
                uri,
                incoming,
                adds,
                mode="overwrite",
                partition_by=list(spec.partition_by),
                commit_properties=_properties(spec, metrics),
            )
            return
    if difference is not None:
        raise SchemaMismatchError(f"{uri}: {difference}")
    actions: list[AddAction | RemoveAction] = list(adds)
    # The deletion timestamp starts the file's retention clock: vacuum keeps it (and time
    # travel to the versions before this one) for the retention period after this commit.
    removed_at = int(time.time() * 1000)
    actions += [
        RemoveAction(r.path, True, removed_at, r.size, r.partition_values) for r in spec.removes
    ]
    if spec.removes:
        metrics["numRemovedFiles"] = len(spec.removes)
        removed_rows = [r.num_rows for r in spec.removes]
        if None not in removed_rows:
            metrics["numRemovedRows"] = sum(r for r in removed_rows if r is not None)
    if spec.mode == "append" and not actions:
        logger.info("%s: nothing to commit", uri)
        return
    try:
        table.create_write_transaction(
            actions,
            mode="overwrite" if spec.mode == "overwrite" else "append",
            schema=table.schema(),
            partition_by=partitions,
            commit_properties=_properties(spec, metrics),
        )
    except CommitFailedError as exc:
        if spec.read_version is None:
            raise
        raise CommitConflictError(
            f"{uri} changed after version {spec.read_version} that this write read ({exc})"
        ) from exc


def landed_version(uri: str, write_id: str, *, after: int | None = None) -> int | None:
    """The version the write with this id committed, or None when no commit of it is in the log.

    Every commit this package makes records its write id in the commit info, so whether a
    write landed is answered by the log alone, whatever the writer's process saw.

    Args:
        uri: the table's location.
        write_id: the write's id (:attr:`WriteSpec.write_id`).
        after: the table's version before the write started (-1 when there was no table);
            only newer commits are read. None reads the 100 newest.

    Returns:
        The committed version, or None.
    """
    entry = find_commit(uri, write_id, after=after)
    return None if entry is None else int(entry["version"])


def find_commit(uri: str, write_id: str, *, after: int | None = None) -> dict[str, Any] | None:
    """The commit info of the write with this id (as ``DeltaTable.history`` gives it), or None.

    Args:
        uri: the table's location.
        write_id: the write's id.
        after: as in :func:`landed_version`.
    """
    if not DeltaTable.is_deltatable(uri):
        return None
    table = DeltaTable(uri)
    limit = 100 if after is None else table.version() - after
    if limit <= 0:
        return None
    for entry in table.history(limit=limit):
        if entry.get(WRITE_ID_KEY) == write_id:
            return entry
    return None


def _properties(spec: WriteSpec, metrics: dict[str, int]) -> CommitProperties:
    custom: dict[str, Any] = {WRITE_ID_KEY: spec.write_id, "operationMetrics": metrics}
    if spec.operation != "WRITE":
        custom[OPERATION_KEY] = spec.operation
    # With a read version, the transaction starts from that snapshot and must land right
    # after it: no retry on top of someone else's commit.
    retries = 0 if spec.read_version is not None else None
    return CommitProperties(custom_metadata=custom, max_commit_retries=retries)


def _removed_metrics(table: DeltaTable) -> dict[str, int]:
    actions = pa.table(table.get_add_actions(flatten=True))
    metrics = {"numRemovedFiles": actions.num_rows}
    rows = actions.column("num_records").to_pylist() if actions.num_rows else []
    if None not in rows:
        metrics["numRemovedRows"] = int(sum(rows))
    return metrics
