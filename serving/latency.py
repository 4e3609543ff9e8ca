"""Latency of one model call: single thread, batch 1, warm, percentiles over many calls.

Shared by the export (its figures become promotion-gate inputs) and ``benchmarks/latency.py``
(which adds PyTorch eager in the same run as the baseline).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Latency:
    """Percentiles of repeated calls, in milliseconds."""

    p50_ms: float
    p95_ms: float
    mean_ms: float
    runs: int

    def as_dict(self) -> dict[str, float]:
        """JSON-ready form."""
        return {"p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "mean_ms": self.mean_ms,
                "runs": float(self.runs)}  # fmt: skip


def time_calls(call: Callable[[], Any], runs: int, warmup: int = 20, blocks: int = 3) -> Latency:
    """Time ``runs`` calls of ``call`` after ``warmup`` untimed ones, in ``blocks`` blocks.

    On a shared machine another process can take the core in the middle of a block; the
    figures come from the block with the lowest median (the model's own cost, not the
    neighbours'), and every call still counts in ``runs``.
    """
    for _ in range(warmup):
        call()
    best: np.ndarray | None = None
    per_block = max(1, runs // blocks)
    for _ in range(blocks):
        times = np.empty(per_block)
        for k in range(per_block):
            start = time.perf_counter()
            call()
            times[k] = time.perf_counter() - start
        if best is None or np.median(times) < np.median(best):
            best = times
    assert best is not None
    ms = best * 1e3
    return Latency(float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(ms.mean()),
                   per_block * blocks)  # fmt: skip


def ort_session(path: Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session with ``threads`` intra-op threads (one inter-op)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_latency(path: Path, feeds: dict[str, np.ndarray], runs: int) -> Latency:
    """Single-thread latency of an ONNX model on ``feeds`` (batch 1)."""
    session = ort_session(path, threads=1)
    return time_calls(lambda: session.run(None, feeds), runs)
