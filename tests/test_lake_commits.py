"""Safe commits: a commit that lands but raises keeps its files; conflicting merges retry.

The delta-rs commit runs in a Python worker Spark starts on the driver, out of reach of a
monkeypatch; the tests that fail a commit drive the data source writer by hand, as Spark
would (``write`` in tasks, then ``commit``, then ``abort`` when ``commit`` raised).
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import CommitProperties, DeltaTable, write_deltalake

from cardiolake import lake, tables
from cardiolake.lake._commit import WRITE_ID_KEY, WriteSpec, landed_version
from cardiolake.lake._retry import CommitRetry, is_commit_conflict, retry_on_conflict
from cardiolake.lake._source import DeltaRsDataSource, FilesWritten
from tests.test_lake import _batch

ECG_RAW = tables.ECG_RAW


def _files_of_every_version_exist(uri: str) -> bool:
    """No version of the log points at a deleted file."""
    latest = DeltaTable(uri).version()
    return all(
        Path(u).exists() for v in range(latest + 1) for u in DeltaTable(uri, version=v).file_uris()
    )


# -- a commit that lands and then raises ---------------------------------------------------


@pytest.mark.spark
@pytest.mark.parametrize("base_version", [0, None], ids=["base-version", "history-scan"])
def test_commit_that_lands_but_raises_leaves_the_table_readable(
    spark, lake_root: Path, monkeypatch: pytest.MonkeyPatch, base_version: int | None
) -> None:
    from cardiolake.lake import _source

    lake.write_table(_batch(spark, range(10)), ECG_RAW, lake_root=lake_root)
    uri = lake.table_uri(ECG_RAW, lake_root)
    df = _batch(spark, range(100, 150))
    spec = WriteSpec(
        table_uri=uri, mode="append", write_id=uuid.uuid4().hex, base_version=base_version
    )
    writer = DeltaRsDataSource(spec.to_options()).writer(df.schema, False)
    message = writer.write(iter(df.toArrow().to_batches(max_chunksize=20)))
    assert isinstance(message, FilesWritten)
    written = [Path(uri) / f.path for f in message.files]

    real_commit = _source.commit_files

    def lands_then_raises(*args: object, **kwargs: object) -> None:
        real_commit(*args, **kwargs)  # type: ignore[arg-type]
        raise OSError("connection reset while reading the store's reply to the commit")

    monkeypatch.setattr(_source, "commit_files", lands_then_raises)
    with pytest.raises(OSError, match="connection reset"):
        writer.commit([message])
    writer.abort([message, None])  # what Spark does when commit raised

    assert DeltaTable(uri).version() == 1 and landed_version(uri, spec.write_id) == 1
    assert all(p.exists() for p in written)  # abort kept the committed files
    assert _files_of_every_version_exist(uri)
    assert lake.read_table(spark, ECG_RAW, lake_root=lake_root).count() == 60
    assert DeltaTable(uri).to_pyarrow_dataset().to_table().num_rows == 60


@pytest.mark.spark
def test_commit_that_fails_before_landing_still_cleans_up(
    spark, lake_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cardiolake.lake import _source

    lake.write_table(_batch(spark, range(10)), ECG_RAW, lake_root=lake_root)
    uri = lake.table_uri(ECG_RAW, lake_root)
    df = _batch(spark, range(100, 120))
    spec = WriteSpec(table_uri=uri, mode="append", write_id=uuid.uuid4().hex, base_version=0)
    writer = DeltaRsDataSource(spec.to_options()).writer(df.schema, False)
    message = writer.write(iter(df.toArrow().to_batches()))
    written = [Path(uri) / f.path for f in message.files]

    def fails(*args: object, **kwargs: object) -> None:
        raise OSError("store unreachable")

    monkeypatch.setattr(_source, "commit_files", fails)
    with pytest.raises(OSError):
        writer.commit([message])
    writer.abort([message])
    assert not any(p.exists() for p in written) and DeltaTable(uri).version() == 0
    assert _files_of_every_version_exist(uri)


@pytest.mark.spark
def test_write_whose_job_fails_after_its_commit_returns_the_version(
    spark, lake_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver asks the log, not the exception, whether the write happened."""
    from pyspark.sql.readwriter import DataFrameWriter

    lake.write_table(_batch(spark, range(10)), ECG_RAW, lake_root=lake_root)
    real_save = DataFrameWriter.save

    def save_then_fail(self: DataFrameWriter, *args: object, **kwargs: object) -> None:
        real_save(self, *args, **kwargs)  # type: ignore[arg-type]
        raise RuntimeError("lost the driver's Python worker after the commit")

    monkeypatch.setattr(DataFrameWriter, "save", save_then_fail)
    assert lake.write_table(_batch(spark, range(10, 30)), ECG_RAW, lake_root=lake_root) == 1
    key = "sha256"
    assert lake.merge_table(_batch(spark, range(25, 35)), ECG_RAW, lake_root=lake_root, keys=[key])
    history = lake.table_history(ECG_RAW, lake_root=lake_root)
    assert [(h["operation"], h["rows_added"]) for h in history[:2]] == [("MERGE", 5), ("WRITE", 20)]

    def fail_before(self: DataFrameWriter, *args: object, **kwargs: object) -> None:
        raise RuntimeError("lost an executor before the commit")

    monkeypatch.setattr(DataFrameWriter, "save", fail_before)
    with pytest.raises(RuntimeError, match="before the commit"):
        lake.write_table(_batch(spark, range(40, 45)), ECG_RAW, lake_root=lake_root)
    monkeypatch.undo()
    assert lake.table_version(ECG_RAW, lake_root=lake_root) == 2
    assert lake.read_table(spark, ECG_RAW, lake_root=lake_root).count() == 35


def test_landed_version_reads_the_write_id_from_the_log(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    assert landed_version(uri, "w0") is None  # no table
    for i in range(3):
        props = CommitProperties(custom_metadata={WRITE_ID_KEY: f"w{i}"})
        write_deltalake(uri, pa.table({"x": [i]}), mode="append", commit_properties=props)
    assert [landed_version(uri, f"w{i}") for i in range(3)] == [0, 1, 2]
    assert landed_version(uri, "w1", after=0) == 1
    assert landed_version(uri, "w1", after=1) is None  # only newer commits are read
    assert landed_version(uri, "w9", after=-1) is None


# -- concurrent merges ------------------------------------------------------------------------


def _run_concurrently(spark, lake_root: Path, monkeypatch, batches: dict[str, list[int]]):
    """Run one merge per batch in its own thread; each plans before any of them commits.

    Returns the versions each merge returned and how often each planned (called write).
    """
    from cardiolake.lake import _deltars

    barrier = threading.Barrier(len(batches), timeout=180)
    plans: dict[str, int] = {name: 0 for name in batches}
    real_write = _deltars.write

    def write_after_everyone_planned(*args, **kwargs):
        name = threading.current_thread().name
        plans[name] += 1
        if plans[name] == 1:
            barrier.wait()
        return real_write(*args, **kwargs)

    monkeypatch.setattr(_deltars, "write", write_after_everyone_planned)
    retry = CommitRetry(attempts=4, backoff_seconds=0.05)
    versions: dict[str, int] = {}
    errors: list[BaseException] = []

    def merge(name: str) -> None:
        try:
            batch = _batch(spark, batches[name])
            versions[name] = lake.merge_table(
                batch, ECG_RAW, lake_root=lake_root, keys=["sha256"], retry=retry
            )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=merge, name=name, args=(name,)) for name in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    return versions, plans


@pytest.mark.spark
def test_two_concurrent_merges_into_the_same_table_both_land(
    spark, lake_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake.write_table(_batch(spark, range(5)), ECG_RAW, lake_root=lake_root)
    batches = {"a": [*range(10, 20), 99, 3], "b": [*range(20, 30), 99, 4]}

    versions, plans = _run_concurrently(spark, lake_root, monkeypatch, batches)

    assert sorted(versions.values()) == [1, 2]
    assert sorted(plans.values()) == [1, 2]  # the loser re-planned once, on the winner's version
    table = lake.read_table(spark, ECG_RAW, lake_root=lake_root)
    assert table.count() == 26 and table.select("sha256").distinct().count() == 26
    history = lake.table_history(ECG_RAW, lake_root=lake_root)
    assert [h["operation"] for h in history] == ["MERGE", "MERGE", "CREATE TABLE"]
    assert sorted(h["rows_added"] for h in history[:2]) == [10, 11]
    # the losing attempt's files were deleted by its abort: every file on disk is live
    uri = lake.table_uri(ECG_RAW, lake_root)
    on_disk = {p.name for p in Path(uri).rglob("*.parquet")}
    assert on_disk == {Path(u).name for u in DeltaTable(uri).file_uris()}


@pytest.mark.spark
def test_two_concurrent_merges_creating_the_table_both_land(
    spark, lake_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = {"a": [*range(0, 10), 50], "b": [*range(10, 20), 50]}

    versions, plans = _run_concurrently(spark, lake_root, monkeypatch, batches)

    assert sorted(versions.values()) == [0, 1] and sorted(plans.values()) == [1, 2]
    table = lake.read_table(spark, ECG_RAW, lake_root=lake_root)
    assert table.count() == 21 and table.select("sha256").distinct().count() == 21
    ops = [h["operation"] for h in lake.table_history(ECG_RAW, lake_root=lake_root)]
    assert ops == ["MERGE", "CREATE TABLE"]


@pytest.mark.spark
def test_merge_gives_up_after_the_configured_attempts(
    spark, lake_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cardiolake.lake import _deltars

    calls: list[int] = []

    def always_loses(*args: object, **kwargs: object) -> int:
        calls.append(1)
        raise lake.CommitConflictError("someone else committed first")

    monkeypatch.setattr(_deltars, "merge", always_loses)
    retry = CommitRetry(attempts=3, backoff_seconds=0.0)
    with pytest.raises(lake.CommitConflictError):
        lake.merge_table(
            _batch(spark, [1]), ECG_RAW, lake_root=lake_root, keys=["sha256"], retry=retry
        )
    assert len(calls) == 3


# -- the retry policy ------------------------------------------------------------------------


def test_retry_backs_off_and_is_bounded() -> None:
    waits: list[float] = []
    outcomes: list[object] = [lake.CommitConflictError("lost"), lake.CommitConflictError("lost"), 7]

    def attempt() -> int:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return int(outcome)  # type: ignore[call-overload]

    policy = CommitRetry(attempts=5, backoff_seconds=0.5, max_backoff_seconds=0.8, jitter=False)
    assert retry_on_conflict(attempt, policy, what="t", sleep=waits.append) == 7
    assert waits == [0.5, 0.8]  # doubled, capped

    def never() -> int:
        raise lake.CommitConflictError("lost")

    waits.clear()
    with pytest.raises(lake.CommitConflictError):
        retry_on_conflict(
            never, CommitRetry(attempts=3, jitter=False), what="t", sleep=waits.append
        )
    assert len(waits) == 2
    jittered = CommitRetry(backoff_seconds=1.0)
    assert all(0.5 <= jittered.wait(1) <= 1.0 for _ in range(20))


def test_only_conflicts_are_retried() -> None:
    calls: list[int] = []

    def broken() -> int:
        calls.append(1)
        raise lake.SchemaMismatchError("extra column")

    with pytest.raises(lake.SchemaMismatchError):
        retry_on_conflict(broken, CommitRetry(), what="t", sleep=lambda s: None)
    assert calls == [1]
    spark_text = RuntimeError(
        "An error occurred while calling o91.sql.\n: io.delta.exceptions."
        "ConcurrentAppendException: Files were added to the root of the table"
    )
    assert is_commit_conflict(spark_text)
    assert is_commit_conflict(lake.CommitConflictError("x"))
    assert not is_commit_conflict(ValueError("x"))
    with pytest.raises(ValueError):
        CommitRetry(attempts=0)
