"""Settings of the serving stage: export, promotion gates and bundles (YAML section per step).

Like the training stages' settings they are frozen dataclasses loaded with
:func:`training.settings.load_settings` from an optional YAML file (``export:``,
``promote:`` sections) plus ``--set key=value`` overrides; nothing here is a literal in code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class ExportSettings:
    """``cardiolake model export``: the student to ONNX (fp32 + static int8), checked.

    Attributes:
        student_run_id: the student training run to export (None: the newest finished
            distilled student).
        opset: ONNX opset of the export.
        calibration_rows: training-split inputs the int8 quantizer calibrates on (each with a
            random device lead set, as in training).
        calibration_method: onnxruntime calibration: ``minmax``, ``entropy`` or ``percentile``.
        per_channel: per-output-channel weight scales (what keeps a small CNN's AUC).
        latency_runs: timed single-thread batch-1 runs per model and lead count.
        max_int8_auc_drop: the shipped model is the int8 one when its test AUC is within this
            of fp32's on every lead set, else fp32.
        seed: calibration sampling.
        register: register the export as a new ``cardiolake-student`` version (``challenger``).
    """

    student_run_id: str | None = None
    opset: int = 21
    calibration_rows: int = 256
    calibration_method: str = "minmax"
    per_channel: bool = True
    latency_runs: int = 300
    max_int8_auc_drop: float = 0.005
    seed: int = 0
    register: bool = True


class GateMode(StrEnum):
    """How ``cardiolake model promote`` treats its gates."""

    DISABLED = "disabled"  # move champion without checking (recorded as skipped)
    DRY_RUN = "dry-run"  # check and record, never move champion
    ENFORCED = "enforced"  # move champion only when every gate passes


@dataclass(frozen=True)
class PromotionGates:
    """What a challenger must show before it becomes ``champion``.

    Attributes:
        auc_tolerance: the challenger's validation AUC may be at most this below the champion's.
        max_parity_abs: largest |fp32 ONNX - PyTorch| logit on the test split.
        max_p95_ms: p95 single-thread batch-1 latency of the shipped model (worst lead count).
        max_size_kb: size of the shipped model file.
        max_int8_auc_drop: fp32 - int8 test AUC allowed (when the int8 model is shipped).
        mode: :class:`GateMode`.
    """

    auc_tolerance: float = 0.005
    max_parity_abs: float = 1e-4
    max_p95_ms: float = 1.0
    max_size_kb: float = 300.0
    max_int8_auc_drop: float = 0.005
    mode: GateMode = GateMode.ENFORCED
