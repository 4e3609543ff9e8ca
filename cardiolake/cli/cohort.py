"""``cardiolake cohort``: generate, describe and plot the synthetic cardiac cohort."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cardiolake.cli.errors import UserError, require_dir, require_file, settings_from
from cardiolake.cohort.settings import CohortSettings
from cardiolake.config import build_settings

app = typer.Typer(
    help="Synthetic cardiac cohort: a hospital landing zone with ground truth.",
    no_args_is_help=True,
)
console = Console()


@app.command()
def generate(
    out: Path = typer.Option(..., "--out", help="Landing-zone folder to write."),
    patients: int = typer.Option(None, "--patients", help="Number of patients \\[default: 50]."),
    seed: int = typer.Option(
        None, "--seed", help="Random seed; same seed, same bytes \\[default: 0]."
    ),
    labeled_fraction: float = typer.Option(
        None, "--labeled-fraction", help="Share of patients with reader labels \\[default: 0.2]."
    ),
    mobile_only: float = typer.Option(
        None, "--mobile-only", help="Share of patients seen only by a mobile ECG \\[default: 0]."
    ),
    corrupt_fraction: float = typer.Option(
        None, "--corrupt-fraction", help="Broken inputs added, per patient \\[default: 0]."
    ),
    workers: int = typer.Option(None, "--workers", help="Worker processes \\[default: 1]."),
    config: Path = typer.Option(None, "--config", help="YAML file with a 'cohort:' section."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the settings and write nothing."),
) -> None:
    """Generate a synthetic cohort: 12-lead and mobile ECGs, echo cines, labs, notes, labels."""
    from cardiolake.cohort.generate import generate_cohort

    require_file(config, option="--config")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: a file, not a folder", "pass a new or empty folder")
    settings = settings_from(
        build_settings, CohortSettings, config, "cohort", patients=patients, seed=seed,
        labeled_fraction=labeled_fraction, mobile_only_fraction=mobile_only,
        corrupt_fraction=corrupt_fraction, workers=workers,
    )  # fmt: skip
    if dry_run:
        console.print(settings)
        return
    with Progress(
        TextColumn("[bold]patients"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    ) as progress:  # fmt: skip
        task = progress.add_task("generate", total=settings.patients)
        counts = generate_cohort(settings, out, progress=lambda n: progress.advance(task, n))
    table = Table(title=f"cohort written to {out}")
    table.add_column("item")
    table.add_column("count", justify="right")
    for key, value in counts.items():
        table.add_row(key, f"{value:,}")
    console.print(table)


@app.command()
def describe(
    cohort_dir: Path = typer.Argument(..., help="A folder written by 'cohort generate'."),
    json_out: Path = typer.Option(None, "--json", help="Also write the summary as JSON here."),
) -> None:
    """Print counts, prevalence, reader kappa and attainable AUCs on a held-out split."""
    from cardiolake.cohort.describe import describe_cohort

    _require_cohort(cohort_dir)
    summary = describe_cohort(cohort_dir)
    for title, values, fmt in (
        ("counts", summary.counts, "{:,}"),
        ("prevalence", summary.prevalence, "{:.1%}"),
        ("reader kappa (reader 1 vs 2)", summary.kappa, "{:.3f}"),
        ("AUC on the held-out split", summary.auc, "{:.3f}"),
    ):
        table = Table(title=title)
        table.add_column("item")
        table.add_column("value", justify="right")
        for key, value in values.items():
            table.add_row(key, fmt.format(value))
        console.print(table)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary.as_dict(), indent=2))


@app.command()
def plot(
    cohort_dir: Path = typer.Argument(..., help="A folder written by 'cohort generate'."),
    patient: str = typer.Option(
        ..., "--patient", help="Study id (CL000001), 1-based number or MRN."
    ),
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
) -> None:
    """Draw a 12-lead strip with true R peaks above the echo LV-area curve with ED/ES marked."""
    from cardiolake.cohort.plot import plot_patient

    _require_cohort(cohort_dir)
    try:
        path = plot_patient(cohort_dir, patient, out)
    except KeyError as err:
        raise UserError(
            str(err.args[0]), "pass a study id (CL000001), a 1-based number or an MRN of it"
        ) from None
    console.print(f"wrote {path}")


def _require_cohort(cohort_dir: Path) -> None:
    fix = "pass a folder `cardiolake cohort generate --out` wrote"
    require_dir(cohort_dir, option="COHORT_DIR", fix=fix)
    if not (cohort_dir / "truth" / "patients.parquet").is_file():
        raise UserError(f"{cohort_dir}: not a generated cohort (no truth/patients.parquet)", fix)
