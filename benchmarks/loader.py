"""Petastorm loader throughput against what each training stage consumes.

Runs in the training environment (``.venv-train/bin/python benchmarks/loader.py --lake L``).
For each stage's input — stage-1 ECG views, stage-1 echo clips, stage-2 beats — it measures,
on the same pinned Delta version in the same run:

* ``petastorm``: samples/s of the Petastorm reader (thread pool, row-group shuffle, transform);
* ``pyarrow``: a plain single-threaded ``pyarrow.dataset`` reader running the same transform;
* ``memory``: iterating the same batches from in-memory tensors (the ceiling of any loader);
* ``train_step``: samples/s of the stage's training step (forward, backward, optimiser).

Goal: ``petastorm / train_step >= 3`` for every stage (the loader is never the bottleneck).
Prints a table and writes JSON (``benchmarks/results/loader.json`` unless ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from cardiolake import tables
from training.aligner import Aligner
from training.cache import ecg_at_rate
from training.data import beat_loader, beat_shape, ecg_loader, echo_loader, iter_rows
from training.lake import pin
from training.pretrain import build_models, ecg_step, echo_step
from training.settings import AlignSettings, DataSettings, PretrainSettings, RunSettings
from training.transforms import LEAD_COLUMNS, EcgShape, EchoShape, beat_rows, ecg_rows, echo_rows


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def time_loader(open_loader, max_batches: int) -> tuple[float, list[dict[str, torch.Tensor]]]:
    """Samples/s of one pass (at most ``max_batches``), and the batches seen."""
    seen: list[dict[str, torch.Tensor]] = []
    n = 0
    start = time.perf_counter()
    with open_loader() as stream:
        for batch in stream:
            n += len(next(iter(batch.values())))
            seen.append(batch)
            if len(seen) >= max_batches:
                break
    return _rate(n, time.perf_counter() - start), seen


def time_pyarrow(pinned, columns, transform, filt, max_rows: int) -> float:
    """Samples/s of a single-threaded pyarrow reader running the same transform."""
    n = 0
    start = time.perf_counter()
    for frame in iter_rows(pinned, columns, batch_rows=64, filter=filt):
        n += len(transform(frame))
        if n >= max_rows:
            break
    return _rate(n, time.perf_counter() - start)


def time_memory(batches: list[dict[str, torch.Tensor]], repeats: int = 20) -> float:
    """Samples/s of handing out the same batches from memory (contiguous copies)."""
    n = 0
    start = time.perf_counter()
    for _ in range(repeats):
        for batch in batches:
            out = {k: v.clone() for k, v in batch.items()}
            n += len(next(iter(out.values())))
    return _rate(n, time.perf_counter() - start)


def time_steps(step, batches: list[dict[str, torch.Tensor]], params, steps: int) -> float:
    """Samples/s of the training step on in-memory batches (after one warm-up step)."""
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    step(batches[0])
    n = 0
    start = time.perf_counter()
    for i in range(steps):
        batch = batches[i % len(batches)]
        loss = step(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        n += len(next(iter(batch.values())))
    return _rate(n, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-batches", type=int, default=30)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool", default="thread", choices=["thread", "process"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/loader.json"))
    args = parser.parse_args()
    torch.manual_seed(0)

    data = DataSettings(reader_workers=args.workers, reader_pool=args.pool)
    pre = PretrainSettings(run=RunSettings(batch_size=args.batch_size), data=data)
    gen = torch.Generator().manual_seed(0)
    ecg_model, echo_model = build_models(pre)
    pinned = pin(tables.EXAMPLES_PRETRAIN, args.lake)
    results: dict[str, dict[str, float]] = {}
    import pyarrow.dataset as ds

    # stage 1, ECG (at the training rate, cached once per pinned version like the stage does)
    ecg_pinned = ecg_at_rate(pinned, args.lake, data.ecg_fs)
    rate, batches = time_loader(
        lambda: ecg_loader(ecg_pinned, data, split=None, batch_size=args.batch_size),
        args.max_batches,
    )
    # the same read from the canonical-rate gold table (what the loader did before the cache)
    raw_rate, _ = time_loader(
        lambda: ecg_loader(pinned, data, split=None, batch_size=args.batch_size), args.max_batches
    )
    shape = EcgShape(fs=data.ecg_fs, seconds=10.0)
    results["pretrain_ecg"] = {
        "petastorm": rate,
        "petastorm_500hz_gold": raw_rate,
        "pyarrow": time_pyarrow(
            ecg_pinned,
            ["record_key", "modality", "fs", "n_samples", *LEAD_COLUMNS],
            lambda f: ecg_rows(f, shape),
            ds.field("modality") == "ecg",
            args.max_batches * args.batch_size,
        ),
        "memory": time_memory(batches),
        "train_step": time_steps(
            lambda b: ecg_step(ecg_model, b, pre, gen)[0],
            batches,
            [p for m in ecg_model.modules().values() for p in m.parameters()],
            args.steps,
        ),
    }
    # stage 1, echo
    rate, batches = time_loader(
        lambda: echo_loader(pinned, data, split=None, batch_size=args.batch_size), args.max_batches
    )
    eshape = EchoShape(size=data.echo_size, frames=data.echo_frames, clip_s=data.echo_clip_s)
    results["pretrain_echo"] = {
        "petastorm": rate,
        "pyarrow": time_pyarrow(
            pinned,
            ["record_key", "modality", "frames", "n_frames", "size", "fps"],
            lambda f: echo_rows(f, eshape),
            ds.field("modality") == "echo",
            args.max_batches * args.batch_size,
        ),
        "memory": time_memory(batches),
        "train_step": time_steps(
            lambda b: echo_step(echo_model, b, pre, gen)[0],
            batches,
            [p for m in echo_model.modules().values() for p in m.parameters()],
            args.steps,
        ),
    }
    # stage 2, beats
    align = AlignSettings(run=RunSettings(batch_size=args.batch_size), data=data)
    apinned = pin(tables.EXAMPLES_ALIGN, args.lake)
    rate, batches = time_loader(
        lambda: beat_loader(apinned, data, split=None, batch_size=args.batch_size,
                            beats=align.beats_per_pair), args.max_batches,
    )  # fmt: skip
    aligner = Aligner(ecg_model.encoder, echo_model.encoder, align)
    bshape = beat_shape(data, beats=align.beats_per_pair, seed=0)
    cols = ["example_key", "patient_key", "r_peaks_s", "ed_s", "clip_start_s", "fs", "n_samples",
            *LEAD_COLUMNS, "frames", "n_frames", "size", "fps", "frame_times_s"]  # fmt: skip
    results["align_beats"] = {
        "petastorm": rate,
        "pyarrow": time_pyarrow(
            apinned, cols, lambda f: beat_rows(f, bshape), None, args.max_batches * args.batch_size
        ),  # fmt: skip
        "memory": time_memory(batches),
        "train_step": time_steps(
            lambda b: aligner(b["ecg"], b["lead_mask"], b["keyframes"], gen).loss,
            batches,
            list(aligner.parameters()),
            args.steps,
        ),
    }
    for r in results.values():
        r["loader_over_step"] = r["petastorm"] / r["train_step"]
        r["loader_over_pyarrow"] = r["petastorm"] / r["pyarrow"]
        r["loader_over_memory"] = r["petastorm"] / r["memory"]

    print(f"{'stage input':<15} {'petastorm/s':>12} {'pyarrow/s':>10} {'memory/s':>10} "
          f"{'step/s':>8} {'load/step':>10} {'load/pyarrow':>13}")  # fmt: skip
    for name, r in results.items():
        print(f"{name:<15} {r['petastorm']:>12.0f} {r['pyarrow']:>10.0f} {r['memory']:>10.0f} "
              f"{r['train_step']:>8.0f} {r['loader_over_step']:>10.1f} "
              f"{r['loader_over_pyarrow']:>13.2f}")  # fmt: skip
    goal = all(r["loader_over_step"] >= 3.0 for r in results.values())
    print(f"goal (loader >= 3x every stage's step): {'met' if goal else 'MISSED'}")
    out = {
        "lake": str(args.lake), "batch_size": args.batch_size, "workers": args.workers, "pool": args.pool,
        "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
        "load_average": list(os.getloadavg()),
        "rows": {"examples_pretrain": pinned.rows, "examples_align": apinned.rows},
        "results": results, "goal_met": goal,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
