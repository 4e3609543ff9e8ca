"""A Spark Python data source (format ``cardiolake_delta``) that writes Delta through delta-rs.

Spark 4's Python Data Source API runs :meth:`_DeltaRsWriter.write` in every task (Parquet
files into the table folder, one per task and partition value) and then :meth:`commit` once on
the driver with every task's message, or :meth:`abort` when a task failed. The commit adds the
files to the Delta log in one transaction (:func:`~cardiolake.lake._commit.commit_files`).

Quirks worth knowing:

* ``commit``/``abort`` run in a Python worker process that Spark starts on the driver, not in
  the process that called ``save()``; they see the pickled writer, not the caller's state.
* Spark accepts only the ``append`` and ``overwrite`` save modes for Python data sources; the
  real mode travels in the :class:`~cardiolake.lake._commit.WriteSpec` option.
* When ``commit`` raises, Spark calls ``abort`` with the same messages. The commit may have
  landed all the same (a failure after the log entry was written: a lost reply from the store,
  a failing post-commit hook), so ``abort`` first looks for the write's id in the log and
  deletes the task files only when no commit of this write is there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
from pyspark import TaskContext
from pyspark.sql.datasource import DataSource, DataSourceArrowWriter, WriterCommitMessage
from pyspark.sql.types import StructType

from cardiolake.lake._commit import WriteSpec, commit_files, landed_version
from cardiolake.lake._files import FileLayout, ParquetSink, WrittenFile, delete_files, task_prefix
from cardiolake.lake._paths import filesystem
from cardiolake.lake._schema import arrow_schema

logger = logging.getLogger(__name__)

#: The Spark format name of the delta-rs writer.
FORMAT = "cardiolake_delta"


@dataclass
class FilesWritten(WriterCommitMessage):
    """What one task reports to the commit: the files it wrote."""

    write_id: str
    files: list[WrittenFile]


class DeltaRsDataSource(DataSource):
    """Write-only data source: tasks write Parquet, the driver commits them to a Delta log.

    Options: one, ``cardiolake.spec``, holding a JSON :class:`WriteSpec`.

    Example:
        >>> spark.dataSource.register(DeltaRsDataSource)
        >>> df.write.format(FORMAT).mode("append").options(**spec.to_options()).save()
    """

    @classmethod
    def name(cls) -> str:
        """The format name."""
        return FORMAT

    def writer(self, schema: StructType, overwrite: bool) -> _DeltaRsWriter:
        """The writer for one ``save()``; the mode comes from the spec, not ``overwrite``."""
        return _DeltaRsWriter(WriteSpec.from_options(self.options), schema)


class _DeltaRsWriter(DataSourceArrowWriter):
    """Pickled to every task and to the commit worker."""

    def __init__(self, spec: WriteSpec, schema: StructType) -> None:
        self.spec = spec
        self.schema: pa.Schema = arrow_schema(schema)

    def write(self, iterator: Iterator[pa.RecordBatch]) -> FilesWritten:
        """Write this task's batches to Parquet files under the table root."""
        context = TaskContext.get()
        partition_id = context.partitionId() if context is not None else 0
        attempt = context.attemptNumber() if context is not None else 0
        fs, root = filesystem(self.spec.table_uri)
        layout = FileLayout(
            fs=fs,
            root=root,
            schema=self.schema,
            partition_by=self.spec.partition_by,
            row_group_rows=self.spec.row_group_rows,
            compression=self.spec.compression,
            prefix=task_prefix(partition_id, self.spec.write_id, attempt),
        )
        sink = ParquetSink(layout)
        try:
            for batch in iterator:
                sink.write(batch)
            files = sink.close()
        except BaseException:
            sink.discard()
            raise
        return FilesWritten(write_id=self.spec.write_id, files=files)

    def commit(self, messages: list[WriterCommitMessage | None]) -> None:
        """Add every task's files to the Delta log in one transaction."""
        commit_files(self.spec, self.schema, [f for m in _ours(messages) for f in m.files])

    def abort(self, messages: list[WriterCommitMessage | None]) -> None:
        """Delete the files of the tasks that finished, unless the write's commit landed.

        A commit that raised after its log entry was written has made these files part of a
        table version; deleting them would leave that version unreadable, so they stay.
        """
        spec = self.spec
        try:
            version = landed_version(spec.table_uri, spec.write_id, after=spec.base_version)
        except Exception:
            # Unknown is treated as landed: an orphan file costs disk until a vacuum, a
            # deleted committed file costs the table.
            logger.warning(
                "%s: cannot tell whether write %s landed; keeping its files for vacuum",
                spec.table_uri, spec.write_id, exc_info=True,
            )  # fmt: skip
            return
        if version is not None:
            logger.warning(
                "%s: write %s raised but its commit landed as version %d; keeping its files",
                spec.table_uri, spec.write_id, version,
            )  # fmt: skip
            return
        fs, root = filesystem(spec.table_uri)
        delete_files(fs, [f"{root}/{f.path}" for m in _ours(messages) for f in m.files])


def _ours(messages: list[WriterCommitMessage | None]) -> Iterator[FilesWritten]:
    for message in messages:
        if isinstance(message, FilesWritten):
            yield message
