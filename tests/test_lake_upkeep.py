"""Table upkeep: compaction (OPTIMIZE, Z-order) and vacuum on real Delta tables.

Most tables here are written by ``deltalake.write_deltalake`` (no Spark needed); the Spark
test compacts a table the lake's own writer made (exact row groups, copy-on-write merge).
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.transaction import RemoveAction

from cardiolake import lake, tables
from cardiolake.cli import main

LABS = tables.LABS


def _rows(start: int, count: int, *, site: str | None = None) -> pa.Table:
    n = list(range(start, start + count))
    columns = {
        "key": [f"k{i:05d}" for i in n],
        "n": pa.array(n, pa.int64()),
        "value": pa.array([i / 4 for i in n], pa.float64()),
        "signal": pa.array([[float(i)] * 6 for i in n], pa.list_(pa.float32())),
        "taken": pa.array(
            [dt.datetime(2024, 1, 1, tzinfo=dt.UTC)] * count, pa.timestamp("us", "UTC")
        ),
    }
    if site is not None:
        columns["site"] = [site] * count
    return pa.table(columns)


def _appends(uri: str, batches: int, *, rows: int = 50, **kwargs: object) -> None:
    for b in range(batches):
        write_deltalake(uri, _rows(b * rows, rows), mode="append", **kwargs)  # type: ignore[arg-type]


def _content(table: DeltaTable) -> list[dict[str, object]]:
    return sorted(table.to_pyarrow_dataset().to_table().to_pylist(), key=lambda r: str(r["key"]))


def _read_version(uri: str, version: int) -> int:
    """Rows of a version, reading every file of it (fails when a file is gone)."""
    return DeltaTable(uri, version=version).to_pyarrow_dataset().to_table().num_rows


def _all_files_exist(uri: str, version: int) -> bool:
    return all(Path(u).exists() for u in DeltaTable(uri, version=version).file_uris())


# -- optimize --------------------------------------------------------------------------------


def test_optimize_compacts_small_files_and_keeps_every_row(lake_root: Path) -> None:
    uri = lake.table_uri(LABS, lake_root)
    _appends(uri, 6)
    before = DeltaTable(uri)
    content = _content(before)

    result = lake.optimize_table(LABS, lake_root=lake_root)

    assert (result.files_before, result.files_after) == (6, 1)
    assert (result.version_before, result.version_after) == (5, 6)
    assert result.rows == 300 and result.small_files == 6 and result.zorder == ()
    after = DeltaTable(uri)
    assert len(after.file_uris()) == 1 and _content(after) == content
    assert after.history(1)[0]["operation"] == "OPTIMIZE"
    assert lake.table_history(LABS, lake_root=lake_root)[0]["operation"] == "OPTIMIZE"
    # the schema is the table's own, and earlier versions still read their own files
    assert pq.ParquetFile(after.file_uris()[0]).schema_arrow.field("signal").type == pa.list_(
        pa.float32()
    )
    assert all(_read_version(uri, v) == 50 * (v + 1) for v in range(6))
    # compaction is idempotent: a second run finds nothing to do and commits nothing
    again = lake.optimize_table(LABS, lake_root=lake_root)
    assert (again.files_before, again.files_after, again.version_after) == (1, 1, 6)


def test_optimize_keeps_the_lakes_row_group_size(lake_root: Path) -> None:
    uri = lake.table_uri(tables.ECG, lake_root)
    _appends(uri, 4, rows=300)  # signal arrays: 256-row groups, as the lake writes them
    lake.optimize_table(tables.ECG, lake_root=lake_root)
    (path,) = DeltaTable(uri).file_uris()
    meta = pq.ParquetFile(path).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes == [256] * 4 + [176]
    assert meta.row_group(0).column(0).compression == "SNAPPY"
    settings = lake.OptimizeSettings(row_group_rows=100)
    _appends(uri, 2, rows=10)
    lake.optimize_table(tables.ECG, lake_root=lake_root, settings=settings)
    assert len(DeltaTable(uri).file_uris()) == 1


def test_optimize_partitioned_table_compacts_each_partition(lake_root: Path) -> None:
    uri = lake.table_uri(LABS, lake_root)
    for b in range(3):
        for site in ("north", "south", "east"):
            write_deltalake(uri, _rows(b * 10, 10, site=site), mode="append", partition_by=["site"])
    result = lake.optimize_table(LABS, lake_root=lake_root)
    assert (result.files_before, result.files_after, result.rows) == (9, 3, 90)
    table = DeltaTable(uri)
    assert sorted(Path(u).parent.name for u in table.file_uris()) == [
        "site=east", "site=north", "site=south",
    ]  # fmt: skip
    counts = table.to_pyarrow_dataset().to_table().group_by("site").aggregate([("n", "count")])
    assert sorted(counts.column("n_count").to_pylist()) == [30, 30, 30]


def test_small_target_size_leaves_large_files_alone(lake_root: Path) -> None:
    uri = lake.table_uri(LABS, lake_root)
    _appends(uri, 4)
    size = min(os.path.getsize(u) for u in DeltaTable(uri).file_uris())
    result = lake.optimize_table(
        LABS, lake_root=lake_root, settings=lake.OptimizeSettings(target_file_bytes=size)
    )
    assert result.small_files == 0 and result.files_after == 4
    assert result.version_after == result.version_before


def test_zorder_clusters_once_and_checks_its_columns(lake_root: Path) -> None:
    uri = lake.table_uri(LABS, lake_root)
    for b in range(4):  # interleaved values: every file spans the whole range of n
        rows = _rows(0, 40).take(list(range(b, 40, 4)))
        write_deltalake(uri, rows, mode="append")
    content = _content(DeltaTable(uri))
    settings = lake.OptimizeSettings(zorder={"labs": ["n"]})
    assert settings.zorder_for(LABS) == ("n",) and settings.zorder_for(tables.ECG) == ()
    result = lake.optimize_table(LABS, lake_root=lake_root, settings=settings)
    assert result.zorder == ("n",) and result.files_after == 1
    table = DeltaTable(uri)
    assert _content(table) == content
    (path,) = table.file_uris()
    assert pq.read_table(path).column("n").to_pylist() == list(range(40))  # clustered by n
    # unchanged since the last Z-order by the same columns: no rewrite, no new version
    again = lake.optimize_table(LABS, lake_root=lake_root, settings=settings)
    assert again.version_after == again.version_before == result.version_after
    with pytest.raises(ValueError, match="no column"):
        lake.optimize_table(
            LABS, lake_root=lake_root, settings=lake.OptimizeSettings(zorder={"labs": ["nope"]})
        )


def test_optimize_dry_run_changes_nothing(lake_root: Path) -> None:
    uri = lake.table_uri(LABS, lake_root)
    _appends(uri, 3)
    result = lake.optimize_table(
        LABS, lake_root=lake_root, settings=lake.OptimizeSettings(dry_run=True)
    )
    assert (result.files_before, result.files_after, result.small_files) == (3, 3, 3)
    assert DeltaTable(uri).version() == 2


# -- vacuum --------------------------------------------------------------------------------


def test_vacuum_refuses_a_retention_below_the_tables_minimum(lake_root: Path) -> None:
    uri = lake.table_uri(LABS, lake_root)
    _appends(uri, 1)
    with pytest.raises(lake.RetentionTooShortError, match="168 h"):
        lake.vacuum_table(
            LABS, lake_root=lake_root, settings=lake.VacuumSettings(retention_hours=24)
        )
    assert lake.retention_minimum_hours(DeltaTable(uri)) == 168
    # a table's own deletedFileRetentionDuration is its minimum
    other = lake.table_uri(tables.NOTES, lake_root)
    write_deltalake(
        other, _rows(0, 5), configuration={"delta.deletedFileRetentionDuration": "interval 2 days"}
    )
    assert lake.retention_minimum_hours(DeltaTable(other)) == 48
    lake.vacuum_table(
        tables.NOTES, lake_root=lake_root, settings=lake.VacuumSettings(retention_hours=48)
    )
    with pytest.raises(lake.RetentionTooShortError):
        lake.vacuum_table(
            tables.NOTES, lake_root=lake_root, settings=lake.VacuumSettings(retention_hours=47)
        )


def test_vacuum_after_optimize_respects_the_retention(lake_root: Path) -> None:
    uri = lake.table_uri(LABS, lake_root)
    _appends(uri, 5)
    lake.optimize_table(LABS, lake_root=lake_root)  # version 5 removes the 5 small files
    on_disk = lake._upkeep.data_files_on_disk(uri)
    assert len(on_disk) == 6

    # default retention (168 h): the small files were removed moments ago, so all stay and
    # time travel reads every version
    kept = lake.vacuum_table(LABS, lake_root=lake_root)
    assert kept.deleted == () and (kept.disk_files_before, kept.disk_files_after) == (6, 6)
    assert all(_read_version(uri, v) == 50 * (v + 1) for v in range(5))

    # a dry run with no retention lists exactly the removed files and deletes nothing
    short = lake.VacuumSettings(retention_hours=0, allow_short_retention=True, dry_run=True)
    listed = lake.vacuum_table(LABS, lake_root=lake_root, settings=short)
    live = {Path(u).name for u in DeltaTable(uri).file_uris()}
    assert set(listed.deleted) == set(on_disk) - live
    assert lake._upkeep.data_files_on_disk(uri) == on_disk

    # with no retention the old files go: the latest version reads, the old ones cannot
    swept = lake.vacuum_table(
        LABS, lake_root=lake_root,
        settings=lake.VacuumSettings(retention_hours=0, allow_short_retention=True),
    )  # fmt: skip
    assert len(swept.deleted) == 5 and swept.disk_files_after == 1
    assert _read_version(uri, DeltaTable(uri).version()) == 250
    assert _read_version(uri, 5) == 250
    with pytest.raises(OSError):
        _read_version(uri, 0)


def test_vacuum_keeps_the_files_of_versions_inside_the_retention(lake_root: Path) -> None:
    """Files removed 48 h ago go with a 24 h retention; files removed 1 h ago stay."""
    uri = lake.table_uri(LABS, lake_root)
    _appends(uri, 3)  # versions 0..2, one file each
    table = DeltaTable(uri)
    files = sorted(
        pa.table(table.get_add_actions(flatten=True)).to_pylist(), key=lambda a: a["path"]
    )
    by_version = {
        v: {Path(u).name for u in DeltaTable(uri, version=v).file_uris()} for v in range(3)
    }
    first = next(a for a in files if a["path"] in by_version[0])
    second = next(a for a in files if a["path"] in by_version[1] - by_version[0])
    now_ms = int(time.time() * 1000)
    hour = 3600 * 1000
    for action, age in ((first, 48 * hour), (second, 1 * hour)):  # versions 3 and 4
        remove = RemoveAction(action["path"], True, now_ms - age, action["size_bytes"], {})
        DeltaTable(uri).create_write_transaction([remove], mode="append", schema=table.schema())
    assert _read_version(uri, 4) == 50

    settings = lake.VacuumSettings(retention_hours=24, allow_short_retention=True)
    result = lake.vacuum_table(LABS, lake_root=lake_root, settings=settings)

    assert result.deleted == (first["path"],)
    # version 3 (removed the first file, still holds the second and third) reads in full
    assert _read_version(uri, 3) == 100 and _all_files_exist(uri, 3)
    assert _read_version(uri, 4) == 50 and _read_version(uri, DeltaTable(uri).version()) == 50
    assert not _all_files_exist(uri, 2)  # older than the retention: gone


def test_vacuum_deletes_old_orphans_only(lake_root: Path) -> None:
    """Files no version references (a write that died before its commit) go when old enough."""
    uri = lake.table_uri(LABS, lake_root)
    _appends(uri, 1)
    old = Path(uri) / f"part-00000-{uuid.uuid4().hex}-a0-dead.snappy.parquet"
    fresh = Path(uri) / f"part-00001-{uuid.uuid4().hex}-a0-live.snappy.parquet"
    for orphan in (old, fresh):
        pq.write_table(_rows(0, 3), orphan)
    week_ago = time.time() - 8 * 24 * 3600
    os.utime(old, (week_ago, week_ago))
    listed = lake.vacuum_table(
        LABS, lake_root=lake_root, settings=lake.VacuumSettings(orphans=False, dry_run=True)
    )
    assert listed.deleted == ()
    result = lake.vacuum_table(LABS, lake_root=lake_root)
    assert result.deleted == (old.name,) and fresh.exists()  # fresh: maybe a running write
    assert _read_version(uri, 0) == 50


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        lake.OptimizeSettings(target_file_bytes=10)
    with pytest.raises(ValueError):
        lake.VacuumSettings(retention_hours=-1)
    with pytest.raises(ValueError, match="nope"):
        lake.OptimizeSettings(zorder={"nope": ["x"]})


# -- the lake's own tables (Spark writer, copy-on-write merge) --------------------------------


@pytest.mark.spark
def test_optimize_and_vacuum_a_table_the_lake_wrote(spark, lake_root: Path) -> None:
    from tests.test_lake import _batch

    raw = tables.ECG_RAW
    for start in range(0, 400, 100):
        lake.write_table(_batch(spark, range(start, start + 100)), raw, lake_root=lake_root)
    lake.merge_table(
        _batch(spark, [5, 205, 900], value=1000.0), raw, lake_root=lake_root, keys=["sha256"],
        when_matched="update",
    )  # fmt: skip
    uri = lake.table_uri(raw, lake_root)
    merged = DeltaTable(uri).version()
    expected = {
        v: sorted(map(tuple, lake.read_table(spark, raw, lake_root=lake_root, version=v)
                      .select("n", "signal").collect()))
        for v in range(merged + 1)
    }  # fmt: skip

    files = lake.table_files(raw, lake_root=lake_root)
    assert len(files) >= 7  # two per write; the merge replaced two by its own

    result = lake.optimize_table(raw, lake_root=lake_root)

    assert (result.files_before, result.files_after, result.rows) == (len(files), 1, 401)
    assert result.version_after == merged + 1
    current = lake.read_table(spark, raw, lake_root=lake_root)
    assert current.columns == ["sha256", "patient", "n", "signal", "frames", "blob", "ingest_date"]
    assert sorted(map(tuple, current.select("n", "signal").collect())) == expected[merged]
    (path,) = lake.table_files(raw, lake_root=lake_root)
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [256, 145]
    # the default retention keeps every version readable, the one before the merge included
    # (the merge's removes carry their commit time, not 0)
    assert lake.vacuum_table(raw, lake_root=lake_root).deleted == ()
    for version, rows in expected.items():
        got = lake.read_table(spark, raw, lake_root=lake_root, version=version)
        assert sorted(map(tuple, got.select("n", "signal").collect())) == rows
    # the compacted table takes merges as before
    assert lake.merge_table(_batch(spark, [1, 901]), raw, lake_root=lake_root, keys=["sha256"])
    assert lake.read_table(spark, raw, lake_root=lake_root).count() == 402


# -- the command ---------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_optimize_command(capsys: pytest.CaptureFixture[str], lake_root: Path) -> None:
    _appends(lake.table_uri(LABS, lake_root), 4)
    _appends(lake.table_uri(tables.NOTES, lake_root), 2)
    root = str(lake_root)

    code, out, _ = _cli(capsys, ["lake", "optimize", "--help"])
    assert code == 0
    for option in ("--lake", "--table", "--vacuum", "--retention-hours", "--zorder", "--dry-run"):
        assert option in out

    code, out, err = _cli(capsys, ["lake", "optimize", "--lake", root, "--dry-run", "--vacuum"])
    assert code == 0, err
    assert "4 (4 small)" in out and DeltaTable(lake.table_uri(LABS, lake_root)).version() == 3

    code, out, err = _cli(capsys, ["lake", "optimize", "--lake", root, "--table", "labs"])
    assert code == 0, err
    assert "silver.labs" in out and "4 → 1" in out and "silver.notes" not in out
    assert DeltaTable(lake.table_uri(tables.NOTES, lake_root)).version() == 1

    code, out, err = _cli(capsys, ["lake", "optimize", "--lake", root, "--vacuum"])
    assert code == 0, err
    assert "2 → 1" in out and "vacuumed" in out  # notes compacted now; nothing old enough

    line = ["lake", "optimize", "--lake", root, "--vacuum", "--retention-hours", "0"]
    code, out, err = _cli(capsys, [*line, "--allow-short-retention"])
    assert code == 0, err
    assert "5 → 1" in out  # labs: 4 small files and the compacted one on disk, then 1

    config = lake_root.parent / "upkeep.yaml"
    config.write_text("optimize:\n  target_file_bytes: 4096\nvacuum:\n  retention_hours: 12\n")
    with_config = ["lake", "optimize", "--lake", root, "--vacuum", "--config", str(config)]
    bad_config = lake_root.parent / "bad.yaml"
    bad_config.write_text("vacuum:\n  retention: 12\n")
    mistakes = [
        (line, "--allow-short-retention"),
        (with_config, "--retention-hours 12 is below"),
        (["lake", "optimize", "--lake", root, "--config", str(bad_config)], "retention"),
        (["lake", "optimize", "--lake", root, "--zorder", "n"], "exactly one --table"),
        (["lake", "optimize", "--lake", root, "--table", "labs", "--zorder", "x"], "no column"),
        (["lake", "optimize", "--lake", root, "--table", "gold.alignment"], "silver.labs"),
    ]
    for args, expected in mistakes:
        code, _, err = _cli(capsys, args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
