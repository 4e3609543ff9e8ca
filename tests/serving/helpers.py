"""Helpers of the serving tests: the CLI in-process and the lake's MLflow client."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from cardiolake.cli import app
from cardiolake.tracking import DEVICE_MODEL, tracking_uri

EXPORT = ["--set", "latency_runs=60"]
#: The latency gate's logic is tested in test_gates; on this shared machine a neighbour's load
#: must not decide whether the quality gate is tested
PROMOTE = ["--set", "max_p95_ms=50"]


def cli(*args: str) -> tuple[int, str]:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("COLUMNS", "200")
        result = CliRunner().invoke(app, list(args))
    try:  # one-line user errors go to stderr
        err = result.stderr
    except ValueError:
        err = ""
    return result.exit_code, result.output + err


def alias_version(client: mlflow.MlflowClient, alias: str) -> str:
    return str(client.get_model_version_by_alias(DEVICE_MODEL, alias).version)


def mlflow_client(root: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=tracking_uri(root), registry_uri=tracking_uri(root))
