#!/usr/bin/env python3
"""Score one mobile ECG recording with a cardiolake device bundle (numpy + onnxruntime only).

    python score_recording.py RECORD [--bundle DIR] [--precision int8|fp32] [--json]

RECORD is a WFDB record (``RECORD.hea`` + its signal file; formats 16, 61, 80, 212, 24, 32),
1 to 6 limb leads at any sampling rate. The script checks the model file against the bundle's
manifest (SHA-256), applies ``preprocessing.json`` (mV, polyphase resampling to the model's
rate, clipping, windows), runs the model, averages the windows' logits, calibrates, and prints
the urgent probability and the triage decision at the bundle's threshold for that many leads.

This file is the platform's reference implementation of the device side: the bundle ships it
as ``score_recording.py`` and the platform's parity tests import it, so what a device computes
is what was validated. It must keep needing nothing beyond the standard library, numpy and
onnxruntime.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Bytes per sample of the supported WFDB storage formats.
BYTES_PER_SAMPLE = {"16": 2.0, "61": 2.0, "80": 1.0, "212": 1.5, "24": 3.0, "32": 4.0}
#: Invalid-sample markers per format (WFDB writes them for gaps).
INVALID = {"16": -(2**15), "61": -(2**15), "80": -(2**7), "212": -(2**11), "24": -(2**23),
           "32": -(2**31)}  # fmt: skip
#: Longest recording a device sends (samples per channel): a bigger header is refused before
#: anything is allocated.
MAX_SAMPLES = 10 * 60 * 2000
_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3}
_LEAD_NAMES = {"i": "I", "ii": "II", "iii": "III", "avr": "aVR", "avl": "aVL", "avf": "aVF",
               "di": "I", "dii": "II", "diii": "III"}  # fmt: skip


class RecordError(ValueError):
    """A recording that cannot be scored; the message names the file and the problem."""


@dataclass(frozen=True)
class Recording:
    """A decoded recording: (channels, samples) in mV at ``fs``, with lead names."""

    name: str
    fs: float
    leads: tuple[str, ...]
    signal: np.ndarray


@dataclass(frozen=True)
class _Signal:
    """One signal line of a WFDB header."""

    file: str
    fmt: str
    offset: int
    gain: float
    baseline: int
    to_mv: float
    name: str


def lead_name(raw: str) -> str:
    """Canonical limb-lead spelling of a header description ("lead avr" -> "aVR")."""
    key = re.sub(r"[\s_-]", "", raw.lower())
    key = re.sub(r"^(ecg|ekg)?(lead)?", "", key) or key
    return _LEAD_NAMES.get(key, raw.strip())


def _decode(raw: np.ndarray, fmt: str, n_values: int) -> np.ndarray:
    """Signed integers of a WFDB signal file's bytes (interleaved channels)."""
    if fmt == "16":
        return raw[: 2 * n_values].view("<i2").astype(np.int64)
    if fmt == "61":
        return raw[: 2 * n_values].view(">i2").astype(np.int64)
    if fmt == "80":
        return raw[:n_values].astype(np.int64) - 128
    if fmt == "32":
        return raw[: 4 * n_values].view("<i4").astype(np.int64)
    if fmt == "24":
        b = raw[: 3 * n_values].reshape(-1, 3).astype(np.int64)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return np.where(v >= 2**23, v - 2**24, v)
    if fmt == "212":  # two 12-bit samples in three bytes
        n_pairs = (n_values + 1) // 2
        b = raw[: 3 * n_pairs].reshape(-1, 3).astype(np.int64)
        first = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
        second = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
        v = np.stack([first, second], axis=1).reshape(-1)[:n_values]
        return np.where(v >= 2**11, v - 2**12, v)
    raise RecordError(f"signal format {fmt} is not supported")


def read_wfdb(record: Path) -> Recording:
    """Read a WFDB record (``record`` with or without ``.hea``) into mV channels.

    Raises:
        RecordError: a missing, malformed, oversized or truncated record (named).
    """
    hea = record if record.suffix == ".hea" else record.with_name(record.name + ".hea")
    if not hea.is_file():
        raise RecordError(f"{hea}: no such header")
    lines = [ln.split("#")[0].strip() for ln in hea.read_text(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise RecordError(f"{hea}: empty header")
    head = lines[0].split()
    try:
        n_sig = int(head[1])
        fs = float(head[2].split("/")[0]) if len(head) > 2 else 250.0
        n_samp = int(head[3]) if len(head) > 3 else 0
    except (IndexError, ValueError) as exc:
        raise RecordError(f"{hea}: malformed record line {lines[0]!r}") from exc
    if not 1 <= n_sig <= 64 or not 0 < fs <= 20000 or not 0 < n_samp <= MAX_SAMPLES:
        raise RecordError(f"{hea}: {n_sig} signals, {fs} Hz, {n_samp} samples is outside "
                          f"what a device records (at most {MAX_SAMPLES} samples)")  # fmt: skip
    if len(lines) < 1 + n_sig:
        raise RecordError(f"{hea}: {n_sig} signals declared, {len(lines) - 1} described")
    specs: list[_Signal] = []
    for ln in lines[1 : 1 + n_sig]:
        f = ln.split()
        m = re.fullmatch(r"(\d+)(?:x(\d+))?(?::\d+)?(?:\+(\d+))?", f[1]) if len(f) > 1 else None
        if m is None or int(m.group(2) or 1) != 1:  # several samples per frame: not a device
            raise RecordError(f"{hea}: unsupported signal line {ln!r}")
        g = re.fullmatch(r"([-+\d.eE]+)(?:\(([-\d]+)\))?(?:/(\S+))?", f[2]) if len(f) > 2 else None
        gain = float(g.group(1)) if g else 0.0
        adczero = int(f[4]) if len(f) > 4 else 0
        baseline = int(g.group(2)) if g and g.group(2) else adczero
        units = (g.group(3) if g and g.group(3) else "mV").lower()
        name = lead_name(" ".join(f[8:])) if len(f) > 8 else f"ch{len(specs)}"
        specs.append(_Signal(f[0], m.group(1), int(m.group(3) or 0),
                             gain if gain != 0 else 200.0, baseline, _TO_MV.get(units, 1.0),
                             name))  # fmt: skip
    signal = np.zeros((n_sig, n_samp), np.float32)
    for file in dict.fromkeys(s.file for s in specs):
        members = [i for i, s in enumerate(specs) if s.file == file]
        fmt = specs[members[0]].fmt
        if fmt not in BYTES_PER_SAMPLE or any(specs[i].fmt != fmt for i in members):
            raise RecordError(f"{hea}: signal format {fmt} of {file} is not supported")
        path = hea.with_name(file)
        if not path.is_file():
            raise RecordError(f"{path}: signal file is missing")
        offset = specs[members[0]].offset
        need = int(math.ceil(n_samp * len(members) * BYTES_PER_SAMPLE[fmt]))
        if path.stat().st_size - offset < need:
            raise RecordError(
                f"{path}: {path.stat().st_size - offset} bytes hold fewer than the "
                f"{n_samp} samples x {len(members)} signals the header declares"
            )
        raw = np.fromfile(path, dtype=np.uint8, count=need, offset=offset)
        values = _decode(raw, fmt, n_samp * len(members)).reshape(n_samp, len(members))
        for col, i in enumerate(members):
            sig = specs[i]
            digital = values[:, col]
            mv = (digital - sig.baseline) / sig.gain * sig.to_mv
            signal[i] = np.where(digital == INVALID[fmt], np.nan, mv).astype(np.float32)
    return Recording(hea.stem, fs, tuple(sig.name for sig in specs), signal)


def firwin_kaiser(numtaps: int, cutoff: float, beta: float) -> np.ndarray:
    """Kaiser-windowed sinc low-pass, unity DC gain (``scipy.signal.firwin``'s design)."""
    alpha = 0.5 * (numtaps - 1)
    m = np.arange(numtaps) - alpha
    h: np.ndarray = cutoff * np.sinc(cutoff * m) * np.kaiser(numtaps, beta)
    return h / float(h.sum())


def resample(x: np.ndarray, fs_in: float, fs_out: int, taps_per_phase: int = 4,
             beta: float = 5.0) -> np.ndarray:  # fmt: skip
    """Polyphase resampling along the last axis (``scipy.signal.resample_poly`` semantics).

    Only the output samples are computed (an ``up``-fold zero-stuffed signal is never built),
    so odd rates such as 257 -> 300 Hz cost what 300 -> 300 does.
    """
    fs_in_i = int(round(fs_in))
    if fs_in_i == fs_out:
        return x.astype(np.float32, copy=False)
    g = math.gcd(fs_in_i, fs_out)
    up, down = fs_out // g, fs_in_i // g
    rate = max(up, down)
    h = firwin_kaiser(2 * taps_per_phase * rate + 1, 1.0 / rate, beta) * up
    half = (h.size - 1) // 2
    n_in = x.shape[-1]
    n_out = -(-n_in * up // down)
    pre_pad = down - half % down
    pre_remove = (half + pre_pad) // down
    h = np.concatenate([np.zeros(pre_pad), h])
    # output k of the full upfirdn is sum_i x[i] h[k*down - i*up]
    k = np.arange(pre_remove, pre_remove + n_out)
    t = k * down
    n_taps = -(-h.size // up) + 1
    i = (t // up)[:, None] - np.arange(n_taps)[None, :]
    j = t[:, None] - i * up
    valid = (i >= 0) & (i < n_in) & (j < h.size) & (j >= 0)
    weights = np.where(valid, h[np.clip(j, 0, h.size - 1)], 0.0)
    gathered = x[..., np.clip(i, 0, n_in - 1)].astype(np.float64)
    out: np.ndarray = np.einsum("...kt,kt->...k", gathered, weights).astype(np.float32)
    return out


def preprocess(rec: Recording, spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs of a recording: (W, leads, window) windows and the (leads,) lead mask.

    Raises:
        RecordError: the recording has none of the model's leads.
    """
    leads = list(spec["leads"])
    rate = int(spec["rate_hz"])
    window = int(round(float(spec["window_s"]) * rate))
    rows = {name: i for i, name in reversed(list(enumerate(rec.leads)))}
    present = [lead for lead in leads if lead in rows]
    if not present:
        raise RecordError(f"{rec.name}: none of the leads {leads} in {list(rec.leads)}")
    r = spec.get("resampler", {})
    x = np.nan_to_num(np.stack([rec.signal[rows[lead]] for lead in present]))
    x = resample(x, rec.fs, rate, int(r.get("taps_per_phase", 4)), float(r.get("kaiser_beta", 5)))
    x = np.clip(x, -float(spec["clip_mv"]), float(spec["clip_mv"]))
    full = np.zeros((len(leads), x.shape[-1]), np.float32)
    mask = np.zeros(len(leads), np.float32)
    for k, lead in enumerate(present):
        full[leads.index(lead)] = x[k]
        mask[leads.index(lead)] = 1.0
    n = full.shape[-1]
    starts = list(range(0, max(n - window, 0) + 1, window)) or [0]
    windows = np.zeros((len(starts), len(leads), window), np.float32)
    for w, s in enumerate(starts):
        seg = full[:, s : s + window]
        windows[w, :, : seg.shape[-1]] = seg
    return windows, mask


def decide(mean_logit: float, n_leads: int, spec: dict[str, Any]) -> dict[str, Any]:
    """Calibrated urgent probability and the decision at the lead count's threshold."""
    probability = 1.0 / (1.0 + math.exp(-mean_logit / float(spec["temperature"])))
    counts = sorted(int(k) for k in spec["thresholds_by_lead_count"])
    nearest = min(counts, key=lambda c: (abs(c - n_leads), c))
    threshold = float(spec["thresholds_by_lead_count"][str(nearest)])
    return {"probability": probability, "threshold": threshold,
            "decision": "urgent" if probability >= threshold else "routine"}  # fmt: skip


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_bundle(bundle: Path, precision: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The model file (checked against the manifest), the spec and the manifest."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    name = manifest["models"][precision]
    model = bundle / name
    expected = manifest["files"].get(name)
    if expected is None or not model.is_file() or sha256(model) != expected:
        raise RecordError(f"{model}: missing or does not match the bundle manifest")
    spec_name = manifest["preprocessing"]
    if sha256(bundle / spec_name) != manifest["files"].get(spec_name):
        raise RecordError(f"{bundle / spec_name}: does not match the bundle manifest")
    return model, json.loads((bundle / spec_name).read_text()), manifest


def score(record: Path, bundle: Path, precision: str = "int8", threads: int = 1
          ) -> dict[str, Any]:  # fmt: skip
    """Score one recording with a bundle: the result a device would display."""
    import onnxruntime as ort

    model, spec, manifest = load_bundle(bundle, precision)
    rec = read_wfdb(record)
    windows, mask = preprocess(rec, spec)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    names = spec["input_names"]
    masks = np.repeat(mask[None], len(windows), axis=0)
    logits = session.run([spec["output_name"]], {names[0]: windows, names[1]: masks})[0]
    mean_logit = float(logits[:, 0].astype(np.float64).mean())
    n_leads = int(mask.sum())
    return {"record": rec.name, "model": manifest["model"], "version": manifest["version"],
            "precision": precision, "leads": [lead for lead, m in zip(spec["leads"], mask,
                                                                       strict=True) if m],
            "n_leads": n_leads, "source_fs": rec.fs, "seconds": rec.signal.shape[1] / rec.fs,
            "windows": len(windows), "logit": mean_logit,
            **decide(mean_logit, n_leads, spec)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Command line: print the score and the decision (exit 2 on an unreadable record)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("record", type=Path, help="WFDB record (path without or with .hea)")
    parser.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parent,
                        help="bundle folder (default: this script's folder)")  # fmt: skip
    parser.add_argument("--precision", choices=("int8", "fp32"), default=None,
                        help="model to run (default: the bundle's shipped one)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        precision = args.precision or json.loads(
            (args.bundle / "manifest.json").read_text())["shipped"]  # fmt: skip
        result = score(args.record, args.bundle, precision, args.threads)
    except (RecordError, OSError, KeyError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['record']}: {result['n_leads']} lead(s) {' '.join(result['leads'])}, "
            f"{result['source_fs']:g} Hz, {result['seconds']:.1f} s, {result['windows']} "
            f"window(s); model {result['model']} v{result['version']} ({precision})"
        )
        print(
            f"urgent probability {result['probability']:.4f}  threshold "
            f"{result['threshold']:.4f}  decision: {result['decision'].upper()}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
