"""End-to-end lineage: prediction -> model version -> training runs -> Delta versions -> raw files.

Every step is already recorded where it happened; this module only walks it:

* a prediction row (``scoring.predictions``) names its model version, recording and the
  SHA-256 of the raw file it was scored from;
* a ``cardiolake-student`` version's tags name its export run, the student training run, the
  teacher and the encoder run (written by :mod:`serving.export`);
* every training run tags the Delta table versions it read (``delta.<table>``) and its parent
  run (``cardiolake.parent_run``): student -> teacher -> stage 2 -> stage 1;
* every table the runs read keeps the bronze record key (``record_key``, ``ecg_record_key``,
  ``echo_record_key``), and bronze keeps each raw file's path and SHA-256.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cardiolake import lake, tables
from cardiolake.tracking import DEVICE_MODEL

#: Columns holding a bronze record key (the raw file's SHA-256).
RECORD_KEY_COLUMNS = ("record_key", "ecg_record_key", "echo_record_key")
_PREDICTION_KEY = re.compile(r"^[0-9a-f]{64}$")


class LineageError(LookupError):
    """A key that names no prediction or model version."""


@dataclass
class RunStep:
    """One MLflow run of the chain."""

    stage: str
    run_id: str
    experiment: str
    delta: dict[str, int]
    tags: dict[str, str]
    parent: str | None


@dataclass
class Lineage:
    """The whole chain of one prediction (or of one model version)."""

    prediction: dict[str, Any] | None
    model: dict[str, Any]
    runs: list[RunStep] = field(default_factory=list)
    raw_files: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"prediction": self.prediction, "model": self.model,
                "runs": [r.__dict__ for r in self.runs], "raw_files": self.raw_files}  # fmt: skip


def record_files(uri: str) -> list[Path]:
    """A raw input's files in the order ingestion hashes them: a WFDB header, then the signal
    files its lines name; any other input is its one file."""
    path = Path(uri)
    if path.suffix.lower() != ".hea":
        return [path]
    lines = [ln.split() for ln in path.read_text(errors="replace").splitlines()[1:]
             if ln.strip() and not ln.lstrip().startswith("#")]  # fmt: skip
    return [path, *(path.with_name(n) for n in dict.fromkeys(f[0] for f in lines if f))]


def current_sha256(uri: str) -> str | None:
    """The SHA-256 of a raw input as it is today (None when it is not reachable)."""
    import hashlib

    files = record_files(uri) if Path(uri).is_file() else []
    if not files or not all(f.is_file() for f in files):
        return None
    digest = hashlib.sha256()
    for f in files:
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def find_prediction(lake_root: Path, key: str) -> dict[str, Any]:
    """The prediction row with ``prediction_key`` == ``key``.

    Raises:
        LineageError: no such prediction.
    """
    if not lake.table_exists(tables.PREDICTIONS, lake_root=lake_root):
        raise LineageError(f"{lake_root} has no {tables.PREDICTIONS}: run `cardiolake score`")
    frame = lake.read_pandas(tables.PREDICTIONS, lake_root=lake_root)
    hit = frame[frame["prediction_key"] == key]
    if hit.empty:
        raise LineageError(f"no prediction {key} in {tables.PREDICTIONS}")
    row = hit.iloc[0].to_dict()
    row["quality_flags"] = list(row.get("quality_flags") if row.get("quality_flags") is not None
                                else [])  # fmt: skip
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


def newest_prediction_key(lake_root: Path) -> str:
    """The key of the most recently scored prediction.

    Raises:
        LineageError: nothing scored yet.
    """
    if not lake.table_exists(tables.PREDICTIONS, lake_root=lake_root):
        raise LineageError(f"{lake_root} has no {tables.PREDICTIONS}: run `cardiolake score`")
    frame = lake.read_pandas(tables.PREDICTIONS, lake_root=lake_root,
                             columns=["prediction_key", "scored_at"])  # fmt: skip
    return str(frame.sort_values(["scored_at", "prediction_key"])["prediction_key"].iloc[-1])


def _run(client: Any, run_id: str) -> RunStep:
    run = client.get_run(run_id)
    tags = dict(run.data.tags)
    experiment = client.get_experiment(run.info.experiment_id).name
    delta = {k.removeprefix("delta."): int(v) for k, v in tags.items()
             if k.startswith("delta.") and v.lstrip("-").isdigit()}  # fmt: skip
    keep = {k: v for k, v in tags.items() if k.startswith(("cardiolake.", "feast."))}
    return RunStep(tags.get("cardiolake.stage", experiment), run_id, experiment, delta, keep,
                   tags.get("cardiolake.parent_run"))  # fmt: skip


def _model_run(client: Any, ref: str) -> str | None:
    """The run of a registered ``name/version`` tag value."""
    name, _, version = ref.partition("/")
    if not version:
        return None
    return str(client.get_model_version(name, version).run_id)


def model_lineage(version: str) -> tuple[dict[str, Any], list[RunStep]]:
    """A device-model version and every run behind it (export, student, teacher, encoders)."""
    import mlflow

    client = mlflow.MlflowClient()
    mv = client.get_model_version(DEVICE_MODEL, version)
    tags = dict(mv.tags or {})
    model = {"name": DEVICE_MODEL, "version": str(mv.version), "run_id": mv.run_id,
             "aliases": list(getattr(mv, "aliases", []) or []),
             "figures": {k.removeprefix("cardiolake.export."): v for k, v in tags.items()
                         if k.startswith("cardiolake.export.")},
             "sha256": {k.removeprefix("cardiolake.sha256."): v for k, v in tags.items()
                        if k.startswith("cardiolake.sha256.")}}  # fmt: skip
    runs: list[RunStep] = []
    queue: list[str] = [str(mv.run_id)]
    seen: set[str] = set()
    while queue:
        run_id = queue.pop(0)
        if run_id in seen:
            continue
        seen.add(run_id)
        step = _run(client, run_id)
        runs.append(step)
        nxt = [step.parent, step.tags.get("cardiolake.student_run")]
        if "cardiolake.teacher" in step.tags:
            nxt.append(_model_run(client, step.tags["cardiolake.teacher"]))
        queue += [str(r) for r in nxt if r and r not in seen]
    return model, runs


def raw_files_of(lake_root: Path, table: str, version: int) -> list[dict[str, str]]:
    """The raw files (path, SHA-256) behind a table version, through bronze record keys."""
    t = tables.get_table(table)
    if not lake.table_exists(t, lake_root=lake_root):
        return []
    import pyarrow as pa
    from deltalake import DeltaTable

    names = set(pa.schema(DeltaTable(str(t.path(lake_root)), version=version).schema()
                          .to_arrow()).names)  # fmt: skip
    cols = [c for c in RECORD_KEY_COLUMNS if c in names]
    if not cols:
        return []
    frame = lake.read_pandas(t, lake_root=lake_root, version=version, columns=cols)
    keys = set()
    for c in cols:
        keys |= set(frame[c].dropna().astype(str))
    out = []
    for raw in (tables.ECG_RAW, tables.ECHO_RAW):
        if not lake.table_exists(raw, lake_root=lake_root):
            continue
        b = lake.read_pandas(raw, lake_root=lake_root, columns=["record_key", "source_uri",
                                                               "sha256"])  # fmt: skip
        hit = b[b["record_key"].astype(str).isin(keys)]
        out += [{"uri": u, "sha256": s} for u, s in zip(hit["source_uri"], hit["sha256"],
                                                        strict=True)]  # fmt: skip
    return sorted(out, key=lambda r: r["uri"])


def lineage(lake_root: Path, key: str, *, raw_files: bool = True) -> Lineage:
    """The lineage of a prediction key (``latest``: the newest), or of a model version (``3``,
    ``v3``, ``name/3``).

    Raises:
        LineageError: the key names nothing.
    """
    from mlflow.exceptions import MlflowException

    prediction = None
    if key == "latest":
        key = newest_prediction_key(lake_root)
    if _PREDICTION_KEY.match(key):
        prediction = find_prediction(lake_root, key)
        version = str(prediction["model_version"])
    else:
        version = key.rsplit("/", 1)[-1].removeprefix("v")
        if not version.isdigit():
            raise LineageError(f"{key!r} is neither a prediction key (64 hex characters) nor a "
                               "model version (3, v3 or cardiolake-student/3)")  # fmt: skip
    try:
        model, runs = model_lineage(version)
    except MlflowException as exc:
        raise LineageError(f"{DEVICE_MODEL} has no version {version}") from exc
    out = Lineage(prediction, model, runs)
    if raw_files:
        for table, v in sorted({(t, v) for r in runs for t, v in r.delta.items()}):
            out.raw_files[f"{table}@{v}"] = raw_files_of(lake_root, table, v)
    return out
