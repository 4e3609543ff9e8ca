"""Feast's own CLI on the repository: ``feast plan`` on a copy of ``feature_repo/``.

A fresh copy plans every definition once (no ``ConflictingFeatureViewNames``: Feast imports
only ``definitions.py``). On a lake ``cardiolake features apply`` registered and materialized,
``feast plan`` through the lake's runtime config sees the same registry and reports no change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import feature_repo

REPO = Path(feature_repo.__file__).resolve().parent
FEAST = Path(sys.executable).parent / "feast"


def _copy_repo(dest: Path) -> Path:
    target = dest / "feature_repo"
    shutil.copytree(REPO, target, ignore=shutil.ignore_patterns("__pycache__", "data"))
    return target


def _feast(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FEAST_USAGE": "False", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [str(FEAST), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=120
    )


def test_feast_plan_on_a_fresh_copy(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    result = _feast(repo, "plan")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("labs_latest", "ecg_measurements", "ecg_embedding", "fused_embedding"):
        assert result.stdout.count(f"Created feature view {name}\n") == 1, result.stdout
    assert "Created feature service teacher_training" in result.stdout
    # the default config is the default lake's registry, beside the repository folder
    assert (tmp_path / "lake" / "_feast" / "registry.db").is_file()
