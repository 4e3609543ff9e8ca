"""The training environment's entry point: ``python -m training STAGE --lake L ...``.

``cardiolake train …`` (platform environment) launches this in ``.venv-train`` as a subprocess;
the two share only the lake's Delta tables and the MLflow store. With ``--processes N`` (or
``run.processes`` in the config) the same loop runs under ``TorchDistributor`` with N local
processes (gloo on CPU; GPUs on a cluster).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from cardiolake.tracking import TRACKING_ENV

#: stage -> (module, entry function, settings class name in training.settings)
ENTRY_POINTS: dict[str, tuple[str, str, str]] = {
    "pretrain": ("training.pretrain", "train_pretrain", "PretrainSettings"),
    "align": ("training.align", "train_align", "AlignSettings"),
    "teacher": ("training.teacher", "train_teacher", "TeacherSettings"),
    "student": ("training.student", "train_student", "StudentSettings"),
    "embed": ("training.embed", "embed_lake", "EmbedSettings"),
    "evaluate": ("training.evaluate", "evaluate", "EvaluateSettings"),
}
STAGES = tuple(ENTRY_POINTS)


def _parse_set(values: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        out[key] = yaml.safe_load(raw)
    return out


def _settings(stage: str, config: Path | None, overrides: dict[str, Any]) -> Any:
    from training import settings as settings_module

    cls = getattr(settings_module, ENTRY_POINTS[stage][2])
    return settings_module.load_settings(cls, config, stage, **overrides)


def run_stage(
    stage: str, settings: Any, lake_root: str, tracking: str | None, fresh: bool,
    summary_out: str | None = None,
) -> Any:  # fmt: skip
    """Run one stage in this process (a TorchDistributor worker runs exactly this).

    The main process (rank 0) writes the summary to ``summary_out`` when given: which worker's
    return value TorchDistributor hands back is not specified.
    """
    import warnings

    from training.runner import context_from_env, process_group

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "petastorm", "alembic", "mlflow.store"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # the pickle-format caution: our encoders are our own classes, loaded by our own code
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    # Petastorm 0.12 uses the legacy ParquetDataset API that pyarrow 14 still has
    warnings.filterwarnings("ignore", category=FutureWarning, module="petastorm")
    ctx = context_from_env(Path(lake_root), tracking, fresh)
    with process_group(ctx):
        import importlib

        module, entry, _ = ENTRY_POINTS[stage]
        summary = getattr(importlib.import_module(module), entry)(settings, ctx)
    if ctx.main and summary_out:
        Path(summary_out).parent.mkdir(parents=True, exist_ok=True)
        Path(summary_out).write_text(json.dumps(summary, indent=2, default=str))
    return summary


def distributed(stage: str, settings: Any, lake_root: str, tracking: str | None,
                fresh: bool, processes: int, summary_out: str) -> Any:  # fmt: skip
    """Run the stage under TorchDistributor with ``processes`` local processes."""
    from pyspark.ml.torch.distributor import TorchDistributor
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(f"local[{processes}]")
        .appName(f"cardiolake-train-{stage}")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        distributor = TorchDistributor(num_processes=processes, local_mode=True, use_gpu=False)
        distributor.run(run_stage, stage, settings, lake_root, tracking, fresh, summary_out)
    finally:
        spark.stop()
    return json.loads(Path(summary_out).read_text())


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the stage, print (and optionally write) its summary."""
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--lake", required=True, type=Path, help="lake root")
    parser.add_argument("--config", type=Path, help="YAML with a section per stage")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. run.epochs=2 (repeatable)")  # fmt: skip
    parser.add_argument("--fresh", action="store_true",
                        help="start a new run even if an unfinished checkpoint exists")  # fmt: skip
    parser.add_argument("--processes", type=int, help="TorchDistributor processes")
    parser.add_argument("--summary-out", type=Path, help="write the run summary as JSON here")
    args = parser.parse_args(argv)

    overrides = _parse_set(args.set)
    if args.processes is not None:
        overrides["run.processes"] = args.processes
    try:
        settings = _settings(args.stage, args.config, overrides)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lake_root = str(args.lake.resolve())
    tracking = os.environ.get(TRACKING_ENV) or None
    from training.lake import TrainingDataError

    try:
        if settings.run.processes > 1:
            out = str(args.summary_out or Path(lake_root) / "_checkpoints" / f"{args.stage}.json")
            summary = distributed(args.stage, settings, lake_root, tracking, args.fresh,
                                  settings.run.processes, out)  # fmt: skip
        else:
            summary = run_stage(args.stage, settings, lake_root, tracking, args.fresh)
    except (TrainingDataError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    if args.summary_out:
        args.summary_out.parent.mkdir(parents=True, exist_ok=True)
        args.summary_out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
