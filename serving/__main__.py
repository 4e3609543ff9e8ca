"""The serving steps that need the training environment: ``python -m serving export --lake L``.

``cardiolake model export`` (platform environment) launches this in ``.venv-train``: the export
loads the PyTorch student and the lake's training rows. Promotion, bundles and verification
need only MLflow and onnxruntime and run in the platform environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from cardiolake.tracking import TRACKING_ENV


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the export, print (and optionally write) its summary."""
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    parser.add_argument("step", choices=("export",))
    parser.add_argument("--lake", required=True, type=Path, help="lake root")
    parser.add_argument("--config", type=Path, help="YAML with an 'export:' section")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. opset=21 (repeatable)")  # fmt: skip
    parser.add_argument("--fresh", action="store_true", help="accepted for symmetry; unused")
    parser.add_argument("--summary-out", type=Path, help="write the summary as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow.store", "mlflow.pytorch"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    from serving.export import export_student
    from serving.settings import ExportSettings
    from training.__main__ import _parse_set
    from training.lake import TrainingDataError
    from training.runner import context_from_env
    from training.settings import load_settings

    try:
        settings = load_settings(ExportSettings, args.config, "export", **_parse_set(args.set))
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ctx = context_from_env(args.lake.resolve(), os.environ.get(TRACKING_ENV) or None, args.fresh)
    try:
        summary = export_student(settings, ctx)
    except (TrainingDataError, LookupError, ValueError) as exc:
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
