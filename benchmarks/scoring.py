"""Batch-scoring throughput: Spark local[N] against a single Python loop, same model, same run.

    .venv/bin/python benchmarks/scoring.py --lake L --landing DIR [--alias champion]
        [--sizes 1 2 4] [--base 250] [--master local[2]]

The cohort at size 1x is every recording of the landing folder (or ``--base`` of them,
repeated when it holds fewer); 2x and 4x repeat it. For each size, recordings/s of the Spark scoring job (read, check,
preprocess and score each recording in ``mapInPandas`` tasks, one onnxruntime session per
worker) and of one Python loop doing exactly the same per-recording work with one session
(the named baseline; the ratio is what matters on a shared machine). Writes are not timed: a
benchmark cohort is not written to the lake. Goals: throughput linear in size, and Spark at
least 1.6x the loop on 2 cores at the largest size. Prints a table and writes JSON
(``benchmarks/results/scoring.json`` unless ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from cardiolake.pseudonym import resolve_secret
from cardiolake.spark import SparkSettings, get_spark
from cardiolake.tracking import tracking_uri
from serving.scoring import (
    ScoringSettings,
    fetch_model,
    landing_recordings,
    make_job,
    score_loop,
    score_tasks,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", type=Path, required=True, help="lake with the registry")
    parser.add_argument("--landing", type=Path, required=True, help="folder of recordings")
    parser.add_argument("--alias", default="champion", help="model alias or version")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--base",
        type=int,
        default=0,
        help="recordings at size 1x (default: every recording of the folder)",
    )
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scoring.json"))
    args = parser.parse_args()

    import mlflow

    mlflow.set_tracking_uri(tracking_uri(args.lake))
    mlflow.set_registry_uri(tracking_uri(args.lake))
    settings = ScoringSettings(alias=args.alias)
    files = fetch_model(args.alias, args.lake / "_serving")
    job = make_job(files, settings, resolve_secret(None, args.lake))
    found = landing_recordings(args.landing)
    if not found:
        raise SystemExit(f"{args.landing}: no recordings")
    base = [found[i % len(found)] for i in range(args.base or len(found))]
    spark = get_spark(SparkSettings(master=args.master))
    spark.sparkContext.addFile(str(files.model))
    cores = spark.sparkContext.defaultParallelism
    score_tasks(spark, base[: 2 * cores], job)  # warm the Python workers and their sessions
    score_loop(base[:4], job, files.model)
    results = {}
    print(f"scoring {files.name} v{files.version} ({files.precision}); {len(found)} distinct "
          f"recordings; Spark {args.master}; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'size':>5} {'recordings':>10} {'spark rec/s':>12} {'loop rec/s':>11} {'ratio':>6}")
    for size in args.sizes:
        tasks = base * size
        start = time.perf_counter()
        rows = score_tasks(spark, tasks, job)
        spark_s = time.perf_counter() - start
        start = time.perf_counter()
        loop_rows = score_loop(tasks, job, files.model)
        loop_s = time.perf_counter() - start
        assert len(rows) == len(loop_rows) == len(tasks)
        r = {"recordings": len(tasks), "spark_s": spark_s, "loop_s": loop_s,
             "spark_rps": len(tasks) / spark_s, "loop_rps": len(tasks) / loop_s,
             "ratio": loop_s / spark_s,
             "scored": sum(1 for x in rows if x["target"] == "prediction")}  # fmt: skip
        results[f"{size}x"] = r
        print(f"{size:>4}x {len(tasks):>10} {r['spark_rps']:>12.1f} {r['loop_rps']:>11.1f} "
              f"{r['ratio']:>5.2f}x")  # fmt: skip
    sizes = sorted(results, key=lambda k: int(k[:-1]))
    first, last = results[sizes[0]], results[sizes[-1]]
    scale = int(sizes[-1][:-1]) / int(sizes[0][:-1])
    goal = {"ratio_at_largest": last["ratio"], "ratio_goal": 1.6,
            "time_growth_vs_size": (last["spark_s"] / first["spark_s"]) / scale}  # fmt: skip
    print(f"goal: >= 1.6x the loop at {sizes[-1]} ({last['ratio']:.2f}x); Spark time grew "
          f"{last['spark_s'] / first['spark_s']:.2f}x for {scale:g}x the recordings")  # fmt: skip
    spark.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "model": files.name, "version": files.version, "precision": files.precision,
        "master": args.master, "cores": cores, "load_average": os.getloadavg(),
        "results": results, "goal": goal,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
