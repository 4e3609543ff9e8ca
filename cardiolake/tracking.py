"""Where a lake's MLflow store lives (both environments resolve it the same way).

By default a lake carries its experiments: a SQLite tracking store at
``<lake>/_mlflow/mlflow.db`` with artifacts under ``<lake>/_mlflow/artifacts``. Setting
``MLFLOW_TRACKING_URI`` (read at the CLI edge and passed in as ``override``) points elsewhere,
for example a Databricks workspace (``databricks``).
"""

from __future__ import annotations

from pathlib import Path

#: Environment variable MLflow itself reads; the CLI edge passes its value in.
TRACKING_ENV = "MLFLOW_TRACKING_URI"
#: One experiment per training stage.
EXPERIMENTS: dict[str, str] = {
    "pretrain": "cardiolake-pretrain",
    "align": "cardiolake-align",
    "teacher": "cardiolake-teacher",
    "student": "cardiolake-student",
    "evaluate": "cardiolake-evaluate",
    "export": "cardiolake-export",
}
#: Registered models of the encoders (their versions are what embedding rows name).
ENCODER_MODELS: dict[str, str] = {
    "ecg": "cardiolake-ecg-encoder",
    "echo": "cardiolake-echo-encoder",
}


#: Registered models of the stage-3 models (PyTorch, what training and evaluation load).
TEACHER_MODEL = "cardiolake-teacher"
STUDENT_MODEL = "cardiolake-student-torch"
#: Lakes trained before the rename registered the PyTorch student under the device name.
LEGACY_STUDENT_MODEL = "cardiolake-student"
#: The device model: the exported ONNX student, promoted through aliases.
DEVICE_MODEL = "cardiolake-student"
#: Aliases of device-model versions: a new export, and the one devices get.
CHALLENGER = "challenger"
CHAMPION = "champion"


def mlflow_root(lake_root: Path) -> Path:
    """The lake's MLflow folder."""
    return Path(lake_root).resolve() / "_mlflow"


def tracking_uri(lake_root: Path, override: str | None = None) -> str:
    """The tracking URI: ``override`` when set, else the lake's SQLite store."""
    if override:
        return override
    return f"sqlite:///{mlflow_root(lake_root) / 'mlflow.db'}"


def artifact_root(lake_root: Path) -> Path:
    """Where the lake's experiments keep artifacts."""
    return mlflow_root(lake_root) / "artifacts"


def artifact_location(lake_root: Path, uri: str) -> str | None:
    """Where a new experiment keeps its artifacts for tracking store ``uri``.

    A local SQLite store keeps them in ``artifacts/`` beside its database (for the lake's own
    store: under the lake), never in MLflow's default ``./mlruns`` of whatever folder the
    process happened to start in. A server store (Databricks, an MLflow server) decides itself.
    """
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if db.resolve() == (mlflow_root(lake_root) / "mlflow.db").resolve():
            return artifact_root(lake_root).as_uri()
        return (db.resolve().parent / "artifacts").as_uri()
    return None


def ui_command(lake_root: Path, override: str | None = None, port: int = 5000) -> list[str]:
    """The ``mlflow ui`` command line that opens the lake's store."""
    uri = tracking_uri(lake_root, override)
    cmd = ["mlflow", "ui", "--backend-store-uri", uri, "--port", str(port)]
    if not override:
        cmd += ["--default-artifact-root", artifact_root(lake_root).as_uri()]
    return cmd
