"""Device bundles: a folder a device can verify and run with numpy and onnxruntime alone.

``write_bundle`` takes one registered device-model version (by alias or number) and writes:

* ``student.fp32.onnx`` and ``student.int8.onnx`` (which one ships is in the manifest);
* ``preprocessing.json``: rate, leads, units, clipping, resampler, window, temperature and
  the urgent thresholds per lead count (:class:`serving.spec.DeviceSpec`);
* ``score_recording.py``: the reference device script (:mod:`serving.device_script`);
* ``manifest.json``: the SHA-256 of every other file, the model version and its lineage
  (export run, student run, teacher, encoder run, the Delta table versions training read).

``verify_bundle`` reports every changed, missing or extra file; with the registry at hand it
also checks the model files against the hashes the export recorded on the version, so a bundle
whose manifest was rewritten to match a swapped model is caught too.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cardiolake.tracking import DEVICE_MODEL
from serving import device_script
from serving.artifacts import FP32_FILE, HASH_TAG, INT8_FILE, SPEC_FILE
from serving.registry import PromotionError, figures, resolve
from serving.spec import DeviceSpec

MANIFEST = "manifest.json"
SCRIPT = "score_recording.py"
BUNDLE_FORMAT = 1


@dataclass(frozen=True)
class Problem:
    """One verification finding: the file and what is wrong with it."""

    path: str
    kind: str  # changed | missing | extra | manifest | registry

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}"


def lineage_of(version: str) -> dict[str, Any]:
    """The lineage the export recorded on a version (runs, teacher, Delta versions)."""
    import mlflow

    mv = mlflow.MlflowClient().get_model_version(DEVICE_MODEL, version)
    tags = mv.tags or {}
    return {
        "export_run": mv.run_id,
        "student_run": tags.get("cardiolake.student_run"),
        "student_model": tags.get("cardiolake.student_version"),
        "teacher": tags.get("cardiolake.teacher"),
        "encoder_run": tags.get("cardiolake.encoder_run"),
        "delta_versions": {k.removeprefix("delta."): int(v) for k, v in tags.items()
                           if k.startswith("delta.") and v.lstrip("-").isdigit()},
    }  # fmt: skip


def write_bundle(ref: str, out: Path, *, overwrite: bool = False) -> Path:
    """Write the bundle of device-model version ``ref`` (alias or number) into ``out``.

    Raises:
        PromotionError: unknown alias or version.
        FileExistsError: ``out`` holds files and ``overwrite`` is false.
    """
    import mlflow

    version = resolve(ref)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty (pass --overwrite to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    mv = mlflow.MlflowClient().get_model_version(DEVICE_MODEL, version)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="device",
                                                         dst_path=tmp))  # fmt: skip
        for name in (FP32_FILE, INT8_FILE, SPEC_FILE):
            if not (local / name).is_file():
                raise PromotionError(f"{DEVICE_MODEL} v{version}: export run {mv.run_id} has no "
                                     f"device/{name}")  # fmt: skip
            shutil.copyfile(local / name, out / name)
    shutil.copyfile(Path(device_script.__file__), out / SCRIPT)
    spec = DeviceSpec.read(out / SPEC_FILE)
    figs = figures(version)
    shipped = str(figs.get("shipped", "fp32"))
    files = {p.name: device_script.sha256(p) for p in sorted(out.iterdir()) if p.is_file()}
    manifest = {
        "format": BUNDLE_FORMAT,
        "model": DEVICE_MODEL,
        "version": version,
        "alias": None if ref.isdigit() else ref,
        "shipped": shipped,
        "models": {"fp32": FP32_FILE, "int8": INT8_FILE},
        "preprocessing": SPEC_FILE,
        "script": SCRIPT,
        "thresholds_by_lead_count": spec.thresholds_by_lead_count,
        "figures": figs,
        "lineage": lineage_of(version),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "files": files,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out


def verify_bundle(folder: Path, *, registry: bool = False) -> list[Problem]:
    """Every changed, missing or extra file of a bundle (empty: intact).

    With ``registry``, the model files are also checked against the hashes the export
    recorded on the registered version (needs the tracking store the bundle came from).
    """
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        listed: dict[str, str] = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [Problem(f"{manifest_path} ({exc.__class__.__name__}: {exc})", "manifest")]
    problems = []
    for name, digest in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            problems.append(Problem(name, "missing"))
        elif device_script.sha256(path) != digest:
            problems.append(Problem(name, "changed"))
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    for name in sorted(present - set(listed) - {MANIFEST}):
        problems.append(Problem(name, "extra"))
    if registry:
        problems += registry_problems(folder, manifest)
    return problems


def registry_problems(folder: Path, manifest: dict[str, Any]) -> list[Problem]:
    """Model files whose hash differs from what the export recorded on the version."""
    import mlflow

    try:
        tags = mlflow.MlflowClient().get_model_version(DEVICE_MODEL, str(manifest["version"])).tags
    except Exception as exc:  # noqa: BLE001 - any registry failure is a verification failure
        return [Problem(f"{DEVICE_MODEL} v{manifest.get('version')} ({exc})", "registry")]
    out = []
    for name in (FP32_FILE, INT8_FILE):
        recorded = tags.get(f"{HASH_TAG}{name}")
        path = folder / name
        if recorded is None or not path.is_file() or device_script.sha256(path) != recorded:
            out.append(Problem(f"{name} (not the registered v{manifest['version']})", "registry"))
    return out
