"""Device-model latency: int8 and fp32 ONNX against PyTorch eager, one thread, batch 1.

Runs in the training environment (it needs PyTorch for the baseline):

    .venv-train/bin/python benchmarks/latency.py --lake L [--version champion]
    .venv-train/bin/python benchmarks/latency.py --random   # a random-weight student, no lake

For 1-lead and 6-lead inputs it times, in the same run, onnxruntime on the fp32 and the static
int8 (QDQ) model and the PyTorch student in eager mode (all single-threaded, batch 1, warm),
and reports p50/p95, the speed-up over eager (the named baseline: a ratio, because this machine
is shared) and the model sizes. Goal: p95 < 1 ms and < 300 KB for the shipped model.
Prints a table and writes JSON (``benchmarks/results/latency.json`` unless ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

from serving.artifacts import DEVICE_DIR, FP32_FILE, INT8_FILE, SPEC_FILE
from serving.export import device_example, export_fp32, latency_table, quantize_int8
from serving.settings import ExportSettings
from serving.spec import DeviceSpec


def random_student(tmp: Path) -> tuple[object, dict[str, Path], DeviceSpec]:
    """A randomly initialised student at the default size, exported and quantized."""
    from cardiolake.domain import LIMB_LEADS
    from training.encoders import EcgEncoder
    from training.labeled import TARGETS
    from training.settings import EcgEncoderSettings, StudentSettings
    from training.student import Student

    s = StudentSettings()
    encoder = EcgEncoder(EcgEncoderSettings())
    student = Student(encoder, s.input_fs, s.data.ecg_fs, encoder.cfg.embedding_dim).eval()
    spec = DeviceSpec(rate_hz=s.input_fs, leads=LIMB_LEADS, targets=TARGETS, temperature=1.0,
                      thresholds_by_lead_count={"1": 0.5, "6": 0.5}, sensitivity_target=0.9,
                      window_s=s.seconds)  # fmt: skip
    fp32 = export_fp32(student, spec, tmp / FP32_FILE, ExportSettings().opset)
    calibration = [device_example(spec, n, seed=k) for k in range(8) for n in (1, 6)]
    int8 = quantize_int8(fp32, tmp / INT8_FILE, calibration, ExportSettings())
    return student, {"fp32": fp32, "int8": int8}, spec


def registered_student(lake: Path, ref: str, tmp: Path) -> tuple[object, dict[str, Path],
                                                                   DeviceSpec]:  # fmt: skip
    """A registered device-model version's files and the PyTorch student it was exported from."""
    import mlflow

    from cardiolake.tracking import DEVICE_MODEL, STUDENT_MODEL
    from training.evaluate import load_registered
    from training.tracking import connect

    connect(lake)
    client = mlflow.MlflowClient()
    mv = (client.get_model_version(DEVICE_MODEL, ref) if ref.isdigit()
          else client.get_model_version_by_alias(DEVICE_MODEL, ref))  # fmt: skip
    local = Path(mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=DEVICE_DIR,
                                                     dst_path=str(tmp)))  # fmt: skip
    student = load_registered(STUDENT_MODEL, mv.tags["cardiolake.student_run"]).model.student
    return (student.eval(), {"fp32": local / FP32_FILE, "int8": local / INT8_FILE},
            DeviceSpec.read(local / SPEC_FILE))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--lake", type=Path, help="lake whose registry holds the device model")
    source.add_argument("--random", action="store_true", help="a random-weight student")
    parser.add_argument("--version", default="champion", help="version number or alias")
    parser.add_argument("--runs", type=int, default=1000, help="timed calls per model and input")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latency.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.random:
            student, models, spec = random_student(Path(tmp))
            source_name = "random weights"
        else:
            student, models, spec = registered_student(args.lake, args.version, Path(tmp))
            source_name = f"{args.lake} {args.version}"
        table = latency_table(student, models, spec, args.runs)  # type: ignore[arg-type]
        sizes = {k: p.stat().st_size for k, p in models.items()}
    params = sum(p.numel() for p in student.parameters())  # type: ignore[attr-defined]
    rows = {}
    print(f"latency, one thread, batch 1, {args.runs} calls ({source_name}; "
          f"{params} parameters)")  # fmt: skip
    print(f"{'model':<6} {'leads':>5} {'p50 ms':>8} {'p95 ms':>8} {'vs eager':>9} {'KB':>7}")
    for n in (1, 6):
        eager = table[f"torch_{n}lead"]
        for name in ("torch", "fp32", "int8"):
            t = table[f"{name}_{n}lead"]
            speedup = eager["p50_ms"] / t["p50_ms"]
            kb = sizes[name] / 1024 if name in sizes else params * 4 / 1024
            rows[f"{name}_{n}lead"] = {**t, "speedup_vs_eager_p50": speedup, "kb": kb}
            print(f"{name:<6} {n:>5} {t['p50_ms']:>8.3f} {t['p95_ms']:>8.3f} {speedup:>8.2f}x "
                  f"{kb:>7.1f}")  # fmt: skip
    shipped_p95 = max(rows[f"{p}_{n}lead"]["p95_ms"] for p in ("fp32", "int8") for n in (1, 6))
    goal = {"p95_ms_max_over_onnx": shipped_p95, "p95_below_1ms": shipped_p95 < 1.0,
            "int8_kb": sizes["int8"] / 1024, "fp32_kb": sizes["fp32"] / 1024,
            "size_below_300kb": min(sizes.values()) / 1024 < 300}  # fmt: skip
    print(f"goal: p95 < 1 ms ({shipped_p95:.3f} ms worst ONNX) and < 300 KB "
          f"(fp32 {goal['fp32_kb']:.0f} KB, int8 {goal['int8_kb']:.0f} KB)")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "source": source_name, "parameters": params, "runs": args.runs, "results": rows,
        "goal": goal, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                  "numpy": np.__version__},
    }, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
