"""``cardiolake evaluate``: the teacher and the students on a lake's labelled patients.

On the lake the models were trained in, ``--split test`` scores its held-out patients. A
separately generated and ingested cohort becomes an external test set with ``--split all
--models-lake TRAIN_LAKE``: its recordings are first embedded with the encoders the teacher
was trained with (training environment), Feast serves those embeddings and its labs as of
each label (platform environment), and then the models of ``TRAIN_LAKE``'s registry score it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cardiolake import tables
from cardiolake.cli.train import launch
from cardiolake.config import resolve_lake
from cardiolake.tracking import tracking_uri

console = Console()


def evaluate(
    lake: Path = typer.Option(None, "--lake", help="Lake whose labelled patients are scored."),
    split: str = typer.Option("test", "--split", help="test | all (all: an external cohort)."),
    out: Path = typer.Option(None, "--out", help="Output folder \\[default: <lake>/_evaluation]."),
    models_lake: Path = typer.Option(
        None,
        "--models-lake",
        help="Lake whose MLflow registry holds the models \\[default: --lake].",
    ),
    config: Path = typer.Option(None, "--config", help="YAML file with an 'evaluate:' section."),
    set_: list[str] = typer.Option(None, "--set", help="Override one setting (repeatable)."),
    python: Path = typer.Option(None, "--python", help="The training environment's python."),
) -> None:
    """Score the teacher, the students and the label-efficiency students; print the table.

    Writes DIR/predictions.parquet (one row per patient x model x input), DIR/metrics.json and
    ROC / calibration / label-efficiency plots, and logs them to the cardiolake-evaluate
    experiment of the models' store.
    """
    if split not in ("test", "all"):
        raise typer.BadParameter(f"--split must be test or all, not {split!r}")
    root = resolve_lake(lake)
    store = resolve_lake(models_lake) if models_lake is not None else root
    tracking = tracking_uri(store) if store != root else None
    if tracking is not None:
        prepare_external(root, tracking=tracking, python=python)
    target = (out or root / "_evaluation").resolve()
    sets = [f"split={split}", f"out={target}", *(set_ or [])]
    summary = launch(
        "evaluate",
        lake=root,
        config=config,
        sets=sets,
        fresh=True,
        processes=None,
        python=python,
        tracking=tracking,
    )
    metrics = json.loads((target / "metrics.json").read_text())
    console.print(results_table(metrics))
    console.print(findings_table(metrics))
    for line in comparison_lines(metrics):
        console.print(line)
    console.print(
        f"wrote {target}/predictions.parquet, metrics.json and plots "
        f"(MLflow run {summary.get('run_id')})"
    )


def prepare_external(root: Path, *, tracking: str, python: Path | None) -> None:
    """Embed an external lake with the teacher's encoders, then write its Feast training set."""
    from feature_repo.store import FeatureSettings, apply, open_store
    from feature_repo.training_sets import write_training_set

    embedded = launch(
        "embed",
        lake=root,
        config=None,
        sets=None,
        fresh=False,
        processes=None,
        python=python,
        tracking=tracking,
    )
    models: Any = embedded.get("models", {})
    encoders = {
        tables.ECG_EMBEDDING: str(models["ecg"]).removeprefix("models:/"),
        tables.ECHO_EMBEDDING: str(models["echo"]).removeprefix("models:/"),
    }
    settings = FeatureSettings(lake_root=root)
    store = open_store(settings)
    apply(store, settings, encoders=encoders)
    written = write_training_set(store, root)
    console.print(
        f"{written.table} v{written.version}: {written.rows:,} label rows with the "
        f"features as of each label (encoders {', '.join(encoders.values())})"
    )


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def _model_name(model: str, variant: str) -> str:
    if variant.startswith("labels_only/"):  # a label-efficiency student: init and labels used
        _, init, fraction = variant.split("/")
        return f"{'ssl' if init == 'align' else init} {float(fraction):.0%}"
    if variant.startswith("distilled/"):  # semi-supervised: that share of labels, its teacher
        _, init, fraction = variant.split("/")
        return f"{'ssl' if init == 'align' else init} {float(fraction):.0%} distil"
    return {"student_labels_only": "labels only"}.get(model, model)


def _input_name(name: str) -> str:
    if name.startswith("limb:"):
        leads = name.removeprefix("limb:").split(",")
        return "6 limb" if len(leads) == 6 else ",".join(leads)
    return name


def results_table(metrics: dict[str, Any]) -> Table:
    """AUC with CI, ECE and the operating point per model x input."""
    table = Table(
        title=f"urgent triage, {metrics['patients']:,} patients ({metrics['positives']} urgent), "
        f"split {metrics['split']}"
    )
    for col in ("model", "input", "AUC", "95% CI", "ECE", "sens", "spec", "PPV", "n"):
        table.add_column(col, justify="left" if col in ("model", "input") else "right")
    for r in metrics["results"]:
        lo, hi = r["ci95"]
        table.add_row(
            _model_name(r["model"], r["variant"]), _input_name(r["input"]), _fmt(r["auc"]),
            f"{_fmt(lo, 2)}-{_fmt(hi, 2)}", _fmt(r["ece"], 2), _fmt(r["sensitivity"], 2),
            _fmt(r["specificity"], 2), _fmt(r["ppv"], 2), str(r["n"]),
        )  # fmt: skip
    return table


def findings_table(metrics: dict[str, Any]) -> Table:
    """Per-finding AUC of the teacher and the distilled student (6 limb leads, mobile)."""
    shown = [r for r in metrics["results"]
             if (r["model"], r["input"]) in {("teacher", "12lead"), ("student", "mobile"),
                                             ("student", "limb:I,II,III,aVR,aVL,aVF")}
             and not r["variant"].startswith("labels_only/")]  # fmt: skip
    table = Table(title="findings (AUC)")
    table.add_column("finding")
    for r in shown:
        table.add_column(f"{_model_name(r['model'], r['variant'])} {_input_name(r['input'])}",
                         justify="right")  # fmt: skip
    for finding in shown[0]["finding_auc"] if shown else []:
        table.add_row(finding, *(_fmt(r["finding_auc"][finding]) for r in shown))
    return table


def comparison_lines(metrics: dict[str, Any]) -> list[str]:
    """The paired gaps (distillation lift, mobile vs derived) as sentences."""
    lines = []
    for name, g in metrics.get("comparisons", {}).items():
        lo, hi = g["ci95"]
        lines.append(
            f"{name}: {g['delta']:+.3f} (paired 95% CI [{lo:+.3f}, {hi:+.3f}], n {g['n']})"
        )
    return lines
