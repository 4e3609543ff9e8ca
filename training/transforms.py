"""Row-group transforms Petastorm runs in its reader threads: example rows in, fixed shapes out.

They live in an importable module because Petastorm pickles ``TransformSpec`` functions by
reference. Each turns one pandas row group of a gold example table into the arrays a stage
stacks into tensors; random choices (which 10 s of a 30 s mobile strip, where a clip starts,
which beats) come from a generator seeded by the example key and the reader's epoch counter,
so two epochs see different crops while a re-run with the same seed sees the same ones.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from math import gcd
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import firwin, resample_poly

from cardiolake.domain import STANDARD_LEADS

#: Silver columns of the twelve leads, in :data:`STANDARD_LEADS` order.
LEAD_COLUMNS: tuple[str, ...] = tuple(f"lead_{lead}" for lead in STANDARD_LEADS)
N_LEADS = len(STANDARD_LEADS)
#: ECG amplitudes are clipped to this many mV (a detached electrode must not dominate a batch).
CLIP_MV = 5.0
_calls = itertools.count()


@dataclass(frozen=True)
class EcgShape:
    """What the ECG transforms emit.

    Attributes:
        fs: output rate (Hz).
        seconds: output length; longer recordings are cropped, shorter ones zero-padded.
        random_crop: pick the crop at random (training) or take the start (inference).
        seed: base seed of the random crops.
    """

    fs: int
    seconds: float
    random_crop: bool = True
    seed: int = 0

    @property
    def samples(self) -> int:
        """Samples per lead."""
        return int(round(self.fs * self.seconds))


@dataclass(frozen=True)
class EchoShape:
    """What the echo transforms emit.

    Attributes:
        size: square frame size.
        frames: frames per clip.
        clip_s: seconds a clip spans.
        views: clips per echo (two random starts for contrastive pretraining; one at inference).
        random_start: pick clip starts at random (training) or start at the first frame.
        seed: base seed of the random starts.
    """

    size: int
    frames: int
    clip_s: float
    views: int = 2
    random_start: bool = True
    seed: int = 0


def row_rng(key: str, seed: int, salt: int = 0) -> np.random.Generator:
    """A generator seeded by an example key, a run seed and a salt (the call counter)."""
    digest = hashlib.sha256(f"{seed}|{salt}|{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@functools.lru_cache(maxsize=32)
def _anti_alias(up: int, down: int) -> np.ndarray:
    # 8 taps per output phase instead of scipy's default 20: the loader's hottest line, and
    # ECG content sits well below the new Nyquist (40 Hz of 50 at 100 Hz)
    # no ``* up`` here: resample_poly scales an array window by ``up`` itself (it did twice,
    # which tripled every 500 -> 300 Hz student input)
    rate = max(up, down)
    return firwin(2 * 4 * rate + 1, 1.0 / rate, window=("kaiser", 5.0))


def resample(x: np.ndarray, fs_in: float, fs_out: int) -> np.ndarray:
    """Polyphase resampling along the last axis (anti-aliased)."""
    fs_in_i = int(round(fs_in))
    if fs_in_i == fs_out:
        return x.astype(np.float32, copy=False)
    g = gcd(fs_in_i, fs_out)
    up, down = fs_out // g, fs_in_i // g
    return resample_poly(x, up, down, axis=-1, window=_anti_alias(up, down)).astype(np.float32)


def ecg_matrix(row: Any, fs_out: int) -> tuple[np.ndarray, np.ndarray]:
    """The 12 x T signal (mV, resampled, clipped) and the 12-long lead mask of one silver row."""
    n = int(row["n_samples"])
    mask = np.zeros(N_LEADS, dtype=np.float32)
    present = []
    for i, col in enumerate(LEAD_COLUMNS):
        values = row[col]
        if values is not None and len(values) == n:
            present.append(np.asarray(values, dtype=np.float32))
            mask[i] = 1.0
    n_out = int(round(n * fs_out / float(row["fs"])))
    signal = np.zeros((N_LEADS, n_out), dtype=np.float32)
    if present:  # absent leads stay zero: resample only what is there
        got = resample(np.nan_to_num(np.stack(present)), float(row["fs"]), fs_out)
        signal[mask > 0, : got.shape[-1]] = np.clip(got[:, :n_out], -CLIP_MV, CLIP_MV)
    return signal, mask


def ecg_matrices(frame: pd.DataFrame, fs_out: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`ecg_matrix` of every row, resampling rows of one shape in a single call.

    Rows sharing a rate, a length and a lead set (the 12-lead carts, the 1-lead patches) are
    stacked and resampled together: the per-row Python overhead was most of the loader's time.
    """
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(frame)
    groups: dict[tuple[float, int, tuple[int, ...]], list[tuple[int, list[np.ndarray]]]] = {}
    records = frame.to_dict("records")
    for r, row in enumerate(records):
        n = int(row["n_samples"])
        present, idx = [], []
        for i, col in enumerate(LEAD_COLUMNS):
            values = row[col]
            if values is not None and len(values) == n:
                present.append(values)
                idx.append(i)
        groups.setdefault((float(row["fs"]), n, tuple(idx)), []).append((r, present))
    for (fs_in, n, idx), members in groups.items():
        mask = np.zeros(N_LEADS, dtype=np.float32)
        mask[list(idx)] = 1.0
        n_out = int(round(n * fs_out / fs_in))
        if not idx:
            for r, _ in members:
                out[r] = (np.zeros((N_LEADS, n_out), np.float32), mask)
            continue
        stacked = np.nan_to_num(np.asarray([p for _, p in members], dtype=np.float32))
        got = np.clip(resample(stacked, fs_in, fs_out)[..., :n_out], -CLIP_MV, CLIP_MV)
        for k, (r, _) in enumerate(members):
            signal = np.zeros((N_LEADS, n_out), dtype=np.float32)
            signal[list(idx), : got.shape[-1]] = got[k]
            out[r] = (signal, mask.copy())
    return [o for o in out if o is not None]


def crop(signal: np.ndarray, samples: int, rng: np.random.Generator | None) -> np.ndarray:
    """A ``samples``-long window (random start when ``rng``), zero-padded when shorter."""
    t = signal.shape[-1]
    if t >= samples:
        start = int(rng.integers(0, t - samples + 1)) if rng is not None else 0
        return np.ascontiguousarray(signal[..., start : start + samples])
    out = np.zeros((*signal.shape[:-1], samples), dtype=signal.dtype)
    out[..., :t] = signal
    return out


def ecg_rows(frame: pd.DataFrame, shape: EcgShape) -> pd.DataFrame:
    """ECG examples -> ``ecg`` (12 x samples float32) and ``lead_mask`` (12,) per row.

    Rows of other modalities in the batch (``examples_pretrain`` mixes ECG and echo) are
    dropped, so one reader of that table yields only ECG examples.
    """
    if "modality" in frame.columns:
        frame = frame[frame["modality"] == "ecg"]
    salt = next(_calls)
    ecgs, masks = [], []
    for key, (signal, mask) in zip(frame["record_key"], ecg_matrices(frame, shape.fs),
                                   strict=True):  # fmt: skip
        rng = row_rng(str(key), shape.seed, salt) if shape.random_crop else None
        ecgs.append(crop(signal, shape.samples, rng))
        masks.append(mask)
    out = pd.DataFrame({"record_key": frame["record_key"].to_numpy()})
    out["ecg"] = ecgs
    out["lead_mask"] = masks
    return out


def decode_frames(row: Any) -> np.ndarray:
    """The silver clip as ``n_frames x size x size`` uint8 (no copy)."""
    n, size = int(row["n_frames"]), int(row["size"])
    return np.frombuffer(row["frames"], dtype=np.uint8).reshape(n, size, size)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Area-average resize of ``k x s x s`` uint8 frames to ``k x size x size`` uint8."""
    import torch
    import torch.nn.functional as F

    if frames.shape[-1] == size:
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().unsqueeze(1)
    y = F.interpolate(x, size=(size, size), mode="area").squeeze(1)
    return y.round().clamp(0, 255).to(torch.uint8).numpy()


def frames_at(frames: np.ndarray, frame_times: np.ndarray, times: np.ndarray) -> np.ndarray:
    """The frames nearest to each requested time (clamped to the clip)."""
    idx = np.searchsorted(frame_times, times)
    idx = np.clip(idx, 1, len(frame_times) - 1)
    left = frame_times[idx - 1]
    idx = np.where(np.abs(times - left) <= np.abs(frame_times[idx] - times), idx - 1, idx)
    return frames[np.clip(idx, 0, len(frames) - 1)]


def _frame_times(row: Any) -> np.ndarray:
    times = row.get("frame_times_s")
    if times is not None and len(times) == int(row["n_frames"]):
        return np.asarray(times, dtype=np.float64)
    return np.arange(int(row["n_frames"])) / float(row["fps"])


def echo_rows(frame: pd.DataFrame, shape: EchoShape) -> pd.DataFrame:
    """Echo examples -> ``clips`` (views x frames x size x size uint8) per row."""
    if "modality" in frame.columns:
        frame = frame[frame["modality"] == "echo"]
    salt = next(_calls)
    clips = []
    for row in frame.to_dict("records"):
        frames = decode_frames(row)
        times = _frame_times(row)
        span = max(float(times[-1]) - shape.clip_s, 0.0)
        rng = row_rng(str(row["record_key"]), shape.seed, salt) if shape.random_start else None
        views = []
        for _ in range(shape.views):
            start = float(rng.uniform(0.0, span)) if rng is not None else 0.0
            want = start + np.linspace(0.0, shape.clip_s, shape.frames, endpoint=False)
            views.append(resize_frames(frames_at(frames, times, want), shape.size))
        clips.append(np.ascontiguousarray(np.stack(views)))
    out = pd.DataFrame({"record_key": frame["record_key"].to_numpy()})
    out["clips"] = clips
    return out


@dataclass(frozen=True)
class BeatShape:
    """What the stage-2 transform emits per beat.

    Attributes:
        fs: ECG rate.
        ecg_before_s: ECG seconds kept before the R peak.
        ecg_after_s: ECG seconds kept after it.
        size: echo frame size.
        frames: frames of the keyframe window.
        key_before_s: echo seconds before end-diastole.
        key_after_s: echo seconds after end-diastole (covers ES at the end of the T wave).
        beats: beats sampled per pair (all usable beats when 0).
        seed: base seed of the beat sampling.
    """

    fs: int
    ecg_before_s: float
    ecg_after_s: float
    size: int
    frames: int
    key_before_s: float
    key_after_s: float
    beats: int = 4
    seed: int = 0

    @property
    def ecg_samples(self) -> int:
        """ECG samples per beat window."""
        return int(round((self.ecg_before_s + self.ecg_after_s) * self.fs))


def patient_id(key: str) -> int:
    """A stable int64 id of a patient key (tensors cannot carry strings)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:7], "little")


def beat_rows(frame: pd.DataFrame, shape: BeatShape) -> pd.DataFrame:
    """Aligned pairs -> one row per usable beat: ECG window, lead mask, echo keyframe window.

    A beat is usable when its end-diastole is known and both windows fit inside their
    recordings. Echo times come from the ECG axis by ``t - clip_start_s`` (gold alignment).
    """
    salt = next(_calls)
    cols: dict[str, list[Any]] = {
        k: [] for k in ("ecg", "lead_mask", "keyframes", "patient", "beat")
    }
    keys: list[str] = []
    for row in frame.to_dict("records"):
        r_peaks = np.asarray(row["r_peaks_s"], dtype=np.float64)
        ed = np.asarray([np.nan if v is None else v for v in row["ed_s"]], dtype=np.float64)
        times = _frame_times(row)
        start = float(row["clip_start_s"]) if row.get("clip_start_s") is not None else np.nan
        if not np.isfinite(start):
            continue
        duration = int(row["n_samples"]) / float(row["fs"])
        ok = (
            np.isfinite(ed)
            & (r_peaks - shape.ecg_before_s >= 0)
            & (r_peaks + shape.ecg_after_s <= duration)
            & (ed - start - shape.key_before_s >= times[0])
            & (ed - start + shape.key_after_s <= times[-1])
        )
        usable = np.flatnonzero(ok)
        if usable.size == 0:
            continue
        if shape.beats and usable.size > shape.beats:
            rng = row_rng(str(row["example_key"]), shape.seed, salt)
            usable = np.sort(rng.choice(usable, shape.beats, replace=False))
        signal, mask = ecg_matrix(row, shape.fs)
        frames = decode_frames(row)
        pid = patient_id(str(row["patient_key"]))
        offsets = np.linspace(-shape.key_before_s, shape.key_after_s, shape.frames)
        for b in usable:
            first = int(round((r_peaks[b] - shape.ecg_before_s) * shape.fs))
            window = signal[:, first : first + shape.ecg_samples]
            if window.shape[-1] < shape.ecg_samples:
                window = crop(window, shape.ecg_samples, None)
            key = frames_at(frames, times, ed[b] - start + offsets)
            cols["ecg"].append(np.ascontiguousarray(window))
            cols["lead_mask"].append(mask)
            cols["keyframes"].append(resize_frames(key, shape.size))
            cols["patient"].append(pid)
            cols["beat"].append(int(b))
            keys.append(str(row["example_key"]))
    out = pd.DataFrame({"example_key": keys})
    for name, values in cols.items():
        out[name] = values
    return out.astype({"patient": "int64", "beat": "int64"})


def make_transform(
    func: Callable[..., pd.DataFrame], shape: object
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Bind a shape to a transform (a picklable partial)."""
    return functools.partial(func, shape=shape)
