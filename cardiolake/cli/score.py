"""``cardiolake score`` and ``cardiolake monitor``: batch-score a cohort, watch its drift.

``score`` runs the registered device model (an alias such as ``champion``) over a landing
folder of mobile recordings (or a silver ECG table) on Spark, writes ``scoring.predictions``,
quarantines what it cannot score and writes the run's drift figures. ``monitor`` prints the
newest run's figures and exits 1 when one is past its threshold.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cardiolake.cli.errors import UserError, require_dir, require_file, settings_from
from cardiolake.config import resolve_lake

console = Console()
err = Console(stderr=True)


def score(
    lake: Path = typer.Option(None, "--lake", help="Lake receiving the predictions."),
    alias: str = typer.Option("champion", "--alias", help="Model alias or version number."),
    landing: Path = typer.Option(None, "--landing", help="Folder of recordings to score."),
    table: str = typer.Option(None, "--table", help="A silver ECG table instead (silver.ecg)."),
    precision: str = typer.Option(
        None, "--precision", help="int8 | fp32 \\[default: what the version ships]."
    ),
    config: Path = typer.Option(None, "--config", help="YAML file with a 'score:' section."),
    master: str = typer.Option("local[2]", "--master", help="Spark master."),
) -> None:
    """Score a cohort's recordings with a registered model into scoring.predictions."""
    from cardiolake import tables
    from cardiolake.cli.model import _connect
    from cardiolake.config import build_settings
    from cardiolake.pseudonym import DEVELOPMENT_SECRET, SECRET_ENV, resolve_secret
    from cardiolake.spark import SparkSettings, get_spark
    from serving.monitoring import DriftThresholds
    from serving.registry import PromotionError
    from serving.scoring import ScoringSettings, score_cohort

    if (landing is None) == (table is None):
        raise UserError(
            "nothing to score", "give --landing DIR or --table silver.ecg (one of them)"
        )
    if landing is not None:
        require_dir(landing, option="--landing", fix="give the folder of recordings to score")
    require_file(config, option="--config")
    root = _connect(lake)
    settings = settings_from(
        build_settings, ScoringSettings, config, "score", alias=alias, precision=precision
    )
    if isinstance(settings.drift, dict):  # the YAML's nested `drift:` mapping
        settings = replace(settings, drift=DriftThresholds(**settings.drift))
    secret = resolve_secret(os.environ.get(SECRET_ENV, DEVELOPMENT_SECRET), root)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console) as bar:  # fmt: skip
        bar.add_task(f"scoring with {alias} on Spark ({master})", total=None)
        spark = get_spark(SparkSettings(master=master))
        try:
            result = score_cohort(spark, root, settings, secret=secret, landing=landing,
                                  table=tables.get_table(table) if table else None)  # fmt: skip
        except PromotionError as exc:
            raise UserError(str(exc), "see `cardiolake model list`") from exc
        except (ValueError, KeyError) as exc:
            raise UserError(f"cannot score: {exc}", "check --table and --precision") from exc
    console.print(
        f"[bold]{result.model} v{result.version}[/] (run {result.run_id}): "
        f"{result.scored} recordings scored, {result.inserted} new predictions"
    )
    for reason, n in sorted(result.quarantined.items()):
        console.print(f"  quarantined: {n} x {reason}")
    print_figures(result.drift)
    if result.report_png:
        console.print(f"drift report: {result.report_png}")
    console.print(f"lineage of a prediction: cardiolake lineage PREDICTION_KEY --lake {root}")


def print_figures(rows: list[dict[str, Any]]) -> None:
    """The drift figures of one run as a table."""
    if not rows:
        console.print("no drift figures (no reference or nothing scored)")
        return
    table = Table(title="drift against the training reference")
    for col in ("metric", "statistic", "value", "threshold", "p", "status", "detail"):
        table.add_column(col)
    for r in rows:
        p = r.get("p_value")
        table.add_row(r["metric"], r["statistic"], f"{r['value']:.3f}", f"{r['threshold']:g}",
                      "" if p is None or p != p else f"{p:.1g}",
                      "[red]ALERT[/]" if r["alert"] else "ok", str(r["detail"]))  # fmt: skip
    console.print(table)


def monitor(
    lake: Path = typer.Option(None, "--lake", help="Lake whose monitoring table to read."),
) -> None:
    """Print the newest scoring run's drift figures; exit 1 when one is past its threshold."""
    from serving.scoring import latest_figures

    root = resolve_lake(lake)
    frame = latest_figures(root)
    if frame.empty:
        raise UserError(f"no scoring run in {root}", "run `cardiolake score` first")
    first = frame.iloc[0]
    console.print(f"run {first['run_id']}: {first['model_name']} v{first['model_version']}, "
                  f"{int(first['rows'])} recordings, scored {first['scored_at']}")  # fmt: skip
    print_figures(frame.to_dict("records"))
    console.print(f"report: {first['report_png']}")
    alerts = frame[frame["alert"]]
    if len(alerts):
        console.print(f"[red]drift: {', '.join(sorted(set(alerts['metric'])))} past threshold[/]")
        raise typer.Exit(1)
    console.print("[green]no drift past the thresholds[/]")
