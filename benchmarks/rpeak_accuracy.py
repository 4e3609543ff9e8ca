"""R-peak detector accuracy on real MIT-BIH records against their expert beat annotations.

For every record with a ``.atr`` file in ``--data-dir/mitdb``, each lead separately and both
leads fused: sensitivity, PPV, F1 (150 ms tolerance, beat symbols ``NLRBAaJSVrFejnE/fQ?``),
the median distance of matched detections to the annotated R peak, and the run time of
cardiolake's detector. The named baseline, wfdb's XQRS (plus ``correct_peaks`` to move its
marks onto the R peak, as a user would), runs on the same signal in the same invocation, so
the F1 and time ratios stay meaningful on a shared, noisy machine. neurokit2's default
detector is reported beside it for reference.

    python benchmarks/rpeak_accuracy.py [--data-dir ../shared/data/wfdb] [--out benchmarks/results/rpeak_accuracy.json]
        [--max-seconds S]   # score only the first S seconds of each record (default: all)
        [--no-neurokit]

The smoke test's tiny run: ``--max-seconds 60 --out <tmp>/x.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np
import wfdb
from wfdb import processing

from pipelines.signal.rpeaks import detect_rpeaks_multilead, match_beats
from pipelines.signal.wfdb_reader import read_wfdb

ROOT = Path(__file__).resolve().parents[1]
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
TOLERANCE_S = 0.15
BASELINE = "wfdb_xqrs"


def _xqrs(signal: np.ndarray, fs: float) -> np.ndarray:
    xqrs = processing.XQRS(sig=signal, fs=fs)
    xqrs.detect(verbose=False)
    peaks = processing.correct_peaks(
        signal,
        np.asarray(xqrs.qrs_inds, dtype=int),
        search_radius=int(0.07 * fs),
        smooth_window_size=10,
    )
    return np.unique(np.asarray(peaks, dtype=np.int64))


def _neurokit(signal: np.ndarray, fs: float) -> np.ndarray:
    import neurokit2 as nk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, info = nk.ecg_peaks(nk.ecg_clean(signal, sampling_rate=fs), sampling_rate=fs)
    return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)


def _score(found: np.ndarray, reference: np.ndarray, fs: float, seconds: float) -> dict:
    m = match_beats(found / fs, reference / fs, TOLERANCE_S)
    offsets = np.empty(0)
    if found.size and reference.size:
        found = np.sort(found)
        right = np.clip(np.searchsorted(found, reference), 0, found.size - 1)
        left = np.clip(right - 1, 0, found.size - 1)
        nearest = np.minimum(np.abs(found[right] - reference), np.abs(found[left] - reference))
        offsets = nearest[nearest <= TOLERANCE_S * fs]
    return {
        "tp": m.tp, "fp": m.fp, "fn": m.fn, "sensitivity": round(m.sensitivity, 5),
        "ppv": round(m.ppv, 5), "f1": round(m.f1, 5),
        "median_offset_ms": round(float(np.median(offsets)) * 1000 / fs, 2) if offsets.size else None,
        "seconds": round(seconds, 4),
    }  # fmt: skip


def _timed(fn: Callable[..., np.ndarray], *args: object) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def _evaluate_record(
    stem: Path,
    baselines: dict[str, Callable[[np.ndarray, float], np.ndarray]],
    max_seconds: float | None = None,
) -> list[dict]:
    """Rows for each lead of one record (plus all leads fused), ours beside the baselines.

    ``max_seconds`` keeps only the start of the record (and the reference beats in it).
    """
    record = read_wfdb(stem)
    ann = wfdb.rdann(str(stem), "atr")
    reference = np.array(
        [s for s, c in zip(ann.sample, ann.symbol, strict=True) if c in BEAT_SYMBOLS],
        dtype=np.int64,
    )
    signals, names, fs = record.ecg_matrix()
    signals = np.nan_to_num(signals.astype(np.float64))
    if max_seconds is not None:
        signals = signals[: int(max_seconds * fs)]
        reference = reference[reference < signals.shape[0]]
    leads = [(name, [j]) for j, name in enumerate(names)]
    if len(names) > 1:
        leads.append(("+".join(names), list(range(len(names)))))
    rows = []
    for lead, cols in leads:
        found, seconds = _timed(detect_rpeaks_multilead, signals[:, cols], fs)
        row = {"record": record.record_name, "lead": lead, "fs": fs, "duration_s": round(signals.shape[0] / fs, 1),
               "reference_beats": int(reference.size), "cardiolake": _score(found, reference, fs, seconds)}  # fmt: skip
        if len(cols) == 1:  # the baselines are single-lead detectors
            for name, fn in baselines.items():
                other, other_s = _timed(fn, signals[:, cols[0]], fs)
                row[name] = _score(other, reference, fs, other_s)
            base = row[BASELINE]
            row["f1_ratio_vs_baseline"] = round(row["cardiolake"]["f1"] / max(base["f1"], 1e-9), 4)
            row["speedup_vs_baseline"] = round(base["seconds"] / max(seconds, 1e-9), 1)
        rows.append(row)
    return rows


def _summary(rows: list[dict], names: list[str]) -> dict:
    """Gross totals over the single-lead rows."""
    single = [r for r in rows if BASELINE in r]
    summary: dict = {}
    for name in names:
        tp, fp, fn = (sum(r[name][k] for r in single) for k in ("tp", "fp", "fn"))
        summary[name] = {"tp": tp, "fp": fp, "fn": fn, "sensitivity": round(tp / max(tp + fn, 1), 5),
                         "ppv": round(tp / max(tp + fp, 1), 5), "f1": round(2 * tp / max(2 * tp + fp + fn, 1), 5),
                         "seconds": round(sum(r[name]["seconds"] for r in single), 3)}  # fmt: skip
    summary["f1_ratio_vs_baseline"] = round(
        summary["cardiolake"]["f1"] / max(summary[BASELINE]["f1"], 1e-9), 4
    )
    summary["speedup_vs_baseline"] = round(
        summary[BASELINE]["seconds"] / max(summary["cardiolake"]["seconds"], 1e-9), 1
    )
    return summary


def _print_table(rows: list[dict], names: list[str], summary: dict) -> None:
    head = f"{'record':>6} {'lead':>8} {'beats':>6} |"
    head += "|".join(
        f" {n[:10]:>10}: {'TP':>5} {'FP':>3} {'FN':>3} {'Se':>7} {'PPV':>7} {'s':>6} "
        for n in names
    )
    head += "| F1 ratio  speedup"
    print(head)
    print("-" * len(head))
    for r in rows:
        line = f"{r['record']:>6} {r['lead']:>8} {r['reference_beats']:>6} |"
        for n in names:
            s = r.get(n)
            line += (
                f" {'':>10}  {s['tp']:>5} {s['fp']:>3} {s['fn']:>3} {s['sensitivity']:>7.2%} {s['ppv']:>7.2%} {s['seconds']:>6.3f} |"
                if s
                else " " * 49 + "|"
            )
        line += f" {r.get('f1_ratio_vs_baseline', ''):>8} {r.get('speedup_vs_baseline', ''):>7}"
        print(line)
    ours, base = summary["cardiolake"], summary[BASELINE]
    print(
        f"single-lead totals: cardiolake Se {ours['sensitivity']:.2%} PPV {ours['ppv']:.2%} {ours['seconds']:.2f} s"
        f" | {BASELINE} Se {base['sensitivity']:.2%} PPV {base['ppv']:.2%} {base['seconds']:.2f} s"
        f" | F1 ratio {summary['f1_ratio_vs_baseline']} | speedup {summary['speedup_vs_baseline']}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".." / "shared" / "data" / "wfdb")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "rpeak_accuracy.json"
    )
    parser.add_argument(
        "--no-neurokit", action="store_true", help="skip the neurokit2 reference column"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="score only the first MAX_SECONDS of each record (default: the whole record)",
    )
    args = parser.parse_args()
    if args.max_seconds is not None and args.max_seconds <= 0:
        parser.error("--max-seconds must be positive")

    headers = sorted(
        h for h in (args.data_dir / "mitdb").glob("*.hea") if h.with_suffix(".atr").exists()
    )
    if not headers:
        raise SystemExit(f"no MIT-BIH records with .atr annotations in {args.data_dir / 'mitdb'}")
    baselines: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {BASELINE: _xqrs}
    if not args.no_neurokit:
        baselines["neurokit2"] = _neurokit
    # warm up imports and caches on 20 s of the first record so no detector is timed cold
    first = read_wfdb(headers[0].with_suffix("")).ecg_channels[0]
    warm = np.nan_to_num(first.signal[: int(20 * first.fs)].astype(np.float64))
    for fn in (detect_rpeaks_multilead, *baselines.values()):
        fn(warm, first.fs)

    rows = [
        row
        for header in headers
        for row in _evaluate_record(header.with_suffix(""), baselines, args.max_seconds)
    ]
    names = ["cardiolake", *baselines]
    summary = _summary(rows, names)
    _print_table(rows, names, summary)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "rpeak_accuracy", "tolerance_s": TOLERANCE_S, "max_seconds": args.max_seconds, "beat_symbols": "".join(sorted(BEAT_SYMBOLS)),
        "baseline": "wfdb.processing.XQRS + correct_peaks (70 ms), same run",
        "environment": {"python": platform.python_version(), "machine": platform.machine(),
                        **{p: version(p) for p in ("numpy", "scipy", "wfdb", "neurokit2")}},
        "summary_single_lead": summary, "results": rows,
    }, indent=2))  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
