"""Cohort generation speed: patients/s at 1 and 2 workers (the ratio) and bytes per patient.

The baseline is the single-worker run of the same cohort in the same invocation, so the
ratio stays meaningful on a shared, noisy machine. Also checks that the two runs wrote
byte-identical files (determinism does not depend on the worker count).

    python benchmarks/cohort_generation.py [--patients 60] [--out benchmarks/results/cohort_generation.json]

The smoke test's tiny run: ``--patients 2 --out <tmp>/x.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import tempfile
import time
from pathlib import Path

from cardiolake.cohort.generate import generate_cohort
from cardiolake.cohort.settings import CohortSettings


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/cohort_generation.json")
    )
    args = parser.parse_args()

    results = []
    digests = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            settings = CohortSettings(patients=args.patients, seed=args.seed, workers=workers)
            out = Path(tmp) / f"w{workers}"
            start = time.perf_counter()
            counts = generate_cohort(settings, out)
            seconds = time.perf_counter() - start
            digests[workers] = _tree_digest(out)
            results.append(
                {
                    "workers": workers,
                    "patients": args.patients,
                    "seconds": round(seconds, 2),
                    "patients_per_s": round(args.patients / seconds, 2),
                    "bytes_per_patient": counts["bytes"] // args.patients,
                }
            )
    baseline = results[0]["patients_per_s"]
    for row in results:
        row["speedup_vs_1_worker"] = round(row["patients_per_s"] / baseline, 2)
    report = {
        "benchmark": "cohort_generation",
        "baseline": "1 worker, same cohort, same run",
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "identical_output_across_workers": digests[1] == digests[2],
        "results": results,
    }
    print(
        f"{'workers':>7} {'patients':>8} {'seconds':>8} {'patients/s':>10} {'speedup':>8} {'bytes/patient':>14}"
    )
    for r in results:
        print(
            f"{r['workers']:>7} {r['patients']:>8} {r['seconds']:>8} {r['patients_per_s']:>10}"
            f" {r['speedup_vs_1_worker']:>8} {r['bytes_per_patient']:>14,}"
        )
    print(f"identical output at 1 and 2 workers: {report['identical_output_across_workers']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
