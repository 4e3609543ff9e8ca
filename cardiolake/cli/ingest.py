"""``cardiolake ingest``: landing zone -> bronze -> silver -> gold Delta tables."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cardiolake.cli.errors import UserError, require_dir, require_file, settings_from
from cardiolake.config import build_settings, load_yaml, resolve_lake
from cardiolake.pseudonym import DEVELOPMENT_SECRET, SECRET_ENV

console = Console()
_LANDING_FIX = "pass the folder a hospital export (or `cardiolake cohort generate --out`) wrote"


def ingest(
    landing: Path = typer.Option(..., "--landing", help="Landing-zone folder to ingest."),
    lake: Path = typer.Option(
        None, "--lake", help="Lake root \\[default: $CARDIOLAKE_LAKE or ./lake]."
    ),
    stage: list[str] = typer.Option(
        None,
        "--stage",
        help="Run only these stages (bronze, silver, gold; gold = alignment + examples).",
    ),
    config: Path = typer.Option(
        None, "--config", help="YAML file with 'ingest:' and 'gates:' sections."
    ),
    master: str = typer.Option("local[2]", "--master", help="Spark master."),
    driver_memory: str = typer.Option(
        "4g", "--driver-memory", help="Spark driver heap (local mode runs every task in it)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List what would be ingested; write nothing."
    ),
    gates: bool = typer.Option(
        True, "--gates/--no-gates", help="Run the quality gates before gold."
    ),
) -> None:
    """Ingest a landing zone into Delta tables; ends with a summary of rows and quarantine."""
    from expectations.settings import GateSettings
    from pipelines.job import GOLD_STEPS, STAGES
    from pipelines.landing import scan_landing
    from pipelines.settings import IngestSettings

    require_dir(landing, option="--landing", fix=_LANDING_FIX)
    if next(Path(landing).iterdir(), None) is None:
        raise UserError(f"--landing {landing}: the folder is empty", _LANDING_FIX)
    require_file(config, option="--config")
    stages = tuple(stage) if stage else STAGES
    unknown = set(stages) - set(STAGES) - set(GOLD_STEPS)
    if unknown:
        raise typer.BadParameter(
            f"unknown stage(s) {sorted(unknown)}; choose from {STAGES + GOLD_STEPS}",
            param_hint="--stage",
        )
    lake_root = resolve_lake(lake)
    secret = os.environ.get(SECRET_ENV, DEVELOPMENT_SECRET)
    if secret == DEVELOPMENT_SECRET:
        console.print(
            f"[yellow]{SECRET_ENV} not set: using the development secret (synthetic data only)"
        )
    extra = settings_from(load_yaml, config, "ingest")
    settings = settings_from(
        IngestSettings, landing=landing, lake_root=lake_root, pseudonym_secret=secret, **extra
    )
    gate_settings = settings_from(build_settings, GateSettings, config, "gates")
    if dry_run:
        inventory = scan_landing(landing)
        table = Table(title=f"would ingest {landing} into {lake_root}")
        table.add_column("format")
        table.add_column("files", justify="right")
        counts: dict[str, int] = {}
        for src in [*inventory.records, *inventory.unknown]:
            counts[src.format] = counts.get(src.format, 0) + 1
        for fmt, n in sorted(counts.items()):
            table.add_row(fmt, str(n))
        console.print(table)
        return
    from cardiolake.spark import LazySparkSession, SparkSettings

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("scanning the landing zone", total=None)
        current = ["scanning the landing zone"]

        def step(text: str) -> None:
            current[0] = text
            bar.update(task, description=text)

        # Spark starts when a step first needs it: a re-run with nothing new never does
        spark = LazySparkSession(
            SparkSettings(master=master, driver_memory=driver_memory),
            on_start=lambda: bar.update(task, description=f"{current[0]} (starting Spark)"),
        )

        # the quality gates sit between silver and gold: rows they fail are quarantined and
        # never promoted (gold skips them); the CLI, at the edge, may import every stage
        from expectations.promotion import ingest_with_gates

        result = ingest_with_gates(
            spark,  # type: ignore[arg-type]  # a SparkSession to every stage, started lazily
            settings,
            gate_settings=gate_settings,
            stages=stages,  # type: ignore[arg-type]
            gated=gates,
            on_step=step,
        )
        bar.update(task, description="done")
    print_summary(result.summary)
    for report in result.reports:
        print_gate_report(report)


def print_gate_report(report: object) -> None:
    """One line per suite: expectations passed and rows failing."""
    table = Table(title="quality gates")
    for col in ("suite", "expectations", "passed", "unexpected rows", "promoted"):
        table.add_column(col)
    blocked = set(map(str, report.blocked()))  # type: ignore[attr-defined]
    for suite in report.suites:  # type: ignore[attr-defined]
        n = len(suite.expectations)
        ok = sum(1 for e in suite.expectations if e.success)
        bad = sum(e.unexpected_count or 0 for e in suite.expectations)
        table.add_row(
            suite.suite,
            str(n),
            str(ok),
            str(bad),
            "no (failing rows held back)" if str(suite.table) in blocked else "yes",
        )
    console.print(table)


def print_summary(summary: object) -> None:
    """Files per format, rows added per table, quarantined inputs per stage and reason, and
    what each step cost (seconds, Spark jobs, Delta commits)."""
    files = Table(title="inputs by format")
    files.add_column("format")
    files.add_column("files", justify="right")
    for fmt, n in sorted(summary.files_by_format.items()):  # type: ignore[attr-defined]
        files.add_row(fmt, f"{n:,}")
    rows = Table(title=f"rows added (run {summary.run_id})")  # type: ignore[attr-defined]
    rows.add_column("table")
    rows.add_column("rows", justify="right")
    for name, n in summary.rows_added.items():  # type: ignore[attr-defined]
        rows.add_row(name, f"{n:,}")
    bad = Table(title="quarantined")
    for col in ("stage", "reason", "inputs"):
        bad.add_column(col)
    for stage_name, reasons in summary.quarantined.items():  # type: ignore[attr-defined]
        for reason, n in sorted(reasons.items()):
            bad.add_row(stage_name, reason, f"{n:,}")
    console.print(files, rows, bad)
    steps = getattr(summary, "steps", {})
    if steps:
        cost = Table(title="cost by step")
        for col in ("step", "seconds", "Spark jobs", "Delta commits"):
            cost.add_column(col, justify="left" if col == "step" else "right")
        totals = summary.totals  # type: ignore[attr-defined]
        for name, c in [*steps.items(), ("total", totals)]:
            jobs = "-" if c["spark_jobs"] is None else str(c["spark_jobs"])
            cost.add_row(name, f"{c['seconds']:.1f}", jobs, str(c["delta_commits"]))
        console.print(cost)
