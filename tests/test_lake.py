"""Delta I/O on the delta-rs path (no Delta jars): writes, merges, time travel, atomicity."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from cardiolake import lake, tables
from cardiolake.lake._commit import WriteSpec
from cardiolake.lake._source import DeltaRsDataSource, FilesWritten
from cardiolake.tables import Table, get_table

ECG_RAW = tables.ECG_RAW


def _sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _batch(spark, ids, *, value: float = 0.0, samples: int = 8, partitions: int = 2):
    """Rows keyed by sha256 with a float32 signal, int8 frames and a binary blob."""
    from pyspark.sql import functions as F

    rows = [(i, _sha(i), f"P{i % 3}") for i in ids]
    df = spark.createDataFrame(rows, "n long, sha256 string, patient string")
    return df.repartition(partitions).select(
        "sha256",
        "patient",
        "n",
        F.array_repeat((F.col("n") + F.lit(value)).cast("float"), samples).alias("signal"),
        F.array_repeat((F.col("n") % 100).cast("tinyint"), 4).alias("frames"),
        F.col("sha256").cast("binary").alias("blob"),
        F.lit(dt.date(2024, 1, 2)).alias("ingest_date"),
    )


def _parquet_files(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*.parquet")}


# -- table names ------------------------------------------------------------------------


def test_table_names_and_paths(tmp_path: Path) -> None:
    assert get_table("bronze.ecg_raw") is not None and get_table("ecg_raw") == ECG_RAW
    assert get_table("silver.ecg") == tables.ECG
    assert tables.ECG.path(tmp_path) == tmp_path / "silver" / "ecg"
    assert [t.name for t in tables.tables_in("scoring")] == ["predictions"]
    assert [t.name for t in tables.tables_in("monitoring")] == ["drift"]
    assert len(tables.ALL_TABLES) == 25 and len({t.name for t in tables.ALL_TABLES}) == 25
    assert set(tables.LAYERS) == set(tables.LAYER_NAMES)
    with pytest.raises(KeyError):
        get_table("nope")
    with pytest.raises(ValueError):
        Table("silver", "a/b")
    assert lake.table_uri("gold.alignment", tmp_path) == str(
        tmp_path.resolve() / "gold" / "alignment"
    )


# -- writes and reads -------------------------------------------------------------------


@pytest.mark.spark
def test_write_append_read_and_time_travel(spark, lake_root: Path) -> None:
    assert lake.write_table(_batch(spark, range(10)), ECG_RAW, lake_root=lake_root) == 0
    assert lake.write_table(_batch(spark, range(10, 25)), ECG_RAW, lake_root=lake_root) == 1
    assert lake.table_version(ECG_RAW, lake_root=lake_root) == 1
    assert lake.read_table(spark, ECG_RAW, lake_root=lake_root).count() == 25
    first = lake.read_table(spark, ECG_RAW, lake_root=lake_root, version=0)
    assert sorted(r["n"] for r in first.select("n").collect()) == list(range(10))
    assert first.columns == ["sha256", "patient", "n", "signal", "frames", "blob", "ingest_date"]
    assert lake.read_arrow(ECG_RAW, lake_root=lake_root, version=0).num_rows == 10
    frame = lake.read_pandas(ECG_RAW, lake_root=lake_root, columns=["n"])
    assert sorted(frame["n"]) == list(range(25))


@pytest.mark.spark
def test_overwrite_error_and_ignore_modes(spark, lake_root: Path) -> None:
    lake.write_table(_batch(spark, range(10)), ECG_RAW, lake_root=lake_root, mode="error")
    with pytest.raises(lake.TableExistsError):
        lake.write_table(_batch(spark, range(3)), ECG_RAW, lake_root=lake_root, mode="error")
    assert (
        lake.write_table(_batch(spark, range(3)), ECG_RAW, lake_root=lake_root, mode="ignore") == 0
    )
    version = lake.write_table(
        _batch(spark, range(100, 104)), ECG_RAW, lake_root=lake_root, mode="overwrite"
    )
    assert version == 1
    got = sorted(r["n"] for r in lake.read_table(spark, ECG_RAW, lake_root=lake_root).collect())
    assert got == [100, 101, 102, 103]
    latest = lake.table_history(ECG_RAW, lake_root=lake_root)[0]
    assert (latest["operation"], latest["mode"]) == ("WRITE", "Overwrite")
    assert (latest["rows_added"], latest["rows_removed"]) == (4, 10)
    empty = lake.write_table(_batch(spark, []), ECG_RAW, lake_root=lake_root, mode="overwrite")
    assert empty == 2 and lake.read_table(spark, ECG_RAW, lake_root=lake_root).count() == 0


@pytest.mark.spark
def test_schema_mismatch_and_overwrite_schema(spark, lake_root: Path) -> None:
    from pyspark.sql import functions as F

    lake.write_table(_batch(spark, range(5)), ECG_RAW, lake_root=lake_root)
    wider = _batch(spark, range(5)).withColumn("extra", F.lit(1))
    with pytest.raises(lake.SchemaMismatchError, match="extra"):
        lake.write_table(wider, ECG_RAW, lake_root=lake_root)
    reordered = _batch(spark, range(5, 7)).select(
        "n", "sha256", "patient", "signal", "frames", "blob", "ingest_date"
    )
    assert lake.write_table(reordered, ECG_RAW, lake_root=lake_root) == 1
    lake.write_table(wider, ECG_RAW, lake_root=lake_root, mode="overwrite", overwrite_schema=True)
    assert "extra" in lake.read_table(spark, ECG_RAW, lake_root=lake_root).columns
    assert (
        lake.table_history(ECG_RAW, lake_root=lake_root)[0]["operation"]
        == "CREATE OR REPLACE TABLE"
    )


# -- merge --------------------------------------------------------------------------------


@pytest.mark.spark
def test_merge_inserts_only_new_keys(spark, lake_root: Path) -> None:
    batch = _batch(spark, range(10))
    assert lake.merge_table(batch, ECG_RAW, lake_root=lake_root, keys=["sha256"]) == 0
    # the same batch again: nothing new, no new version
    assert lake.merge_table(batch, ECG_RAW, lake_root=lake_root, keys=["sha256"]) == 0
    assert lake.read_table(spark, ECG_RAW, lake_root=lake_root).count() == 10
    # old + new keys, each twice within the batch: only the 5 new keys land, once each
    mixed = _batch(spark, range(5, 15)).unionByName(_batch(spark, range(5, 15), partitions=3))
    assert lake.merge_table(mixed, ECG_RAW, lake_root=lake_root, keys=["sha256"]) == 1
    table = lake.read_table(spark, ECG_RAW, lake_root=lake_root)
    assert table.count() == 15 and table.select("sha256").distinct().count() == 15
    merge = lake.table_history(ECG_RAW, lake_root=lake_root)[0]
    assert (merge["operation"], merge["rows_added"]) == ("MERGE", 5)


@pytest.mark.spark
def test_merge_keeps_one_row_per_duplicate_key_deterministically(spark, tmp_path: Path) -> None:
    chosen = []
    for run, parts in enumerate((1, 3, 2)):
        # one key, three versions of its row spread over the partitions
        versions = [_batch(spark, [7], value=v, partitions=parts) for v in (5.0, -1.0, 2.0)]
        batch = versions[0].unionByName(versions[1]).unionByName(versions[2]).repartition(parts)
        root = tmp_path / f"run{run}"
        lake.merge_table(batch, ECG_RAW, lake_root=root, keys=["sha256"])
        rows = lake.read_table(spark, ECG_RAW, lake_root=root).collect()
        assert len(rows) == 1
        chosen.append(rows[0]["signal"][0])
    # the same version whatever the partitioning (ties on the scalar columns are broken by a
    # hash of the signal, never by comparing signals element by element)
    assert len(set(chosen)) == 1 and chosen[0] in {12.0, 6.0, 9.0}


@pytest.mark.spark
def test_merge_update_rewrites_only_files_with_matched_keys(spark, lake_root: Path) -> None:
    from pyspark.sql import functions as F

    lake.write_table(_batch(spark, range(0, 10), partitions=1), ECG_RAW, lake_root=lake_root)
    lake.write_table(_batch(spark, range(10, 20), partitions=1), ECG_RAW, lake_root=lake_root)
    before = set(lake.table_files(ECG_RAW, lake_root=lake_root))
    update = _batch(spark, [3, 4, 50], value=1000.0)
    version = lake.merge_table(
        update, ECG_RAW, lake_root=lake_root, keys=["sha256"], when_matched="update"
    )
    assert version == 2
    table = lake.read_table(spark, ECG_RAW, lake_root=lake_root)
    assert table.count() == 21
    changed = {r["n"] for r in table.where(F.col("signal")[0] >= 1000).collect()}
    assert changed == {3, 4, 50}
    after = set(lake.table_files(ECG_RAW, lake_root=lake_root))
    assert len(before & after) == 1  # the file of keys 10..19 was left alone
    entry = lake.table_history(ECG_RAW, lake_root=lake_root)[0]
    assert (entry["operation"], entry["rows_added"], entry["rows_removed"]) == ("MERGE", 11, 10)


# -- layout, types, partitions ------------------------------------------------------------


@pytest.mark.spark
def test_array_types_round_trip_with_small_row_groups(spark, lake_root: Path) -> None:
    batch = _batch(spark, range(600), samples=100, partitions=1)
    lake.write_table(batch, tables.ECG, lake_root=lake_root)
    (path,) = lake.table_files(tables.ECG, lake_root=lake_root)
    parquet = pq.ParquetFile(path)
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
    assert sizes == [256, 256, 88]
    schema = parquet.schema_arrow
    assert schema.field("signal").type == pa.list_(pa.float32())
    assert schema.field("frames").type == pa.list_(pa.int8())
    assert schema.field("blob").type == pa.binary()
    back = lake.read_table(spark, tables.ECG, lake_root=lake_root).where("n = 123").first()
    assert back["signal"] == [123.0] * 100 and back["frames"] == [23] * 4
    assert back["blob"] == _sha(123).encode()
    arrow = lake.read_arrow(tables.ECG, lake_root=lake_root, columns=["signal"])
    assert arrow.schema.field("signal").type.value_type == pa.float32()

    lake.write_table(batch, tables.ECHO, lake_root=lake_root, row_group_rows=100)
    (path,) = lake.table_files(tables.ECHO, lake_root=lake_root)
    assert pq.ParquetFile(path).metadata.num_row_groups == 6


@pytest.mark.spark
def test_partitioned_table(spark, lake_root: Path) -> None:
    from pyspark.sql import functions as F

    site = (
        F.when(F.col("n") < 3, F.lit("st mary's"))
        .when(F.col("n") < 6, F.lit("north"))
        .otherwise(None)
    )
    batch = _batch(spark, range(8)).withColumn("site", site)
    lake.write_table(batch, tables.LABS, lake_root=lake_root, partition_by=["site"])
    lake.write_table(batch.where("n = 0"), tables.LABS, lake_root=lake_root)  # keeps partitioning
    with pytest.raises(lake.SchemaMismatchError, match="partitioned by"):
        lake.write_table(batch, tables.LABS, lake_root=lake_root, partition_by=["patient"])
    uri = Path(lake.table_uri(tables.LABS, lake_root))
    assert {p.name for p in uri.iterdir() if p.is_dir()} == {
        "_delta_log", "site=st%20mary%27s", "site=north", "site=__HIVE_DEFAULT_PARTITION__",
    }  # fmt: skip
    assert DeltaTable(str(uri)).metadata().partition_columns == ["site"]
    got = lake.read_table(spark, tables.LABS, lake_root=lake_root).groupBy("site").count().collect()
    assert {r["site"]: r["count"] for r in got} == {"st mary's": 4, "north": 3, None: 2}
    arrow = lake.read_arrow(tables.LABS, lake_root=lake_root, columns=["site"])
    assert sorted(arrow.column("site").to_pylist(), key=str).count("st mary's") == 4
    # copy-on-write merge on a partitioned table keeps partition values intact
    lake.merge_table(_batch(spark, [1, 7]).withColumn("site", F.lit("north")), tables.LABS,
                     lake_root=lake_root, keys=["sha256"], when_matched="update")  # fmt: skip
    got = lake.read_table(spark, tables.LABS, lake_root=lake_root).groupBy("site").count().collect()
    assert {r["site"]: r["count"] for r in got} == {"st mary's": 3, "north": 5, None: 1}


# -- atomicity ----------------------------------------------------------------------------


def _spec_writer(spark, df, uri: str, **spec):
    """The data source writer Spark would build for this DataFrame (for driving it by hand)."""
    options = WriteSpec(table_uri=uri, write_id="killed", **spec).to_options()
    return DeltaRsDataSource(options).writer(df.schema, False)


@pytest.mark.spark
def test_job_killed_before_commit_leaves_last_version(spark, lake_root: Path, monkeypatch) -> None:
    lake.write_table(_batch(spark, range(10)), ECG_RAW, lake_root=lake_root)
    uri = lake.table_uri(ECG_RAW, lake_root)
    committed = set(DeltaTable(uri).file_uris())
    df = _batch(spark, range(100, 150))
    writer = _spec_writer(spark, df, uri, mode="append")
    # tasks ran and wrote their files ...
    batches = df.toArrow().to_batches(max_chunksize=20)
    message = writer.write(iter(batches))
    assert isinstance(message, FilesWritten) and message.files
    written = {f"{uri}/{f.path}" for f in message.files}
    assert all(Path(p).exists() for p in written)
    # ... and the job died before the commit: readers see the last committed version only
    assert DeltaTable(uri).version() == 0 and set(DeltaTable(uri).file_uris()) == committed
    assert lake.read_table(spark, ECG_RAW, lake_root=lake_root).count() == 10

    # a commit that fails half-way changes nothing either, and abort removes the files
    def boom(*args, **kwargs):
        raise OSError("driver killed during commit")

    monkeypatch.setattr(DeltaTable, "create_write_transaction", boom)
    with pytest.raises(OSError, match="killed"):
        writer.commit([message])
    monkeypatch.undo()
    assert DeltaTable(uri).version() == 0
    writer.abort([message, None])
    assert not any(Path(p).exists() for p in written)
    assert lake.read_table(spark, ECG_RAW, lake_root=lake_root).count() == 10


@pytest.mark.spark
def test_failing_task_aborts_the_whole_write(spark, lake_root: Path) -> None:
    from pyspark.sql import functions as F

    lake.write_table(_batch(spark, range(10)), ECG_RAW, lake_root=lake_root)
    root = Path(lake.table_uri(ECG_RAW, lake_root))
    files = _parquet_files(root)

    @F.udf("long")
    def explode_on_13(n):
        if n == 13:
            raise ValueError("corrupt record")
        return n

    bad = _batch(spark, range(10, 40), partitions=3).withColumn("n", explode_on_13("n"))
    with pytest.raises(Exception, match="corrupt record"):
        lake.write_table(bad, ECG_RAW, lake_root=lake_root)
    table = DeltaTable(str(root))
    assert table.version() == 0
    # the log still lists only the first write's files; abort deletes the files of tasks that
    # finished before it, and a task still running when the job aborts may leave an orphan
    # file behind (Spark does not report it to abort): unreferenced, ignored, vacuumed later
    assert {Path(u).name for u in table.file_uris()} == files
    assert lake.read_table(spark, ECG_RAW, lake_root=lake_root).count() == 10


@pytest.mark.spark
def test_commit_conflicts_when_table_moved_past_read_version(spark, lake_root: Path) -> None:
    lake.write_table(_batch(spark, range(5)), ECG_RAW, lake_root=lake_root)
    uri = lake.table_uri(ECG_RAW, lake_root)
    df = _batch(spark, range(5, 10))
    writer = _spec_writer(spark, df, uri, mode="append", operation="MERGE", read_version=0)
    message = writer.write(iter(df.toArrow().to_batches()))
    lake.write_table(_batch(spark, range(20, 22)), ECG_RAW, lake_root=lake_root)  # someone else
    with pytest.raises(lake.CommitConflictError):
        writer.commit([message])
    assert DeltaTable(uri).version() == 1


# -- the log as other tools see it --------------------------------------------------------


@pytest.mark.spark
def test_tables_open_with_deltalake(spark, lake_root: Path) -> None:
    lake.write_table(_batch(spark, range(4)), ECG_RAW, lake_root=lake_root)
    lake.merge_table(_batch(spark, range(2, 6)), ECG_RAW, lake_root=lake_root, keys=["sha256"])
    table = DeltaTable(lake.table_uri(ECG_RAW, lake_root))
    assert table.version() == 1
    assert [f.name for f in table.schema().fields][:3] == ["sha256", "patient", "n"]
    assert [h["operation"] for h in table.history()] == ["WRITE", "CREATE TABLE"]
    assert table.to_pyarrow_table().num_rows == 6
    assert DeltaTable(table.table_uri, version=0).to_pyarrow_table().num_rows == 4
    stats = pa.table(table.get_add_actions(flatten=True))
    assert sum(stats.column("num_records").to_pylist()) == 6
    assert min(stats.column("min.n").to_pylist()) == 0
    history = lake.table_history(ECG_RAW, lake_root=lake_root)
    assert [h["operation"] for h in history] == ["MERGE", "CREATE TABLE"]
    assert [h["rows_added"] for h in history] == [2, 4]


@pytest.mark.spark
def test_catalog_functions(spark, lake_root: Path) -> None:
    assert lake.list_tables(lake_root) == []
    assert not lake.table_exists(tables.LABELS, lake_root=lake_root)
    with pytest.raises(lake.TableNotFoundError):
        lake.read_table(spark, tables.LABELS, lake_root=lake_root)
    with pytest.raises(lake.TableNotFoundError):
        lake.table_version(tables.LABELS, lake_root=lake_root)
    lake.write_table(spark.range(3), tables.LABELS, lake_root=lake_root)
    lake.write_table(spark.range(3), "scoring.predictions", lake_root=lake_root)
    assert lake.table_exists(tables.LABELS, lake_root=lake_root)
    assert lake.list_tables(lake_root) == [tables.PREDICTIONS, tables.LABELS]


@pytest.mark.spark
def test_commit_errors_surface_as_lake_errors(spark, lake_root: Path) -> None:
    """An error raised by the commit (in Spark's driver-side worker) reaches the caller typed."""
    from cardiolake.lake import _deltars

    lake.write_table(_batch(spark, range(3)), ECG_RAW, lake_root=lake_root)
    uri = lake.table_uri(ECG_RAW, lake_root)
    files = _parquet_files(Path(uri))
    # as if another job created the table between our existence check and our commit
    with pytest.raises(lake.TableExistsError, match="already exists"):
        _deltars.write(
            _batch(spark, range(3, 6)), uri, mode="create", partition_by=[], row_group_rows=256
        )
    assert _parquet_files(Path(uri)) == files  # Spark called abort after the failed commit
    assert DeltaTable(uri).version() == 0


@pytest.mark.spark
def test_untyped_columns_are_refused(spark, lake_root: Path) -> None:
    from pyspark.sql import functions as F

    with pytest.raises(ValueError, match="no type"):
        lake.write_table(spark.range(2).withColumn("x", F.lit(None)), ECG_RAW, lake_root=lake_root)
    with pytest.raises(ValueError, match="partition column"):
        lake.write_table(spark.range(2), ECG_RAW, lake_root=lake_root, partition_by=["nope"])
