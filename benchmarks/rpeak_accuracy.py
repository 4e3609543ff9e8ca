"""R-peak detector accuracy on real MIT-BIH records against their expert beat annotations.

For every record in ``--data-dir/mitdb`` and each lead: sensitivity and PPV (150 ms tolerance,
beat symbols ``NLRBAaJSVrFejnE/fQ?``) and run time of cardiolake's detector, beside wfdb's
XQRS as the named baseline in the same run (ratios of F1 and time).

    python benchmarks/rpeak_accuracy.py [--data-dir ../shared/data/wfdb] [--out benchmarks/results/rpeak_accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import wfdb
from wfdb import processing

from pipelines.signal.rpeaks import detect_rpeaks, match_beats

BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")


def _score(detected: np.ndarray, reference: np.ndarray, fs: float, seconds: float) -> dict:
    m = match_beats(detected / fs, reference / fs, 0.15)
    f1 = 2 * m.tp / (2 * m.tp + m.fp + m.fn) if m.tp else 0.0
    return {
        "tp": m.tp,
        "fp": m.fp,
        "fn": m.fn,
        "sensitivity": round(m.sensitivity, 5),
        "ppv": round(m.ppv, 5),
        "f1": round(f1, 5),
        "seconds": round(seconds, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/wfdb"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rpeak_accuracy.json"))
    args = parser.parse_args()
    rows = []
    for header in sorted((args.data_dir / "mitdb").glob("*.hea")):
        stem = str(header.with_suffix(""))
        record, ann = wfdb.rdrecord(stem), wfdb.rdann(stem, "atr")
        reference = np.array(
            [s for s, c in zip(ann.sample, ann.symbol, strict=True) if c in BEAT_SYMBOLS]
        )
        for lead in range(record.n_sig):
            signal = record.p_signal[:, lead]
            t = time.perf_counter()
            ours = detect_rpeaks(signal, record.fs)
            ours_s = time.perf_counter() - t
            t = time.perf_counter()
            xqrs = processing.XQRS(sig=signal, fs=record.fs)
            xqrs.detect(verbose=False)
            # XQRS marks QRS onsets loosely; move each to its local maximum like a user would
            base = processing.correct_peaks(
                signal,
                np.asarray(xqrs.qrs_inds),
                search_radius=int(0.07 * record.fs),
                smooth_window_size=10,
            )
            base_s = time.perf_counter() - t
            row = {
                "record": header.stem,
                "lead": record.sig_name[lead],
                "reference_beats": int(reference.size),
                "cardiolake": _score(ours, reference, record.fs, ours_s),
                "baseline_xqrs": _score(np.asarray(base), reference, record.fs, base_s),
            }
            row["f1_ratio_vs_baseline"] = round(
                row["cardiolake"]["f1"] / max(row["baseline_xqrs"]["f1"], 1e-9), 4
            )
            row["speedup_vs_baseline"] = round(base_s / max(ours_s, 1e-9), 2)
            rows.append(row)
    print(
        f"{'record':>6} {'lead':>5} {'beats':>6} | {'Se':>7} {'PPV':>7} {'s':>6} | {'XQRS Se':>7} {'PPV':>7} {'s':>6} | {'F1 ratio':>8} {'speedup':>7}"
    )
    for r in rows:
        o, b = r["cardiolake"], r["baseline_xqrs"]
        print(
            f"{r['record']:>6} {r['lead']:>5} {r['reference_beats']:>6} | {o['sensitivity']:>7.2%} {o['ppv']:>7.2%} {o['seconds']:>6} |"
            f" {b['sensitivity']:>7.2%} {b['ppv']:>7.2%} {b['seconds']:>6} | {r['f1_ratio_vs_baseline']:>8} {r['speedup_vs_baseline']:>7}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "rpeak_accuracy",
                "tolerance_s": 0.15,
                "baseline": "wfdb XQRS + correct_peaks, same run",
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
