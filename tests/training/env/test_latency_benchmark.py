"""benchmarks/latency.py at a tiny size, so it cannot rot (training environment)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_latency_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "latency.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/latency.py", "--random", "--runs", "20", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["results"]) == {f"{m}_{n}lead" for m in ("torch", "fp32", "int8")
                                      for n in (1, 6)}  # fmt: skip
    for row in result["results"].values():
        assert 0 < row["p50_ms"] <= row["p95_ms"] and row["kb"] > 0
    assert result["results"]["int8_6lead"]["kb"] < result["results"]["fp32_6lead"]["kb"]
