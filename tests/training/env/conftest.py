"""A small synthetic gold layer written with delta-rs, for the training environment's tests.

The training environment cannot run ingestion (no Spark 4), so these fixtures write gold-shaped
tables directly: ECGs with a beat train at a known rate, echo cines whose LV cavity shrinks
from end-diastole (50 ms after each R peak) to end-systole (350 ms), and aligned pairs. The
platform-side tests (tests/training/test_*.py) train on a really ingested lake instead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from cardiolake import tables
from cardiolake.domain import STANDARD_LEADS

FS = 500
SECONDS = 10.0
ECHO_FPS = 30.0
ECHO_SIZE = 112
LEAD_GAINS = np.linspace(0.4, 1.4, len(STANDARD_LEADS))


def _key(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def synthetic_ecg(rng: np.random.Generator, hr: float) -> tuple[np.ndarray, np.ndarray]:
    """(12, FS*SECONDS) float32 mV and R-peak times (s)."""
    n = int(FS * SECONDS)
    t = np.arange(n) / FS
    rr = 60.0 / hr
    peaks = np.arange(0.3 + rng.uniform(0, 0.2), SECONDS - 0.2, rr)
    beat = np.zeros(n)
    for r in peaks:
        beat += np.exp(-0.5 * ((t - r) / 0.012) ** 2)  # QRS
        beat += 0.25 * np.exp(-0.5 * ((t - r - 0.3) / 0.04) ** 2)  # T
    leads = np.outer(LEAD_GAINS, beat) + rng.normal(0, 0.02, (len(STANDARD_LEADS), n))
    return leads.astype(np.float32), peaks


def synthetic_echo(rng: np.random.Generator, peaks: np.ndarray, start: float, seconds: float
                   ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(n, 112, 112) uint8 frames (a cavity that contracts each beat) and frame times."""
    times = np.arange(0.0, seconds, 1.0 / ECHO_FPS)
    yy, xx = np.mgrid[:ECHO_SIZE, :ECHO_SIZE]
    frames = np.zeros((len(times), ECHO_SIZE, ECHO_SIZE), dtype=np.uint8)
    for i, ft in enumerate(times):
        ecg_t = ft + start
        since = ecg_t - peaks[peaks <= ecg_t + 1e-9]
        phase = since[-1] if len(since) else 1.0
        contraction = np.exp(-0.5 * ((phase - 0.2) / 0.12) ** 2)
        radius = 30 - 12 * contraction
        inside = (yy - 56) ** 2 + (xx - 56) ** 2 < radius**2
        img = np.full((ECHO_SIZE, ECHO_SIZE), 160.0) + rng.normal(0, 10, (ECHO_SIZE, ECHO_SIZE))
        img[inside] = 20
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames, times


def _split(i: int) -> str:
    return ("train", "train", "train", "validation", "test")[i % 5]


def build_gold(root: Path, patients: int = 20, seed: int = 0) -> dict[str, int]:
    """Write silver ecg/echo stubs and the three gold example tables; returns row counts."""
    rng = np.random.default_rng(seed)
    pre, align, ecg_silver, echo_silver = [], [], [], []
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    for i in range(patients):
        patient = _key("patient", seed, i)
        hr = float(rng.uniform(50, 110))
        signal, peaks = synthetic_ecg(rng, hr)
        ecg_key = _key("ecg", seed, i)
        acq = base + dt.timedelta(days=i)
        leads = {f"lead_{name}": signal[j].tolist() for j, name in enumerate(STANDARD_LEADS)}
        common = {"record_key": ecg_key, "patient_key": patient, "split": _split(i),
                  "fs": FS, "n_samples": signal.shape[1]}  # fmt: skip
        pre.append({**common, "example_key": ecg_key, "modality": "ecg", **leads,
                    "frames": None, "n_frames": None, "size": None, "fps": None})  # fmt: skip
        ecg_silver.append({"record_key": ecg_key, "acquisition_time": acq})
        start = 1.0
        frames, times = synthetic_echo(rng, peaks, start, 3.0)
        echo_key = _key("echo", seed, i)
        pre.append({"example_key": echo_key, "modality": "echo", "record_key": echo_key,
                    "patient_key": patient, "split": _split(i), "fs": None, "n_samples": None,
                    **{k: None for k in leads}, "frames": frames.tobytes(),
                    "n_frames": len(frames), "size": ECHO_SIZE, "fps": ECHO_FPS})  # fmt: skip
        echo_silver.append({"record_key": echo_key,
                            "acquisition_time": acq + dt.timedelta(seconds=start)})  # fmt: skip
        in_clip = peaks[(peaks > start) & (peaks < start + 3.0)]
        align.append({
            "example_key": _key(ecg_key, echo_key), "patient_key": patient, "split": _split(i),
            "ecg_record_key": ecg_key, "echo_record_key": echo_key, "clip_start_s": start,
            "n_beats": len(in_clip), "r_peaks_s": in_clip.tolist(),
            "ed_s": (in_clip + 0.05).tolist(), "es_s": (in_clip + 0.35).tolist(),
            **{k: v for k, v in common.items() if k in ("fs", "n_samples")}, **leads,
            "frames": frames.tobytes(), "n_frames": len(frames), "size": ECHO_SIZE,
            "fps": ECHO_FPS, "frame_times_s": times.tolist(),
        })  # fmt: skip
    floats = pa.list_(pa.float32())
    lead_fields = [(f"lead_{n}", floats) for n in STANDARD_LEADS]
    pre_schema = pa.schema([
        ("example_key", pa.string()), ("modality", pa.string()), ("record_key", pa.string()),
        ("patient_key", pa.string()), ("split", pa.string()), ("fs", pa.int32()),
        ("n_samples", pa.int32()), *lead_fields, ("frames", pa.binary()),
        ("n_frames", pa.int32()), ("size", pa.int32()), ("fps", pa.float64()),
    ])  # fmt: skip
    align_schema = pa.schema([
        ("example_key", pa.string()), ("patient_key", pa.string()), ("split", pa.string()),
        ("ecg_record_key", pa.string()), ("echo_record_key", pa.string()),
        ("clip_start_s", pa.float64()), ("n_beats", pa.int32()),
        ("r_peaks_s", pa.list_(pa.float64())), ("ed_s", pa.list_(pa.float64())),
        ("es_s", pa.list_(pa.float64())), ("fs", pa.int32()), ("n_samples", pa.int32()),
        *lead_fields, ("frames", pa.binary()), ("n_frames", pa.int32()), ("size", pa.int32()),
        ("fps", pa.float64()), ("frame_times_s", pa.list_(pa.float64())),
    ])  # fmt: skip
    times_schema = pa.schema([("record_key", pa.string()),
                              ("acquisition_time", pa.timestamp("us", tz="UTC"))])  # fmt: skip
    out = {
        tables.EXAMPLES_PRETRAIN: pa.Table.from_pylist(pre, schema=pre_schema),
        tables.EXAMPLES_ALIGN: pa.Table.from_pylist(align, schema=align_schema),
        tables.ECG: pa.Table.from_pylist(ecg_silver, schema=times_schema),
        tables.ECHO: pa.Table.from_pylist(echo_silver, schema=times_schema),
    }
    for table, arrow in out.items():
        path = table.path(root)
        path.mkdir(parents=True, exist_ok=True)
        # four files (row groups) per table, like Spark's tasks, so shards have parts to split
        step = (arrow.num_rows + 3) // 4
        for i, start in enumerate(range(0, arrow.num_rows, step)):
            mode = "overwrite" if i == 0 else "append"
            write_deltalake(str(path), arrow.slice(start, step), mode=mode)
    return {str(t): a.num_rows for t, a in out.items()}


@pytest.fixture(scope="session")
def gold_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake holding the synthetic gold tables (shared by every test; tests copy it to write)."""
    root = tmp_path_factory.mktemp("gold_lake")
    build_gold(root)
    return root


@pytest.fixture
def lake(gold_lake: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic lake (a test's runs and tables stay its own)."""
    import shutil

    root = tmp_path / "lake"
    shutil.copytree(gold_lake, root)
    return root
