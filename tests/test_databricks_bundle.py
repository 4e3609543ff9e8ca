"""The Databricks bundle: every resource file against the bundle schema, before any workspace.

Each resource is loaded through the ``databricks-bundles`` package's classes (``Job``,
``MlflowExperiment``, ``RegisteredModel``), which reject a field the bundle schema does not
have, so a misspelt key fails here. ``databricks.yml`` is checked against the bundle's
top-level, target and variable keys; references (``${var.*}``, job clusters, task keys,
notebook and library paths, the CLI commands python_wheel_task runs, the package functions
each notebook calls) must all resolve.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from databricks.bundles.experiments import MlflowExperiment
from databricks.bundles.jobs import Job
from databricks.bundles.registered_models import RegisteredModel

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "resources"
NOTEBOOKS = ROOT / "notebooks"

#: Resource kinds this bundle defines, with the class validating each.
SCHEMA: dict[str, Any] = {
    "jobs": Job,
    "experiments": MlflowExperiment,
    "registered_models": RegisteredModel,
}
#: Keys of databricks.yml, its targets and its variables (the bundle configuration reference).
TOP_KEYS = {
    *("bundle", "include", "variables", "targets", "artifacts", "resources", "workspace"),
    *("permissions", "run_as", "sync", "presets", "experimental", "scripts", "python"),
}
TARGET_KEYS = {
    *("mode", "default", "variables", "workspace", "resources", "presets", "run_as"),
    *("permissions", "artifacts", "bundle", "sync", "git", "cluster_id", "compute_id"),
}
VARIABLE_KEYS = {"description", "default", "type", "lookup"}
ARTIFACT_KEYS = {"type", "path", "build", "files", "executable", "dynamic_version"}
#: Stages whose jobs the issue asks for, by resource file.
JOB_FILES = ("ingestion", "validation", "features", "training", "promotion", "scoring",
             "monitoring")  # fmt: skip


def check_bundle_root(doc: dict[str, Any]) -> None:
    """Raise ValueError on a key databricks.yml, a target or a variable may not have."""
    for where, keys, allowed in [
        ("databricks.yml", doc, TOP_KEYS),
        *((f"targets.{name}", t or {}, TARGET_KEYS) for name, t in doc["targets"].items()),
        *((f"variables.{n}", v, VARIABLE_KEYS) for n, v in doc["variables"].items()),
        *((f"artifacts.{n}", a, ARTIFACT_KEYS) for n, a in doc.get("artifacts", {}).items()),
    ]:
        unknown = set(keys) - allowed
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    for name, target in doc["targets"].items():
        undeclared = set((target or {}).get("variables", {})) - set(doc["variables"])
        if undeclared:
            raise ValueError(f"targets.{name}: undeclared variables {sorted(undeclared)}")


def check_resources(doc: dict[str, Any]) -> list[Any]:
    """The validated resource objects of one resource file; raise ValueError on a bad key."""
    if set(doc) != {"resources"}:
        raise ValueError(f"a resource file holds only 'resources', not {sorted(doc)}")
    out = []
    for kind, items in doc["resources"].items():
        if kind not in SCHEMA:
            raise ValueError(f"unknown resource kind {kind!r}")
        for value in items.values():
            out.append(SCHEMA[kind].from_dict(value))
    return out


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _resource_files() -> list[Path]:
    return sorted(RESOURCES.glob("*.yml"))


def _jobs() -> list[tuple[Path, str, dict[str, Any]]]:
    return [
        (path, name, job)
        for path in _resource_files()
        for name, job in _load(path)["resources"].get("jobs", {}).items()
    ]


def test_databricks_yml_keys_and_targets() -> None:
    doc = _load(ROOT / "databricks.yml")
    check_bundle_root(doc)
    assert set(doc["targets"]) == {"dev", "staging", "prod"}
    assert {"catalog", "schema"} <= set(doc["variables"])
    assert doc["include"] == ["resources/*.yml"]


@pytest.mark.parametrize("path", _resource_files(), ids=lambda p: p.name)
def test_resource_file_matches_the_bundle_schema(path: Path) -> None:
    assert check_resources(_load(path))


def test_every_stage_has_a_job() -> None:
    files = {p.stem for p in _resource_files()}
    assert {f"{stage}_job" for stage in JOB_FILES} <= files
    assert "ml_artifacts" in files


def test_a_misspelt_key_fails() -> None:
    job = _load(RESOURCES / "ingestion_job.yml")["resources"]["jobs"]["ingestion_job"]
    task = job["tasks"][0]
    task["notebok_task"] = task.pop("notebook_task")
    with pytest.raises(ValueError, match="notebok_task"):
        check_resources({"resources": {"jobs": {"ingestion_job": job}}})
    cluster = _load(RESOURCES / "training_job.yml")["resources"]["jobs"]["training_job"]
    cluster["job_clusters"][0]["new_cluster"]["num_worker"] = 2
    with pytest.raises(ValueError, match="num_worker"):
        check_resources({"resources": {"jobs": {"training_job": cluster}}})
    root = _load(ROOT / "databricks.yml")
    root["targets"]["prod"]["mdoe"] = root["targets"]["prod"].pop("mode")
    with pytest.raises(ValueError, match="mdoe"):
        check_bundle_root(root)


def test_references_resolve() -> None:
    variables = set(_load(ROOT / "databricks.yml")["variables"])
    for path in _resource_files():
        used = set(re.findall(r"\$\{var\.([a-z_]+)\}", path.read_text()))
        assert used <= variables, (path.name, used - variables)
    for path, name, job in _jobs():
        clusters = {c["job_cluster_key"] for c in job.get("job_clusters", [])}
        keys = {t["task_key"] for t in job["tasks"]}
        for task in job["tasks"]:
            where = f"{path.name}:{name}.{task['task_key']}"
            assert task.get("job_cluster_key") in clusters, where
            assert {d["task_key"] for d in task.get("depends_on", [])} <= keys, where
            if "notebook_task" in task:
                notebook = (RESOURCES / task["notebook_task"]["notebook_path"]).resolve()
                assert notebook.is_file(), where
            for lib in task.get("libraries", []):
                if "requirements" in lib:
                    assert (RESOURCES / lib["requirements"]).resolve().is_file(), where


def _resolve_cli(args: list[str]) -> None:
    """Parse a command line against the ``cardiolake`` CLI without running it."""
    import typer

    from cardiolake.cli import app

    command: Any = typer.main.get_command(app)
    ctx = command.make_context("cardiolake", list(args))
    while hasattr(command, "resolve_command"):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]  # typer vendors click 8.2+
        _, command, rest = command.resolve_command(ctx, rest)
        assert command is not None, args
        ctx = command.make_context(command.name, rest, parent=ctx)


def test_wheel_tasks_run_real_cli_commands() -> None:
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    defaults = {
        k: str(v["default"]) for k, v in _load(ROOT / "databricks.yml")["variables"].items()
    }
    seen = []
    for _, _, job in _jobs():
        for task in job["tasks"]:
            wheel = task.get("python_wheel_task")
            if wheel is None:
                continue
            assert wheel["package_name"] == "cardiolake" and wheel["entry_point"] in scripts
            args = [re.sub(r"\$\{var\.(\w+)\}", lambda m: defaults[m[1]], a)
                    for a in wheel["parameters"]]  # fmt: skip
            _resolve_cli(args)
            seen.append(" ".join(args[:2]))
    assert {"model promote", "model bundle", "score --lake", "monitor --lake"} <= set(seen)


def _definitions(module: str) -> set[str]:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, module
    tree = ast.parse(Path(spec.origin).read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.ImportFrom):
            names |= {a.asname or a.name for a in node.names}
    return names


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.py")), ids=lambda p: p.name)
def test_notebook_is_a_thin_wrapper_over_package_functions(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# Databricks notebook source\n")
    tree = ast.parse(text)  # parses as Python (dbutils/display/spark come from Databricks)
    ours = ("cardiolake", "pipelines", "expectations", "feature_repo", "training", "serving")
    calls = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ours:
            defined = _definitions(node.module or "")
            for alias in node.names:
                assert alias.name in defined, f"{path.name}: {node.module}.{alias.name}"
            calls += 1
    assert calls, f"{path.name} calls no package function"
    assert len(text.splitlines()) < 80, f"{path.name} is not thin"
