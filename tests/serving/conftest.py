"""Fixtures of the serving tests: exports of the trained small lake, a champion bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cardiolake.tracking import CHAMPION
from tests.serving.helpers import EXPORT, cli


@pytest.fixture(scope="session")
def served(stage3: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two exports of the trained student and one of a barely trained one."""
    root = tmp_path_factory.mktemp("serving") / "lake"
    shutil.copytree(stage3["lake"], root)
    out: dict = {"lake": root}
    for name in ("first", "again"):
        code, output = cli("model", "export", "--lake", str(root), *EXPORT)
        assert code == 0, output
        out[name] = json.loads((root / "_mlflow" / "last_export.json").read_text())
    # a worse model: random init, one epoch on a tenth of the labels
    code, output = cli("train", "student", "--lake", str(root), "--fresh", "--set",
                        "distill=false", "--set", "init=random", "--set", "label_fraction=0.1",
                        "--set", "run.epochs=1")  # fmt: skip
    assert code == 0, output
    weak_run = json.loads((root / "_mlflow" / "last_student.json").read_text())["run_id"]
    code, output = cli("model", "export", "--lake", str(root), "--student-run", weak_run, *EXPORT)
    assert code == 0, output
    out["weak"] = json.loads((root / "_mlflow" / "last_export.json").read_text())
    return out


@pytest.fixture(scope="session")
def bundle(served: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "champion"
    root = str(served["lake"])
    # champion = the trained student's export, whatever the gates think of it here
    code, output = cli("model", "promote", "--lake", root, "--version",
                       served["first"]["version"], "--mode", "disabled")  # fmt: skip
    assert code == 0, output
    code, output = cli("model", "bundle", "--lake", root, "--alias", CHAMPION, "--out", str(out))
    assert code == 0, output
    return out
