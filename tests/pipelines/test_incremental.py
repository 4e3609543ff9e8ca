"""Incremental discovery on a real SparkSession and real Delta tables (tiny synthetic cohort).

A re-run finds new or changed files from path, size and modification time against what bronze
and quarantine hold, before anything is hashed or decoded; the tests observe that directly (no
Spark job starts, and files swapped for other bytes behind an unchanged size and mtime are not
noticed), and check that changed, touched, copied files and an older lake are handled.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from cardiolake import lake, tables
from pipelines.bronze import file_sources, known_files
from pipelines.job import IngestSummary, run_ingest
from pipelines.landing import scan_landing
from pipelines.settings import IngestSettings

pytestmark = [pytest.mark.spark, pytest.mark.integration]


def _counts(root: Path) -> dict[str, int]:
    return {
        str(t): DeltaTable(str(t.path(root))).to_pyarrow_dataset().count_rows()
        for t in lake.list_tables(root)
    }


def _file_inputs(landing: Path) -> int:
    inventory = scan_landing(landing)
    return sum(1 for s in [*inventory.records, *inventory.unknown] if not s.format.endswith("_csv"))


@contextmanager
def _spark_jobs(spark) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    """The Spark jobs started inside the block, by their stages' call sites (filled in at
    the end)."""
    group = f"incremental-{uuid.uuid4().hex}"
    context = spark.sparkContext
    context.setJobGroup(group, "incremental discovery test")
    jobs: list[str] = []
    try:
        yield jobs
    finally:
        tracker = context.statusTracker()
        for job in sorted(tracker.getJobIdsForGroup(group)):
            info = tracker.getJobInfo(job)
            stages = [tracker.getStageInfo(s) for s in (info.stageIds if info else [])]
            jobs.append(f"job {job}: " + "; ".join(s.name for s in stages if s is not None))
        context.setLocalProperty("spark.jobGroup.id", None)


def _run(spark, settings: IngestSettings) -> tuple[IngestSummary, list[str]]:  # type: ignore[no-untyped-def]
    """The run's summary and its Spark jobs: those the run's own accounting counted per step,
    plus any the outer job group still sees (none: each step runs in a group of its own)."""
    with _spark_jobs(spark) as outside:
        summary = run_ingest(spark, settings)
    jobs = [f"{step}: {cost['spark_jobs']} jobs" for step, cost in summary.steps.items()
            if cost["spark_jobs"]]  # fmt: skip
    assert outside == []
    assert summary.totals["spark_jobs"] == sum(c["spark_jobs"] for c in summary.steps.values())
    return summary, jobs


def _mtimes(root: Path, table: tables.Table, uri: str) -> list[int | None]:
    frame = lake.read_arrow(table, lake_root=root, columns=["source_uri", "source_mtime_ns"])
    rows = frame.filter(pc.equal(frame["source_uri"], uri))
    return rows["source_mtime_ns"].to_pylist()


@pytest.fixture(scope="module")
def lake_run(spark, tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The tiny cohort copied to a landing zone and ingested once (the tests then change it)."""
    work = tmp_path_factory.mktemp("incremental")
    landing = work / "landing"
    shutil.copytree(tiny_cohort, landing / "site_a")
    settings = IngestSettings(landing=landing, lake_root=work / "lake", task_slices=2)
    run_ingest(spark, settings)
    return settings


def test_rerun_reads_no_file_and_starts_no_spark_job(lake_run, spark) -> None:  # type: ignore[no-untyped-def]
    settings = lake_run
    before = _counts(settings.lake_root)
    # every DICOM, AVI and WFDB signal file (what the landing scan never opens) gets other
    # bytes behind the same size and mtime: a run that hashed or decoded any of them would
    # land new content or quarantine garbage
    swapped: dict[Path, tuple[bytes, os.stat_result]] = {}
    for path in sorted(settings.landing.rglob("*")):
        if path.suffix not in {".dcm", ".avi", ".dat"} or "truth" in path.parts:
            continue
        stat = path.stat()
        swapped[path] = (path.read_bytes(), stat)
        path.write_bytes((np.frombuffer(swapped[path][0], np.uint8) ^ 0x5A).tobytes())
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    try:
        again, jobs = _run(spark, settings)
    finally:
        for path, (data, stat) in swapped.items():
            path.write_bytes(data)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert jobs == []  # no Spark job at all: nothing hashed, decoded, merged or rebuilt
    assert again.totals["delta_commits"] == 0  # and no commit
    assert set(again.steps) >= {"scan", "bronze: files", "silver: echo", "gold: examples"}
    assert _counts(settings.lake_root) == before
    assert again.skipped_files == _file_inputs(settings.landing)
    assert not any(again.rows_added.values())
    assert not any(n for stage in again.quarantined.values() for n in stage.values())


def test_modified_file_is_read_again_and_its_new_content_lands(lake_run, spark) -> None:  # type: ignore[no-untyped-def]
    settings = lake_run
    before = _counts(settings.lake_root)
    frame = lake.read_arrow(tables.ECG_RAW, lake_root=settings.lake_root)
    headers = {u for u in frame["source_uri"].to_pylist() if u.endswith(".hea")}
    record = next(r for r in scan_landing(settings.landing).records if r.uri in headers)
    header = Path(record.uri)
    # change one sample of the record's signal file (a companion), same size
    signal = Path(record.companions[0])
    data = bytearray(signal.read_bytes())
    data[-1] ^= 0x01
    stat = signal.stat()
    signal.write_bytes(bytes(data))
    os.utime(signal, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    again, jobs = _run(spark, settings)
    after = _counts(settings.lake_root)
    assert jobs  # the changed record was hashed and decoded
    assert again.steps["bronze: files"]["spark_jobs"] >= 1
    assert again.steps["bronze: files"]["tables"]  # its new content was committed
    assert again.totals["delta_commits"] >= 2  # bronze and silver at least
    assert after["bronze.ecg_raw"] == before["bronze.ecg_raw"] + 1
    assert after["silver.ecg"] == before["silver.ecg"] + 1
    assert again.skipped_files == _file_inputs(settings.landing) - 1
    assert len(_mtimes(settings.lake_root, tables.ECG_RAW, str(header))) == 2
    # and the next run reads nothing again
    _, jobs = _run(spark, settings)
    assert jobs == []


def test_touched_identical_file_adds_nothing_and_is_not_read_again(lake_run, spark) -> None:  # type: ignore[no-untyped-def]
    settings = lake_run
    before = _counts(settings.lake_root)
    uri = sorted(
        lake.read_arrow(tables.ECHO_RAW, lake_root=settings.lake_root)["source_uri"].to_pylist()
    )[0]
    stat = Path(uri).stat()
    touched = stat.st_mtime_ns + 5_000_000_000
    os.utime(uri, ns=(stat.st_atime_ns, touched))

    again, _ = _run(spark, settings)
    assert _counts(settings.lake_root) == before
    assert again.skipped_files == _file_inputs(settings.landing)
    assert _mtimes(settings.lake_root, tables.ECHO_RAW, uri) == [touched]  # recorded
    _, jobs = _run(spark, settings)
    assert jobs == []


def test_copy_under_a_new_name_is_quarantined_as_a_duplicate(lake_run, spark) -> None:  # type: ignore[no-untyped-def]
    settings = lake_run
    before = _counts(settings.lake_root)
    uri = sorted(
        lake.read_arrow(tables.ECHO_RAW, lake_root=settings.lake_root)["source_uri"].to_pylist()
    )[0]
    copy = Path(uri).with_name("echo_copy_of_first.dcm")
    shutil.copy2(uri, copy)

    again, _ = _run(spark, settings)
    after = _counts(settings.lake_root)
    assert after["bronze.echo_raw"] == before["bronze.echo_raw"]
    assert after["quarantine.quarantine"] == before["quarantine.quarantine"] + 1
    assert again.quarantined["bronze"] == {"duplicate_content": 1}
    q = lake.read_pandas(tables.QUARANTINE, lake_root=settings.lake_root)
    row = q[q["source_uri"] == str(copy.resolve())]
    assert list(row["reason"]) == ["duplicate_content"]
    assert list(row["size_bytes"]) == [copy.stat().st_size]
    _, jobs = _run(spark, settings)
    assert jobs == []


def test_older_lake_without_stat_columns_reads_each_file_once(
    lake_run, spark, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = lake_run
    old = IngestSettings(
        landing=settings.landing, lake_root=tmp_path / "lake", task_slices=settings.task_slices
    )
    shutil.copytree(settings.lake_root, old.lake_root)
    # as an older version wrote them: no size/mtime columns in bronze and quarantine
    for table in (*lake.list_tables(old.lake_root),):
        if table.layer not in ("bronze", "quarantine"):
            continue
        uri = lake.table_uri(table, old.lake_root)
        if table == tables.EXPORT_FILES:  # an older version kept no export manifest
            shutil.rmtree(uri)
            continue
        data = DeltaTable(uri).to_pyarrow_table()
        keep = [c for c in data.column_names if c not in ("source_mtime_ns",)]
        if table == tables.QUARANTINE or table.name in ("labs_raw", "notes_raw", "labels_raw"):
            keep = [c for c in keep if c != "size_bytes"]
        write_deltalake(uri, data.select(keep), mode="overwrite", schema_mode="overwrite")
    before = _counts(old.lake_root)

    again, jobs = _run(spark, old)
    assert jobs  # every file is a candidate once: hashed, found known, nothing decoded
    after = _counts(old.lake_root)
    # the export files were read once more (no row of theirs landed twice) and are recorded
    assert after.pop(str(tables.EXPORT_FILES)) == sum(
        1 for s in scan_landing(old.landing).records if s.format.endswith("_csv")
    )
    assert after == before
    assert again.skipped_files == _file_inputs(old.landing)
    # recorded for the next run: every landing file is now known by path, size and mtime
    # (a row of content its file no longer holds, as the one changed above, keeps a null)
    known = known_files(old.lake_root)
    assert all(known.unchanged(s) for s in file_sources(scan_landing(old.landing)))
    _, jobs = _run(spark, old)
    assert jobs == []
