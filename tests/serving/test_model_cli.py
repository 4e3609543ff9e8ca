"""`cardiolake model`: export, gated promotion, rollback, bundles and the device script.

Runs on a copy of the session's trained small lake (so the registry versions and runs made
here never reach the training tests).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import wfdb

from cardiolake.cli.train import _REPO
from cardiolake.tracking import CHALLENGER, CHAMPION, DEVICE_MODEL, tracking_uri
from tests.fixtures.trained import TRAIN_PYTHON
from tests.serving.helpers import PROMOTE, alias_version, cli, mlflow_client

pytestmark = [pytest.mark.spark, pytest.mark.integration]


def test_export_is_checked_registered_and_reproducible(served: dict) -> None:
    first, again = served["first"], served["again"]
    report = first["report"]
    assert report["parity_max_abs"] <= 1e-4
    assert set(report["lead_sets"]) >= {"1", "2", "3", "6"}
    assert report["size_bytes"]["int8"] < report["size_bytes"]["fp32"] < 300 * 1024
    client = mlflow_client(served["lake"])
    v1 = client.get_model_version(DEVICE_MODEL, first["version"])
    v2 = client.get_model_version(DEVICE_MODEL, again["version"])
    assert v1.tags["cardiolake.student_run"] == served["first"]["student_run"]
    assert v1.tags["cardiolake.teacher"].startswith("cardiolake-teacher/")
    assert any(k.startswith("delta.") for k in v1.tags)
    # the same weights export to the same bytes
    for name in ("student.fp32.onnx", "student.int8.onnx"):
        assert v1.tags[f"cardiolake.sha256.{name}"] == v2.tags[f"cardiolake.sha256.{name}"]
    # the newest export is the challenger; the pyfunc flavour loads and scores
    assert alias_version(client, CHALLENGER) == served["weak"]["version"]
    mlflow.set_tracking_uri(tracking_uri(served["lake"]))
    mlflow.set_registry_uri(tracking_uri(served["lake"]))
    model = mlflow.pyfunc.load_model(f"models:/{DEVICE_MODEL}/{first['version']}")
    x = np.zeros((2, 6, 3000), np.float32)
    mask = np.ones((2, 6), np.float32)
    assert np.asarray(model.predict({"signal": x, "lead_mask": mask})["logits"]).shape[0] == 2


def test_gates_refuse_a_worse_challenger_and_rollback_restores(served: dict) -> None:
    root = str(served["lake"])
    client = mlflow_client(served["lake"])
    # which export is worse is measured, not assumed: on a small validation split a barely
    # trained student can score as well as the trained one
    ranked = sorted(("first", "weak"), key=lambda k: served[k]["report"]["validation_auc"])
    worse, better = (served[k]["version"] for k in ranked)
    gap = served[ranked[1]]["report"]["validation_auc"] - served[ranked[0]]["report"][
        "validation_auc"]  # fmt: skip
    assert gap > 0, "two different students scored the same validation AUC"
    strict = [*PROMOTE, "--set", "auc_tolerance=0"]
    code, output = cli("model", "promote", "--lake", root, "--version", better, *strict)
    assert code == 0, output
    assert alias_version(client, CHAMPION) == better
    code, output = cli("model", "promote", "--lake", root, "--version", worse, *strict)
    assert code == 1 and "refused" in output
    assert alias_version(client, CHAMPION) == better
    tags = client.get_model_version(DEVICE_MODEL, worse).tags
    assert tags["cardiolake.gate.validation_auc"].startswith("FAIL")
    assert tags["cardiolake.gate.parity"].startswith("pass")
    assert tags["cardiolake.promotion"].startswith("refused (enforced)")
    code, output = cli("model", "promote", "--lake", root, "--version", worse, "--mode",
                       "dry-run", *strict)  # fmt: skip
    assert code == 0 and "dry run" in output
    assert alias_version(client, CHAMPION) == better
    # gates disabled: the alias moves anyway, remembering what it replaced; rollback restores
    code, output = cli("model", "promote", "--lake", root, "--version", worse, "--mode",
                       "disabled")  # fmt: skip
    assert code == 0, output
    assert alias_version(client, CHAMPION) == worse
    code, output = cli("model", "rollback", "--lake", root)
    assert code == 0, output
    assert alias_version(client, CHAMPION) == better
    code, output = cli("model", "rollback", "--lake", root)
    assert code == 2 and "replaced no earlier version" in " ".join(output.split())
    if ranked[1] == "first":  # the same weights exported again pass against their twin
        code, output = cli("model", "promote", "--lake", root, "--version",
                           served["again"]["version"], *PROMOTE)  # fmt: skip
        assert code == 0, output
    code, output = cli("model", "list", "--lake", root, "--json")
    rows = {r["version"]: r for r in json.loads(output)}
    assert CHAMPION in rows[alias_version(client, CHAMPION)]["aliases"]
    assert rows[worse]["gates"]["validation_auc"].startswith("skipped")  # the last decision
    assert rows[worse]["decision"].startswith("rolled back to v")


def test_bundle_verifies_and_detects_every_kind_of_tampering(served: dict, bundle: Path,
                                                             tmp_path: Path) -> None:  # fmt: skip
    root = str(served["lake"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert set(manifest["files"]) == {"student.fp32.onnx", "student.int8.onnx",
                                      "preprocessing.json", "score_recording.py"}  # fmt: skip
    assert manifest["lineage"]["student_run"] == served["first"]["student_run"]
    assert manifest["lineage"]["delta_versions"]
    assert cli("model", "verify-bundle", str(bundle), "--lake", root)[0] == 0

    def tampered(name: str, change) -> tuple[int, str]:
        copy = tmp_path / name
        shutil.copytree(bundle, copy)
        change(copy)
        return cli("model", "verify-bundle", str(copy), "--lake", root)

    def flip_byte(folder: Path) -> None:
        path = folder / "student.int8.onnx"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    def swap_model_and_manifest(folder: Path) -> None:  # a consistent forgery
        shutil.copyfile(folder / "student.int8.onnx", folder / "student.fp32.onnx")
        m = json.loads((folder / "manifest.json").read_text())
        m["files"]["student.fp32.onnx"] = m["files"]["student.int8.onnx"]
        (folder / "manifest.json").write_text(json.dumps(m))

    cases = {
        "changed": (flip_byte, "changed: student.int8.onnx"),
        "missing": (lambda f: (f / "preprocessing.json").unlink(), "missing: preprocessing.json"),
        "extra": (lambda f: (f / "notes.txt").write_text("hi"), "extra: notes.txt"),
        "forged": (swap_model_and_manifest, "registry: student.fp32.onnx"),
        "manifest": (lambda f: (f / "manifest.json").write_text("{"), "manifest"),
    }
    for name, (change, expected) in cases.items():
        code, output = tampered(name, change)
        assert code == 1, (name, output)
        assert expected in " ".join(output.split()), (name, output)
    # the device refuses to run a model that does not match its manifest
    broken = tmp_path / "changed"
    record = next((tmp_path.parent).glob("*"))  # any path: the model check comes first
    proc = subprocess.run([sys.executable, str(broken / "score_recording.py"), str(record),
                           "--precision", "int8"], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "does not match the bundle manifest" in proc.stderr


def _mobile_records(cohort: Path, tmp_path: Path) -> list[Path]:
    """A 6-lead and a 1-lead recording of the cohort, and the 6-lead one re-written at 500 Hz."""
    by_leads: dict[int, Path] = {}
    for hea in sorted((cohort / "mobile").glob("*.hea")):
        n = int(hea.read_text().split()[1])
        by_leads.setdefault(n, hea.with_suffix(""))
    assert {1, 6} <= set(by_leads)
    rec = wfdb.rdrecord(str(by_leads[6]))
    from scipy.signal import resample_poly

    fast = resample_poly(rec.p_signal, 5, 3, axis=0)
    wfdb.wrsamp("fast500", fs=500, units=rec.units, sig_name=rec.sig_name, p_signal=fast,
                fmt=["16"] * rec.n_sig, adc_gain=[1000.0] * rec.n_sig, baseline=[0] * rec.n_sig,
                write_dir=str(tmp_path))  # fmt: skip
    return [by_leads[6], by_leads[1], tmp_path / "fast500"]


def test_device_script_matches_the_pytorch_student(
    served: dict, bundle: Path, learning_cohort: Path, tmp_path: Path
) -> None:
    records = _mobile_records(learning_cohort, tmp_path)
    device = {}
    for record in records:
        script = str(bundle / "score_recording.py")
        proc = subprocess.run([sys.executable, script, str(record), "--precision", "fp32",
                               "--json"], capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        device[str(record)] = json.loads(proc.stdout)
    plain = subprocess.run([sys.executable, str(bundle / "score_recording.py"), str(records[1])],
                           capture_output=True, text=True)  # fmt: skip
    assert plain.returncode == 0 and "decision:" in plain.stdout
    ref = subprocess.run(
        [str(TRAIN_PYTHON), "tests/serving/torch_score.py", str(served["lake"]),
         served["first"]["student_run"], str(bundle / "preprocessing.json"), *map(str, records)],
        cwd=_REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]
    torch_scores = json.loads(ref.stdout.strip().splitlines()[-1])
    for record in map(str, records):
        assert abs(device[record]["probability"] - torch_scores[record]["probability"]) <= 1e-4
        assert device[record]["decision"] == torch_scores[record]["decision"]
    assert device[str(records[1])]["n_leads"] == 1 and device[str(records[0])]["n_leads"] == 6
    assert device[str(records[2])]["source_fs"] == 500
