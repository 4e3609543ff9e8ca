"""benchmarks/loader.py at a tiny size, so it cannot rot (training environment)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_loader_benchmark_smoke(gold_lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "loader.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/loader.py", "--lake", str(gold_lake), "--batch-size", "4",
         "--max-batches", "2", "--steps", "2", "--workers", "1", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["results"]) == {"pretrain_ecg", "pretrain_echo", "align_beats"}
    for stage in result["results"].values():
        for key in ("petastorm", "pyarrow", "memory", "train_step"):
            assert stage[key] > 0
        assert stage["loader_over_step"] == stage["petastorm"] / stage["train_step"]
