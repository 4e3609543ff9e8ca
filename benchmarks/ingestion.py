"""Ingestion throughput: the Spark job (local[2]) against a plain single-process Python loop.

Both do the same work on the same synthetic cohort: hash and decode every ECG/echo file
(bronze) and standardise it (silver: resample, R peaks, LV area, keyframes). The baseline is
the loop, run in the same invocation; the ratio is Spark records/s over loop records/s.
Then wall time of the full job (bronze + silver + gold: ``pipelines.job.run_ingest``, without
the quality gates) at 1x, 2x and 4x the cohort size shows how it grows, and a second run of the
full job over the 1x lake with nothing new (it must add nothing) shows what an incremental run
costs, with the seconds of each step (Spark's start-up is reported apart: it is not in either
run). The ECG amplitude bound bronze once checked is a silver gate now, so neither side checks
it. ``--no-loop`` skips the comparison and times only the full job and its re-run.

    python benchmarks/ingestion.py [--patients 20] [--scales 1,2,4] [--task-slices 8]
        [--landing DIR] [--no-loop] [--out benchmarks/results/ingestion.json]

``--landing`` measures an existing landing zone (a cohort from ``cardiolake cohort generate`` or
a real delivery) instead of generating one; only the 1x scale is run then.

The smoke test's tiny run: ``--patients 2 --scales 1 --task-slices 2 --out <tmp>/x.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from cardiolake.cohort.generate import generate_cohort
from cardiolake.cohort.settings import CohortSettings
from cardiolake.spark import get_spark
from pipelines.bronze import _ptbxl_context, _TaskConfig, parse_file
from pipelines.ecg_source import read_ecg_source
from pipelines.echo_source import read_echo_clip
from pipelines.job import IngestSummary, run_ingest
from pipelines.landing import scan_landing
from pipelines.settings import IngestSettings
from pipelines.silver_signals import standardise_ecg, standardise_echo


def python_loop(landing: Path, settings: IngestSettings) -> int:
    """The baseline: the same per-file parsing, one file after another, no Spark."""
    inventory = scan_landing(landing)
    ptbxl = _ptbxl_context(inventory)
    # as bronze.ingest_files builds it, with nothing seen yet (the amplitude bound is a gate now)
    config = _TaskConfig(secret=settings.pseudonym_secret, seen=frozenset())
    done = 0
    for src in inventory.records:
        if src.format.endswith("_csv"):
            continue
        context = dict(ptbxl.get(str(Path(src.uri).with_suffix("")), {}))
        row = parse_file(
            {"uri": src.uri, "format": src.format, "companions": json.dumps(list(src.companions)),
             "context": json.dumps(context)},
            config,
        )  # fmt: skip
        if row["target"] == "ecg_raw":
            fmt = "dicom" if row["format"] == "dicom_ecg" else "wfdb"
            standardise_ecg(read_ecg_source(src.uri, fmt), settings.canonical_fs)
        elif row["target"] == "echo_raw":
            standardise_echo(read_echo_clip(src.uri, row["format"]))
        done += 1
    return done


def timed_ingest(
    spark: object, settings: IngestSettings
) -> tuple[IngestSummary, float, dict[str, dict[str, object]]]:
    """``run_ingest`` with its wall time and each step's seconds, Spark jobs and Delta commits
    (the job's own accounting, :class:`pipelines.accounting.JobAccountant`)."""
    start = time.perf_counter()
    summary = run_ingest(spark, settings)  # type: ignore[arg-type]
    end = time.perf_counter()
    steps = {
        name: {k: cost[k] for k in ("seconds", "spark_jobs", "delta_commits")}
        for name, cost in summary.steps.items()
    }
    return summary, end - start, steps


def _patients(landing: Path) -> int:
    """Patients of a landing zone: rows of its patient index (0 when it has none)."""
    index = landing / "patients.csv"
    if not index.is_file():
        return 0
    with index.open(newline="", encoding="utf-8", errors="replace") as fh:
        return max(sum(1 for _ in csv.reader(fh)) - 1, 0)


def _scales(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> ``(1, 2, 4)``; 1x must be there (the loop comparison runs on it)."""
    try:
        factors = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from exc
    if 1 not in factors or factors[0] < 1:
        raise argparse.ArgumentTypeError(f"scales must be positive and include 1: {text!r}")
    return factors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=20, help="patients at 1x")
    parser.add_argument(
        "--scales", type=_scales, default=(1, 2, 4), help="growth factors, e.g. 1,2,4 (with 1)"
    )
    parser.add_argument(
        "--task-slices",
        type=int,
        default=IngestSettings.task_slices,
        help="Spark partitions for per-file work (IngestSettings.task_slices)",
    )
    parser.add_argument(
        "--landing", type=Path, default=None, help="an existing landing zone to measure (1x only)"
    )
    parser.add_argument(
        "--no-loop",
        action="store_true",
        help="skip the loop-vs-Spark comparison: time only the full job and its re-run",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ingestion.json"))
    args = parser.parse_args()
    if args.landing is not None:
        if not args.landing.is_dir():
            parser.error(f"--landing {args.landing} is not a folder")
        if args.scales != (1,):
            parser.error("--landing measures that folder only: pass --scales 1")
    start = time.perf_counter()
    spark = get_spark()
    spark_start_s = time.perf_counter() - start
    report: dict[str, Any] = {
        "spark_start_s": round(spark_start_s, 2),
        "benchmark": "ingestion",
        "baseline": "single-process Python loop, same files, same run",
        "full_job": "pipelines.job.run_ingest: bronze + silver + gold, no quality gates",
        "task_slices": args.task_slices,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scales = {}
        for factor in args.scales:
            if args.landing is not None:
                scales[factor] = args.landing.resolve()
                continue
            landing = root / f"landing_{factor}x"
            generate_cohort(
                CohortSettings(
                    patients=args.patients * factor, seed=5, workers=os.cpu_count() or 1
                ),
                landing,
            )
            scales[factor] = landing
        landing = scales[1]
        patients = _patients(landing)
        report["landing"] = str(landing) if args.landing is not None else "generated, seed 5"
        settings = IngestSettings(
            landing=landing, lake_root=root / "lake_cmp", task_slices=args.task_slices
        )
        files = sum(1 for s in scan_landing(landing).records if not s.format.endswith("_csv"))

        if not args.no_loop:
            start = time.perf_counter()
            looped = python_loop(landing, settings)
            loop_s = time.perf_counter() - start
            start = time.perf_counter()
            summary = run_ingest(spark, settings, stages=("bronze", "silver"))
            spark_s = time.perf_counter() - start
            report["bronze_silver_1x"] = {
                "patients": patients, "files": files, "python_loop_records": looped, "spark_rows_added": summary.rows_added,
                "python_loop_s": round(loop_s, 2), "python_loop_records_per_s": round(files / loop_s, 2),
                "spark_s": round(spark_s, 2), "spark_records_per_s": round(files / spark_s, 2),
                "ratio_spark_over_loop": round(loop_s / spark_s, 2),
                "spark_jobs": summary.totals["spark_jobs"],
                "delta_commits": summary.totals["delta_commits"],
            }  # fmt: skip
        growth = []
        for factor, scaled in scales.items():
            s = IngestSettings(
                landing=scaled, lake_root=root / f"lake_{factor}x", task_slices=args.task_slices
            )
            n = sum(1 for x in scan_landing(scaled).records if not x.format.endswith("_csv"))
            summary, seconds, steps = timed_ingest(spark, s)
            growth.append({"scale": f"{factor}x", "patients": _patients(scaled), "files": n,
                           "wall_s": round(seconds, 2), "records_per_s": round(n / seconds, 2),
                           "rows_added": summary.rows_added, "steps": steps,
                           "spark_jobs": summary.totals["spark_jobs"],
                           "delta_commits": summary.totals["delta_commits"]})  # fmt: skip
            if factor == 1:
                # the same job again over the same lake, nothing new in the landing zone
                again, seconds, steps = timed_ingest(spark, s)
                added = {table: n for table, n in again.rows_added.items() if n}
                report["full_job_rerun_1x"] = {
                    "files": n, "wall_s": round(seconds, 2), "rows_added": added,
                    "added_nothing": not added, "skipped_files": again.skipped_files,
                    "steps": steps, "spark_jobs": again.totals["spark_jobs"],
                    "delta_commits": again.totals["delta_commits"],
                }  # fmt: skip
        report["full_job_growth"] = growth
    if "bronze_silver_1x" in report:
        cmp = report["bronze_silver_1x"]
        print(
            f"bronze+silver on {cmp['files']} files: loop {cmp['python_loop_s']} s ({cmp['python_loop_records_per_s']} rec/s), "
            f"Spark local[2] {cmp['spark_s']} s ({cmp['spark_records_per_s']} rec/s), ratio {cmp['ratio_spark_over_loop']}x"
        )
    print(f"{'scale':>6} {'patients':>8} {'files':>6} {'wall s':>8} {'records/s':>10} "
          f"{'jobs':>5} {'commits':>8}")  # fmt: skip
    for g in growth:
        print(
            f"{g['scale']:>6} {g['patients']:>8} {g['files']:>6} {g['wall_s']:>8} {g['records_per_s']:>10} "
            f"{g['spark_jobs']!s:>5} {g['delta_commits']:>8}"
        )
    first = growth[0]["steps"]
    print(f"{'step (1x)':<26}{'seconds':>9}{'jobs':>6}{'commits':>9}")
    for name, c in first.items():
        print(f"{name:<26}{c['seconds']:>9.2f}{c['spark_jobs']!s:>6}{c['delta_commits']:>9}")
    rerun = report["full_job_rerun_1x"]
    print(
        f"re-run with nothing new (1x, {rerun['files']} files): {rerun['wall_s']} s, "
        f"rows added {rerun['rows_added'] or 'none'}; Spark start-up {report['spark_start_s']} s "
        "(not in the re-run)"
    )
    rerun_steps = cast(dict[str, dict[str, float]], rerun["steps"])
    print(f"re-run: {rerun['spark_jobs']} Spark jobs, {rerun['delta_commits']} Delta commits; "
          "steps (s): " + ", ".join(f"{k} {v['seconds']}" for k, v in rerun_steps.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
