"""Every benchmark, run at a tiny size the way the README runs it, so none of them rots.

Each test runs one script as a subprocess from the repository root with its tiny-run flags and
an ``--out`` under ``tmp_path``, then checks the JSON it wrote: the keys are there, counts and
rates are positive, accuracies are in range. Timings are never compared with a bound (the
machine is shared); the real measurements are the scripts' default runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: A hung benchmark fails the test instead of blocking the suite; tiny runs take ~1-90 s.
TIMEOUT_S = 600


def run_benchmark(script: str, *args: str, out: Path) -> dict[str, Any]:
    """Run ``benchmarks/<script>`` with ``args`` and ``--out out``; return the JSON it wrote."""
    cmd = [sys.executable, str(Path("benchmarks") / script), *args, "--out", str(out)]
    proc = subprocess.run(  # noqa: S603 - our own script, run with this interpreter
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n"
        f"--- stdout (tail) ---\n{proc.stdout[-4000:]}\n"
        f"--- stderr (tail) ---\n{proc.stderr[-4000:]}"
    )
    assert out.is_file(), f"{script} exited 0 but wrote no {out}"
    return json.loads(out.read_text())


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


@pytest.mark.integration
def test_cohort_generation_tiny(tmp_path: Path) -> None:
    report = run_benchmark("cohort_generation.py", "--patients", "2", out=tmp_path / "c.json")

    assert report["benchmark"] == "cohort_generation"
    assert report["identical_output_across_workers"] is True
    assert [r["workers"] for r in report["results"]] == [1, 2]
    for row in report["results"]:
        assert row["patients"] == 2
        assert row["bytes_per_patient"] > 0
        assert row["patients_per_s"] > 0
        assert row["speedup_vs_1_worker"] > 0
        assert _is_number(row["seconds"]) and row["seconds"] >= 0
    assert report["results"][0]["speedup_vs_1_worker"] == 1.0


@pytest.mark.integration
def test_rpeak_accuracy_tiny(tmp_path: Path, shared_data: Path) -> None:
    report = run_benchmark(
        "rpeak_accuracy.py",
        "--data-dir",
        str(shared_data / "wfdb"),
        "--max-seconds",
        "60",
        out=tmp_path / "r.json",
    )

    assert report["benchmark"] == "rpeak_accuracy"
    assert report["max_seconds"] == 60
    summary = report["summary_single_lead"]
    assert set(summary) >= {"cardiolake", "wfdb_xqrs", "neurokit2", "f1_ratio_vs_baseline"}
    for name in ("cardiolake", "wfdb_xqrs", "neurokit2"):
        s = summary[name]
        assert s["tp"] > 0
        assert 0 <= s["sensitivity"] <= 1 and 0 <= s["ppv"] <= 1 and 0 <= s["f1"] <= 1
        assert _is_number(s["seconds"]) and s["seconds"] >= 0
    # a minute of MIT-BIH 100 is clean sinus rhythm: any working detector finds nearly all beats
    assert summary["cardiolake"]["f1"] > 0.9
    assert summary["f1_ratio_vs_baseline"] > 0
    rows = report["results"]
    assert rows, "no record scored"
    for row in rows:
        assert 0 < row["duration_s"] <= 60
        assert row["reference_beats"] > 0
        assert row["fs"] > 0


@pytest.mark.integration
@pytest.mark.spark
def test_ingestion_tiny(tmp_path: Path) -> None:
    report = run_benchmark(
        "ingestion.py",
        *("--patients", "2", "--scales", "1", "--task-slices", "2"),
        out=tmp_path / "i.json",
    )

    assert report["benchmark"] == "ingestion"
    assert report["task_slices"] == 2
    cmp = report["bronze_silver_1x"]
    assert cmp["files"] > 0
    assert cmp["python_loop_records"] == cmp["files"]  # the loop parsed every file
    assert cmp["spark_rows_added"]["ecg"] > 0 and cmp["spark_rows_added"]["echo"] > 0
    for key in (
        "python_loop_s",
        "python_loop_records_per_s",
        "spark_s",
        "spark_records_per_s",
        "ratio_spark_over_loop",
    ):
        assert _is_number(cmp[key]) and cmp[key] > 0, key
    [growth] = report["full_job_growth"]
    assert growth["scale"] == "1x" and growth["patients"] == 2
    assert growth["files"] == cmp["files"]
    assert growth["wall_s"] > 0 and growth["records_per_s"] > 0
    # the full job reached gold, not only silver
    assert growth["rows_added"]["alignment"] > 0
    assert growth["rows_added"]["examples_pretrain"] > 0
    # the same job again over the same lake adds nothing
    rerun = report["full_job_rerun_1x"]
    assert rerun["added_nothing"] is True and rerun["rows_added"] == {}
    # the job's own accounting: the first run commits, the re-run commits nothing
    assert growth["delta_commits"] > 0 and growth["spark_jobs"] > 0
    assert rerun["delta_commits"] == 0 and rerun["spark_jobs"] == 0
    assert sum(s["delta_commits"] for s in growth["steps"].values()) == growth["delta_commits"]
    assert rerun["files"] == cmp["files"] and rerun["wall_s"] > 0


def _has_redis_server() -> bool:
    # benchmarks/features.py falls back to this path when redis-server is not on PATH
    return shutil.which("redis-server") is not None or Path("/usr/bin/redis-server").exists()


@pytest.mark.integration
@pytest.mark.parametrize(
    "store",
    [
        "sqlite",
        pytest.param(
            "redis",
            marks=pytest.mark.skipif(
                not _has_redis_server(),
                reason="redis-server not installed: only the SQLite online store is smoke-tested",
            ),
        ),
    ],
)
def test_features_tiny(tmp_path: Path, store: str) -> None:
    report = run_benchmark(
        "features.py",
        *("--patients", "100", "--dim", "8", "--repeats", "5", "--series", "1"),
        *("--stores", store),
        out=tmp_path / "f.json",
    )

    assert report["patients"] == 100 and report["embedding_dim"] == 8
    assert report["service"] == "teacher_training"
    assert set(report["stores"]) == {store}
    res = report["stores"][store]
    assert res["materialize_s"] > 0
    assert res["materialize_source_rows_per_s"] > 0 and res["materialize_online_rows_per_s"] > 0
    # Feast and the direct baseline read the same values, so the ratio compares equal work
    values = res["values_per_patient"]
    assert values["feast"] > 0 and values["feast"] == values["direct"]
    for n in (1, 100):
        case = res[f"{n}_patients"]
        for side in ("feast", "direct"):
            assert case[side]["p50_ms"] > 0 and case[side]["p99_ms"] >= case[side]["p50_ms"]
            assert len(case[side]["p99_ms_per_series"]) == 1
        assert case["ratio_p50"] > 0 and case["ratio_p99"] > 0
    assert isinstance(res["goal_met"], bool)


@pytest.mark.integration
def test_cine_memory_tiny(tmp_path: Path) -> None:
    report = run_benchmark("cine_memory.py", "--megabytes", "4", "--size", "160x120",
                           out=tmp_path / "m.json")  # fmt: skip

    assert report["benchmark"] == "cine_memory"
    assert report["decoded_bytes"] >= 3 * 1024**2
    assert {r["compression"] for r in report["results"]} == {"none", "jpeg2000", "rle"}
    for row in report["results"]:
        assert row["frames"] > 0 and row["file_bytes"] > 0
        assert row["stream_peak_rss_bytes"] >= report["worker_floor_rss_bytes"] > 0
        assert _is_number(row["full_over_stream_rss"]) and row["full_over_stream_rss"] > 0
        assert row["stream_under_goal"] is True
