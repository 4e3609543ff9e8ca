"""Peak memory of one Python worker decoding a large echo cine: streamed against whole-clip.

Ingestion decodes an echo once, in silver, frame by frame straight to the 112x112 clip the
models read (``read_dicom(..., pixels="stream")``); bronze reads its header only. The baseline,
run in the same invocation on the same files, is the whole-clip decode ingestion used before
(``pixels="full"``: every stored frame decoded at once, then resized). Each decode runs in a
fresh interpreter so its peak RSS (``VmHWM``) is its own; an interpreter that only imports
the reader is measured too (the floor every worker pays).

The cine is synthetic (a phantom A4C clip resized to ``--size`` and repeated until the decoded
pixels reach ``--megabytes``), written uncompressed, as JPEG 2000 (lossless) and as RLE into a
temporary folder that is deleted afterwards; nothing is committed. Goal: a streamed decode of
the 500 MB cine stays under 1.5 GB peak RSS for every transfer syntax.

    python benchmarks/cine_memory.py [--megabytes 500] [--size 640x480]
        [--compressions none,jpeg2000,rle] [--out benchmarks/results/cine_memory.json]

The smoke test's tiny run: ``--megabytes 4 --size 160x120``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np

GOAL_BYTES = int(1.5 * 1024**3)
MODES = ("stream", "full")


def _peak_rss_bytes() -> int:
    """This process's own peak RSS (``VmHWM``).

    Not ``ru_maxrss``: Linux carries it across ``exec``, so a child started from a parent
    holding the synthetic clip would report the parent's peak.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB elsewhere


def _child(path: str, mode: str) -> None:
    """In a fresh interpreter: decode ``path`` (or only import, mode ``import``); print JSON."""
    from pipelines.readers import EchoClip, read_dicom
    from pipelines.readers.limits import ReadLimits

    start = time.perf_counter()
    frames = 0
    if mode != "import":
        # caps high enough for the whole-clip baseline; the streamed read needs none of it
        limits = ReadLimits(max_decoded_bytes=1 << 40, max_file_bytes=1 << 40)
        clip = read_dicom(path, limits=limits, pixels=mode)  # type: ignore[arg-type]
        frames = clip.n_frames if isinstance(clip, EchoClip) else 0
    peak = _peak_rss_bytes()
    print(json.dumps({"peak_rss_bytes": peak, "frames": frames,
                      "seconds": time.perf_counter() - start}))  # fmt: skip


def measure(path: Path | None, mode: str) -> dict[str, Any]:
    """Run one decode in a fresh interpreter and return what it printed."""
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(path or ""), mode]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def synthetic_frames(megabytes: float, width: int, height: int) -> np.ndarray:
    """A phantom A4C clip resized to ``width`` x ``height``, repeated to ``megabytes``."""
    from cardiolake.cohort.echo_phantom import simulate_echo
    from cardiolake.cohort.latent import sample_patient
    from cardiolake.cohort.settings import CohortSettings

    state = sample_patient(CohortSettings(), 0)
    r = np.arange(0.2, 10.0, state.rr_s)
    clip = simulate_echo(state, np.random.default_rng(0), r_peaks_s=r,
                         t_end_s=r + state.qt_ms / 1000.0, clip_start_s=0.0, duration_s=2.0,
                         fps=50.0)  # fmt: skip
    base = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR)
                     for f in clip.frames])  # fmt: skip
    n = max(1, int(megabytes * 1024**2 // (width * height)))
    return np.ascontiguousarray(base[np.arange(n) % len(base)])


def write_cines(frames: np.ndarray, folder: Path, compressions: list[str]) -> dict[str, Path]:
    """The same frames as one DICOM per transfer syntax."""
    from cardiolake.cohort.latent import sample_patient
    from cardiolake.cohort.settings import CohortSettings
    from cardiolake.cohort.writers.dicom_echo import write_dicom_echo

    state = sample_patient(CohortSettings(), 0)
    echo = SimpleNamespace(frames=frames, fps=50.0, r_wave_s=None)
    out = {}
    for compression in compressions:
        started = time.perf_counter()
        out[compression] = write_dicom_echo(
            echo, folder / f"cine_{compression}.dcm", state=state, seed=0,  # type: ignore[arg-type]
            compression=compression, include_r_wave_vector=False, synchronized=False,
        )  # fmt: skip
        print(f"wrote {compression}: {out[compression].stat().st_size / 1024**2:.0f} MB on disk "
              f"in {time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=float, default=500.0, help="decoded clip size")
    parser.add_argument("--size", default="640x480", help="frame WIDTHxHEIGHT")
    parser.add_argument("--compressions", default="none,jpeg2000,rle")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cine_memory.json"))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    width, height = (int(v) for v in args.size.lower().split("x"))
    compressions = [c.strip() for c in args.compressions.split(",") if c.strip()]
    frames = synthetic_frames(args.megabytes, width, height)
    decoded = int(frames.nbytes)
    floor = measure(None, "import")
    rows = []
    with tempfile.TemporaryDirectory(prefix="cine_memory_") as tmp:
        files = write_cines(frames, Path(tmp), compressions)
        del frames
        for compression, path in files.items():
            got = {mode: measure(path, mode) for mode in MODES}
            rows.append({
                "compression": compression,
                "file_bytes": path.stat().st_size,
                "frames": got["stream"]["frames"],
                **{f"{m}_peak_rss_bytes": got[m]["peak_rss_bytes"] for m in MODES},
                **{f"{m}_seconds": got[m]["seconds"] for m in MODES},
                "full_over_stream_rss": got["full"]["peak_rss_bytes"]
                / got["stream"]["peak_rss_bytes"],
                "stream_under_goal": got["stream"]["peak_rss_bytes"] < GOAL_BYTES,
            })  # fmt: skip
    gib = 1024**3
    print(
        f"\ncine of {decoded / 1024**2:.0f} MB decoded ({args.size}); worker floor "
        f"{floor['peak_rss_bytes'] / gib:.2f} GiB; goal: streamed < {GOAL_BYTES / gib:.1f} GiB"
    )
    print(
        f"{'compression':<12}{'file MB':>9}{'frames':>8}{'stream GiB':>12}{'full GiB':>10}"
        f"{'full/stream':>13}{'stream s':>10}{'full s':>8}"
    )
    for r in rows:
        print(f"{r['compression']:<12}{r['file_bytes'] / 1024**2:>9.0f}{r['frames']:>8}"
              f"{r['stream_peak_rss_bytes'] / gib:>12.2f}{r['full_peak_rss_bytes'] / gib:>10.2f}"
              f"{r['full_over_stream_rss']:>13.2f}{r['stream_seconds']:>10.1f}"
              f"{r['full_seconds']:>8.1f}")  # fmt: skip
    report = {
        "benchmark": "cine_memory",
        "baseline": "full (whole-clip decode, then resize)",
        "decoded_bytes": decoded,
        "frame_size": [width, height],
        "goal_peak_rss_bytes": GOAL_BYTES,
        "worker_floor_rss_bytes": floor["peak_rss_bytes"],
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
