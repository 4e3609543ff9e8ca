"""Ingestion throughput: the Spark job (local[2]) against a plain single-process Python loop.

Both do the same work on the same synthetic cohort: hash and decode every ECG/echo file
(bronze) and standardise it (silver: resample, R peaks, LV area, keyframes). The baseline is
the loop, run in the same invocation; the ratio is Spark records/s over loop records/s.
Then wall time of the full job (bronze + silver + gold) at 1x, 2x and 4x the cohort size
shows how it grows.

    python benchmarks/ingestion.py [--patients 20] [--out benchmarks/results/ingestion.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from cardiolake.cohort.generate import generate_cohort
from cardiolake.cohort.settings import CohortSettings
from cardiolake.spark import get_spark
from pipelines.bronze import _ptbxl_context, _TaskConfig, parse_file
from pipelines.ecg_source import read_ecg_source
from pipelines.echo_source import read_echo_clip
from pipelines.job import run_ingest
from pipelines.landing import scan_landing
from pipelines.settings import IngestSettings
from pipelines.silver_signals import standardise_ecg, standardise_echo


def python_loop(landing: Path, settings: IngestSettings) -> int:
    """The baseline: the same per-file parsing, one file after another, no Spark."""
    inventory = scan_landing(landing)
    ptbxl = _ptbxl_context(inventory)
    config = _TaskConfig(settings.pseudonym_secret, settings.max_abs_mv, frozenset())
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ingestion.json"))
    args = parser.parse_args()
    spark = get_spark()
    report: dict[str, object] = {
        "benchmark": "ingestion",
        "baseline": "single-process Python loop, same files, same run",
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scales = {}
        for factor in (1, 2, 4):
            landing = root / f"landing_{factor}x"
            generate_cohort(
                CohortSettings(
                    patients=args.patients * factor, seed=5, workers=os.cpu_count() or 1
                ),
                landing,
            )
            scales[factor] = landing
        landing = scales[1]
        settings = IngestSettings(landing=landing, lake_root=root / "lake_cmp")
        files = sum(1 for s in scan_landing(landing).records if not s.format.endswith("_csv"))

        start = time.perf_counter()
        python_loop(landing, settings)
        loop_s = time.perf_counter() - start
        start = time.perf_counter()
        run_ingest(spark, settings, stages=("bronze", "silver"))
        spark_s = time.perf_counter() - start
        report["bronze_silver_1x"] = {
            "files": files,
            "python_loop_s": round(loop_s, 2), "python_loop_records_per_s": round(files / loop_s, 2),
            "spark_s": round(spark_s, 2), "spark_records_per_s": round(files / spark_s, 2),
            "ratio_spark_over_loop": round(loop_s / spark_s, 2),
        }  # fmt: skip
        growth = []
        for factor, scaled in scales.items():
            s = IngestSettings(landing=scaled, lake_root=root / f"lake_{factor}x")
            n = sum(1 for x in scan_landing(scaled).records if not x.format.endswith("_csv"))
            start = time.perf_counter()
            run_ingest(spark, s)
            seconds = time.perf_counter() - start
            growth.append({"scale": f"{factor}x", "patients": args.patients * factor, "files": n,
                           "wall_s": round(seconds, 2), "records_per_s": round(n / seconds, 2)})  # fmt: skip
        report["full_job_growth"] = growth
    cmp = report["bronze_silver_1x"]
    print(
        f"bronze+silver on {cmp['files']} files: loop {cmp['python_loop_s']} s ({cmp['python_loop_records_per_s']} rec/s), "
        f"Spark local[2] {cmp['spark_s']} s ({cmp['spark_records_per_s']} rec/s), ratio {cmp['ratio_spark_over_loop']}x"
    )
    print(f"{'scale':>6} {'patients':>8} {'files':>6} {'wall s':>8} {'records/s':>10}")
    for g in growth:
        print(
            f"{g['scale']:>6} {g['patients']:>8} {g['files']:>6} {g['wall_s']:>8} {g['records_per_s']:>10}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
