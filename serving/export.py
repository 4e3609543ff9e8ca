"""Export the student for devices: ONNX fp32 + static int8 (QDQ), checked, registered.

Runs in the training environment (``python -m serving export``; ``cardiolake model export``
launches it), because it needs the PyTorch student and the lake's training rows:

1. the registered PyTorch student of a training run becomes a graph with two inputs,
   ``signal`` (B, 6, T) limb leads at the device rate and ``lead_mask`` (B, 6), and one output,
   ``logits`` (B, targets); dynamic batch, debug metadata stripped (so the same weights give
   the same bytes);
2. onnxruntime **static** quantization in QDQ format, calibrated on training-split inputs with
   the device lead sets (dynamic quantization of a small CNN is slower than fp32 here);
3. checks on the test split: fp32 ONNX vs PyTorch parity (max |logit diff|), fp32 vs int8 AUC
   per lead set, validation AUC (the promotion gate's quality figure), single-thread batch-1
   latency and file sizes;
4. an MLflow run (experiment ``cardiolake-export``, parent = the student run) with the files,
   the preprocessing spec and the report, registered as a new ``cardiolake-student`` version
   (onnx flavour, signature, input example) with alias ``challenger`` and every figure as a
   version tag for ``cardiolake model promote``.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cardiolake.domain import EVALUATION_LEAD_SETS
from cardiolake.tracking import DEVICE_MODEL, STUDENT_MODEL
from serving.artifacts import (
    FIGURE_TAG,
    FP32_FILE,
    HASH_TAG,
    INT8_FILE,
    REFERENCE_FILE,
    REPORT_FILE,
    SPEC_FILE,
)
from serving.device_script import sha256
from serving.latency import onnx_latency, ort_session, time_calls
from serving.settings import ExportSettings
from serving.spec import DeviceSpec, spec_from_card
from training.evaluate import load_registered
from training.metrics import auc
from training.runner import Context
from training.settings import StudentSettings
from training.student import Student, StudentData, load_student_data, make_batch

logger = logging.getLogger(__name__)


class DeviceGraph(nn.Module):
    """The exported graph: (signal, lead_mask) -> logits of every target."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward(self, signal: torch.Tensor, lead_mask: torch.Tensor) -> torch.Tensor:
        return self.student(signal, lead_mask)[0]


def load_student(run_id: str) -> tuple[Student, dict[str, Any], str]:
    """The PyTorch student a training run registered, its card and its registered version."""
    loaded = load_registered(STUDENT_MODEL, run_id)
    return loaded.model.student.eval(), loaded.card, loaded.version


def strip_debug_info(model: Any) -> Any:
    """Drop doc strings and per-node metadata (stack traces, paths): smaller, reproducible."""
    model.doc_string = ""
    del model.metadata_props[:]
    for node in model.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        value.doc_string = ""
        del value.metadata_props[:]
    return model


def export_fp32(student: Student, spec: DeviceSpec, path: Path, opset: int) -> Path:
    """Export ``student`` to a single self-contained ONNX file with a dynamic batch."""
    import onnx

    graph = DeviceGraph(student).eval()
    example = (torch.zeros(2, len(spec.leads), spec.window), torch.ones(2, len(spec.leads)))
    batch = torch.export.Dim("batch", min=1, max=4096)
    names = spec.input_names
    with tempfile.TemporaryDirectory() as tmp:
        program = torch.onnx.export(
            graph, example, input_names=list(names), output_names=[spec.output_name],
            dynamic_shapes={names[0]: {0: batch}, names[1]: {0: batch}}, dynamo=True,
            opset_version=opset, verbose=False,
        )  # fmt: skip
        assert program is not None
        raw = Path(tmp) / "model.onnx"
        program.save(str(raw), external_data=False)
        model = onnx.load(str(raw))
    onnx.checker.check_model(strip_debug_info(model))
    onnx.save(model, str(path))
    return path


class _Feeds:
    """onnxruntime calibration reader over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_int8(fp32: Path, out: Path, calibration: list[dict[str, np.ndarray]],
                  settings: ExportSettings) -> Path:  # fmt: skip
    """Static int8 quantization (QDQ, per-channel weights) calibrated on ``calibration``."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}  # fmt: skip
    if settings.calibration_method not in methods:
        raise ValueError(f"calibration_method must be one of {sorted(methods)}")

    class Reader(_Feeds, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre))
        quantize_static(
            str(pre), str(out), Reader(calibration), quant_format=QuantFormat.QDQ,
            per_channel=settings.per_channel, activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8, calibrate_method=methods[settings.calibration_method],
        )  # fmt: skip
    onnx.save(strip_debug_info(onnx.load(str(out))), str(out))
    return out


@dataclass
class Inputs:
    """Model inputs of a set of rows under one lead set, with their labels."""

    signal: np.ndarray
    lead_mask: np.ndarray
    labels: np.ndarray

    def feeds(self, spec: DeviceSpec, rows: slice | np.ndarray = slice(None)
              ) -> dict[str, np.ndarray]:  # fmt: skip
        """The ONNX feed dict of ``rows``."""
        return {spec.input_names[0]: self.signal[rows], spec.input_names[1]: self.lead_mask[rows]}


def inputs_of(data: StudentData, idx: np.ndarray, settings: StudentSettings,
              leads: tuple[str, ...] | None) -> Inputs:  # fmt: skip
    """The first window of rows ``idx`` under a device lead set (None: the row's own leads)."""
    rng = np.random.default_rng(0)
    batch = make_batch(data, idx, settings, rng, train=False, leads=leads)
    return Inputs(batch["ecg"].numpy(), batch["lead_mask"].numpy(), data.labels[idx, 0])


def calibration_feeds(data: StudentData, settings: StudentSettings, spec: DeviceSpec,
                      n_rows: int, seed: int) -> list[dict[str, np.ndarray]]:  # fmt: skip
    """Training-split inputs, each lead set in turn (what devices will send), 32 per feed."""
    train = np.flatnonzero(data.split == "train")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(train, size=min(n_rows, len(train)), replace=False)
    sets = list(EVALUATION_LEAD_SETS.values())
    feeds = []
    for k, start in enumerate(range(0, len(chosen), 32)):
        part = inputs_of(data, chosen[start : start + 32], settings, sets[k % len(sets)])
        feeds.append(part.feeds(spec))
    return feeds


def run_session(session: Any, feeds: dict[str, np.ndarray], batch: int = 256) -> np.ndarray:
    """Logits of an onnxruntime session over feeds of any size."""
    names = list(feeds)
    n = len(feeds[names[0]])
    out = [session.run(None, {k: v[s : s + batch] for k, v in feeds.items()})[0]
           for s in range(0, n, batch)]  # fmt: skip
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def check_export(
    student: Student, fp32: Path, int8: Path, data: StudentData, settings: StudentSettings,
    spec: DeviceSpec, runs: int,
) -> dict[str, Any]:  # fmt: skip
    """Parity, AUC per lead set (fp32, int8), validation AUC, latency and sizes."""
    sessions = {"fp32": ort_session(fp32, threads=1), "int8": ort_session(int8, threads=1)}
    test = np.flatnonzero(data.split == "test")
    derived = test[~data.mobile[test]]
    mobile = test[data.mobile[test]]
    report: dict[str, Any] = {"test_rows": int(len(test)), "lead_sets": {}}
    parity = 0.0
    for name, leads in [*((str(k), v) for k, v in EVALUATION_LEAD_SETS.items()),
                        ("mobile", None)]:  # fmt: skip
        rows = derived if leads is not None else mobile
        if not len(rows):
            continue
        x = inputs_of(data, rows, settings, leads)
        feeds = x.feeds(spec)
        with torch.no_grad():
            torch_logits = DeviceGraph(student)(torch.from_numpy(x.signal),
                                                torch.from_numpy(x.lead_mask)).numpy()  # fmt: skip
        got = {p: run_session(s, feeds) for p, s in sessions.items()}
        diff = float(np.abs(got["fp32"] - torch_logits).max())
        parity = max(parity, diff)
        labelled = np.isfinite(x.labels)
        entry = {
            "rows": int(len(rows)),
            "labelled": int(labelled.sum()),
            "parity_max_abs": diff,
            "int8_max_abs_vs_fp32": float(np.abs(got["int8"] - got["fp32"]).max()),
        }
        for p in ("fp32", "int8"):
            entry[f"auc_{p}"] = auc(x.labels[labelled], got[p][labelled, 0])
        entry["int8_auc_drop"] = entry["auc_fp32"] - entry["auc_int8"]
        report["lead_sets"][name] = entry
    drops = [e["int8_auc_drop"] for e in report["lead_sets"].values()
             if np.isfinite(e["int8_auc_drop"])]  # fmt: skip
    report["parity_max_abs"] = parity
    report["int8_auc_drop"] = float(max(drops)) if drops else float("nan")
    val = np.flatnonzero((data.split == "validation") & ~data.mobile)
    val_aucs = []
    for k in (1, 6):  # what the student's early stopping watched
        x = inputs_of(data, val, settings, EVALUATION_LEAD_SETS[k])
        ok = np.isfinite(x.labels)
        val_aucs.append(auc(x.labels[ok], run_session(sessions["fp32"], x.feeds(spec))[ok, 0]))
    report["validation_auc"] = float(np.nanmean(val_aucs)) if np.isfinite(val_aucs).any() \
        else float("nan")  # fmt: skip
    report["latency"] = latency_table(student, {"fp32": fp32, "int8": int8}, spec, runs)
    report["size_bytes"] = {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size}
    return report


def device_example(spec: DeviceSpec, n_leads: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch-1 feed with ``n_leads`` of the device lead sets (ECG-like scale, in mV)."""
    rng = np.random.default_rng(seed)
    leads = EVALUATION_LEAD_SETS[n_leads]
    mask = np.array([[1.0 if lead in leads else 0.0 for lead in spec.leads]], np.float32)
    signal = (0.3 * rng.standard_normal((1, len(spec.leads), spec.window))).astype(np.float32)
    return {spec.input_names[0]: signal * mask[:, :, None], spec.input_names[1]: mask}


def latency_table(student: Student | None, models: dict[str, Path], spec: DeviceSpec,
                  runs: int) -> dict[str, dict[str, float]]:  # fmt: skip
    """p50/p95 per model (and PyTorch eager, when given) for 1- and 6-lead inputs."""
    out: dict[str, dict[str, float]] = {}
    for n_leads in (1, 6):
        feeds = device_example(spec, n_leads)
        for precision, path in models.items():
            out[f"{precision}_{n_leads}lead"] = onnx_latency(path, feeds, runs).as_dict()
        if student is not None:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                graph = DeviceGraph(student).eval()
                args = [torch.from_numpy(v) for v in feeds.values()]
                with torch.inference_mode():
                    call = functools.partial(graph, *args)
                    out[f"torch_{n_leads}lead"] = time_calls(call, runs).as_dict()
            finally:
                torch.set_num_threads(threads)
    return out


def training_reference(data: StudentData, spec: DeviceSpec, fp32: Path) -> dict[str, Any]:
    """The drift reference of a model: its training lake's mobile recordings, device path.

    Input statistics, lead sets and quality flags of every mobile recording; the model's
    calibrated scores on the held-out (validation and test) ones. Each recording goes through
    the device preprocessing (:func:`serving.device_script.preprocess`), as in scoring.
    """
    from serving.device_script import Recording, decide, preprocess
    from serving.monitoring import input_stats, lead_set_name, quality_flags, reference

    rows = np.flatnonzero(data.mobile)
    if not len(rows):  # a lake without mobile recordings: the derived limb leads stand in
        rows = np.flatnonzero(~data.mobile)
    session = ort_session(fp32)
    spec_dict = spec.as_dict()
    stats, scores, lead_sets, flags = [], [], [], []
    for i in rows:
        present = [lead for lead, m in zip(spec.leads, data.present[i], strict=True) if m > 0]
        if not present:
            continue
        n = max(int(data.length[i]), 1)
        signal = data.ecg[i, [spec.leads.index(lead) for lead in present], :n]
        rec = Recording(str(i), float(spec.rate_hz), tuple(present), signal)
        windows, mask = preprocess(rec, spec_dict)
        stats.append(input_stats(windows, mask, spec.clip_mv))
        flags.append(quality_flags(windows, mask, spec.rate_hz, spec.clip_mv,
                                   n / spec.rate_hz, 0.0))  # fmt: skip
        lead_sets.append(lead_set_name(present))
        if data.split[i] != "train":
            masks = np.repeat(mask[None], len(windows), axis=0)
            logits = run_session(session, {spec.input_names[0]: windows,
                                           spec.input_names[1]: masks})  # fmt: skip
            mean = float(logits[:, 0].astype(np.float64).mean())
            scores.append(decide(mean, int(mask.sum()), spec_dict)["probability"])
    return reference(stats, scores, lead_sets, flags)


def shipped_precision(report: dict[str, Any], settings: ExportSettings) -> str:
    """int8 when it keeps the AUC of fp32 (within the tolerance), else fp32."""
    drop = report["int8_auc_drop"]
    return "int8" if np.isfinite(drop) and drop <= settings.max_int8_auc_drop else "fp32"


def version_figures(report: dict[str, Any], shipped: str) -> dict[str, str]:
    """The figures the promotion gates read, as model-version tags."""
    worst_p95 = max(v["p95_ms"] for k, v in report["latency"].items() if k.startswith(shipped))
    return {f"{FIGURE_TAG}{k}": f"{v:.6g}" for k, v in {
        "validation_auc": report["validation_auc"],
        "parity_max_abs": report["parity_max_abs"],
        "int8_auc_drop": report["int8_auc_drop"],
        "p95_ms": worst_p95,
        "size_kb": report["size_bytes"][shipped] / 1024,
    }.items()} | {f"{FIGURE_TAG}shipped": shipped}  # fmt: skip


def lineage_tags(student_tags: dict[str, str], student_run: str, torch_version: str
                 ) -> dict[str, str]:  # fmt: skip
    """What the export run and the device version carry back to training.

    The student run, its registered PyTorch version, the teacher, the encoder run it started
    from, and every Delta table version the student read.
    """
    out = {"cardiolake.student_run": student_run,
           "cardiolake.student_version": f"{STUDENT_MODEL}/{torch_version}"}  # fmt: skip
    if "cardiolake.teacher" in student_tags:
        out["cardiolake.teacher"] = student_tags["cardiolake.teacher"]
    if "cardiolake.parent_run" in student_tags:
        out["cardiolake.encoder_run"] = student_tags["cardiolake.parent_run"]
    out |= {k: v for k, v in student_tags.items() if k.startswith("delta.")}
    return out


def newest_student_run() -> str | None:
    """The newest finished distilled student trained on every label."""
    from training.tracking import latest_finished_run

    return latest_finished_run("student", {"cardiolake.student_kind": "distilled",
                                           "cardiolake.label_fraction": "1.0"})  # fmt: skip


def export_student(settings: ExportSettings, ctx: Context) -> dict[str, Any]:
    """Export, quantize, check, log and register a student (the ``export`` step).

    Returns:
        The export run id, the registered version, the shipped precision and the report.

    Raises:
        LookupError: no finished student run to export.
    """
    import mlflow
    import onnx
    from mlflow.models import infer_signature

    from training.tracking import connect, experiment_id

    connect(ctx.lake_root, ctx.tracking)
    run_id = settings.student_run_id or newest_student_run()
    if run_id is None:
        raise LookupError("no finished distilled student run: run `cardiolake train student`")
    student, card, torch_version = load_student(run_id)
    spec = spec_from_card(card)
    # the recordings and every label (not the teacher's targets: nothing here distils)
    s_settings = StudentSettings(input_fs=spec.rate_hz, seconds=spec.window_s, distill=False)
    data, _teacher = load_student_data(ctx.lake_root, s_settings, None)
    client = mlflow.MlflowClient()
    parent = client.get_run(run_id)
    lineage = lineage_tags(parent.data.tags, run_id, torch_version)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "device"
        out.mkdir()
        fp32 = export_fp32(student, spec, out / FP32_FILE, settings.opset)
        calibration = calibration_feeds(data, s_settings, spec, settings.calibration_rows,
                                        settings.seed)  # fmt: skip
        int8 = quantize_int8(fp32, out / INT8_FILE, calibration, settings)
        report = check_export(student, fp32, int8, data, s_settings, spec, settings.latency_runs)
        shipped = shipped_precision(report, settings)
        report |= {"shipped": shipped, "student_run": run_id, "student_version": torch_version,
                   "opset": settings.opset}  # fmt: skip
        spec.write(out / SPEC_FILE)
        ref = training_reference(data, spec, fp32)
        (out / REFERENCE_FILE).write_text(json.dumps(ref) + "\n")
        report["reference_rows"] = ref["rows"]
        (out / REPORT_FILE).write_text(json.dumps(report, indent=2, default=float) + "\n")
        mlflow.set_experiment(experiment_id=experiment_id("export", ctx.lake_root))
        with mlflow.start_run(run_name=f"export-{STUDENT_MODEL}-{torch_version}") as run:
            mlflow.set_tags({"cardiolake.stage": "export", "cardiolake.parent_run": run_id,
                             **lineage})  # fmt: skip
            mlflow.log_params(
                {
                    "opset": settings.opset,
                    "calibration_rows": settings.calibration_rows,
                    "calibration_method": settings.calibration_method,
                    "per_channel": settings.per_channel,
                }
            )
            mlflow.log_metrics(flat_metrics(report))
            mlflow.log_artifacts(str(out), "device")
            version = None
            if settings.register:
                example = device_example(spec, 6)
                logits = run_session(ort_session(fp32), example)
                info = mlflow.onnx.log_model(
                    onnx.load(str(fp32)), name="student_onnx",
                    registered_model_name=DEVICE_MODEL,
                    signature=infer_signature(example, logits), input_example=example,
                    save_as_external_data=False,
                    extra_files=[str(out / SPEC_FILE), str(out / INT8_FILE)],
                    metadata={"preprocessing": spec.as_dict()},
                )  # fmt: skip
                version = str(info.registered_model_version)
                tags = {
                    **version_figures(report, shipped),
                    **lineage,
                    **{f"{HASH_TAG}{p.name}": sha256(p) for p in (fp32, int8)},
                }
                for key, value in tags.items():
                    client.set_model_version_tag(DEVICE_MODEL, version, key, value)
                client.set_registered_model_alias(DEVICE_MODEL, "challenger", version)
    logger.info("exported %s/%s -> %s v%s (shipped %s)", STUDENT_MODEL, torch_version,
                DEVICE_MODEL, version, shipped)  # fmt: skip
    return {"run_id": run.info.run_id, "model": DEVICE_MODEL, "version": version,
            "shipped": shipped, "student_run": run_id, "report": report}  # fmt: skip


def flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The report's numbers as MLflow metrics (finite ones)."""
    out: dict[str, float] = {
        "parity_max_abs": report["parity_max_abs"], "int8_auc_drop": report["int8_auc_drop"],
        "validation_auc": report["validation_auc"],
        **{f"size_bytes_{k}": float(v) for k, v in report["size_bytes"].items()},
    }  # fmt: skip
    for name, entry in report["lead_sets"].items():
        for key in ("auc_fp32", "auc_int8", "parity_max_abs"):
            out[f"{name}_{key}"] = entry[key]
    for name, lat in report["latency"].items():
        out[f"{name}_p50_ms"], out[f"{name}_p95_ms"] = lat["p50_ms"], lat["p95_ms"]
    return {k: float(v) for k, v in out.items() if np.isfinite(v)}
