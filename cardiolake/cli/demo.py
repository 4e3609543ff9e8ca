"""``cardiolake demo``: the whole chain on a small cohort, ending with one summary.

generate -> ingest (gates) -> features -> pretrain -> align -> teacher -> students -> evaluate
-> export -> register -> promote -> bundle -> score -> monitor -> lineage of one prediction.
Each step is the ``cardiolake`` command a user would type (printed before it runs), so the demo
doubles as a tour; ``cardiolake demo summary`` re-prints the summary of a finished demo folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cardiolake.cli.errors import UserError

app = typer.Typer(help="Run the whole chain on a small cohort, or summarise a demo folder.",
                  no_args_is_help=False, invoke_without_command=True)  # fmt: skip
console = Console()
err = Console(stderr=True)
_REPO = Path(__file__).resolve().parents[2]
_CONFIG = _REPO / "training" / "configs" / "demo.yaml"


def steps(out: Path, patients: int, seed: int) -> list[tuple[str, list[str]]]:
    """The demo's commands (label, arguments of ``cardiolake``)."""
    lake, landing, cfg = str(out / "lake"), str(out / "landing"), str(_CONFIG)
    train = ["--lake", lake, "--config", cfg]
    return [
        ("generate", ["cohort", "generate", "--patients", str(patients), "--seed", str(seed),
                      "--labeled-fraction", "0.5", "--corrupt-fraction", "0.25", "--workers",
                      "2", "--out", landing]),
        ("describe", ["cohort", "describe", landing]),
        ("plot", ["cohort", "plot", landing, "--patient", "1", "--out",
                  str(out / "patient_1.png")]),
        ("ingest", ["ingest", "--landing", landing, "--lake", lake]),
        ("pretrain", ["train", "pretrain", *train]),
        ("align", ["train", "align", *train]),
        ("features apply", ["features", "apply", "--lake", lake]),
        ("materialize", ["features", "materialize", "--lake", lake]),
        ("training set", ["features", "training-set", "--lake", lake]),
        ("distillation set", ["features", "training-set", "--lake", lake, "--entities", "ecg"]),
        ("teacher", ["train", "teacher", *train]),
        ("student", ["train", "student", *train]),
        ("labels-only student", ["train", "student", *train, "--set", "distill=false"]),
        ("evaluate", ["evaluate", "--lake", lake, "--split", "all", "--out",
                      str(out / "evaluation")]),
        ("export", ["model", "export", "--lake", lake]),
        ("promote", ["model", "promote", "--lake", lake]),
        ("bundle", ["model", "bundle", "--lake", lake, "--alias", "champion", "--out",
                    str(out / "bundle"), "--overwrite"]),
        ("verify bundle", ["model", "verify-bundle", str(out / "bundle"), "--lake", lake]),
        ("score", ["score", "--lake", lake, "--alias", "champion", "--landing",
                   str(out / "landing" / "mobile")]),
        ("monitor", ["monitor", "--lake", lake]),
        ("lineage", ["lineage", "latest", "--lake", lake]),
    ]  # fmt: skip


#: The smallest cohort whose splits leave the teacher and students something to validate on.
MIN_PATIENTS = 20

#: Steps whose non-zero exit is an answer, not a failure (the summary reports it).
_ANSWERS = {"promote": "promotion refused by the gates", "monitor": "drift past a threshold"}


@app.callback()
def demo(
    ctx: typer.Context,
    out: Path = typer.Option(Path("demo"), "--out", help="Demo folder (cohort, lake, outputs)."),
    patients: int = typer.Option(40, "--patients", help="Cohort size."),
    seed: int = typer.Option(7, "--seed", help="Cohort seed."),
) -> None:
    """Run the whole chain on a small cohort (about 6 minutes on 2 cores) and summarise it."""
    if ctx.invoked_subcommand is not None:
        return
    if patients < MIN_PATIENTS:
        raise UserError(
            f"--patients {patients}: too few for the train/validation/test splits",
            f"give at least {MIN_PATIENTS} (default 40)",
        )
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: a file, not a folder", "give a new or a demo folder")
    exe = shutil.which("cardiolake") or str(Path(sys.executable).parent / "cardiolake")
    timings: dict[str, float] = {}
    notes: dict[str, str] = {}
    start_all = time.perf_counter()
    alias = "champion"
    for label, planned in steps(out, patients, seed):
        args = [alias if a == "champion" else a for a in planned]
        console.rule(f"[bold]{label}[/]: cardiolake {' '.join(args)}")
        start = time.perf_counter()
        code = subprocess.run([exe, *args], check=False).returncode
        timings[label] = time.perf_counter() - start
        if code != 0 and label == "promote":
            # A demo cohort's validation split may hold no urgent patient (AUC undefined) and a
            # busy laptop may miss the latency gate: the refusal above is the real answer, and
            # the demo then promotes with the gates disabled (recorded on the version) so the
            # rest of the chain runs on a champion, as a user overriding the gates would.
            override = [*args, "--mode", "disabled"]
            console.rule(f"[bold]promote (demo override)[/]: cardiolake {' '.join(override)}")
            code = subprocess.run([exe, *override], check=False).returncode
            notes[label] = f"{_ANSWERS[label]}; promoted with gates disabled (demo override)"
            if code != 0:  # still no champion: bundle and score the challenger
                alias = "challenger"
        elif code != 0 and label in _ANSWERS:
            notes[label] = _ANSWERS[label]
        elif code != 0:
            err.print(f"[red]error:[/] step '{label}' failed (exit {code})")
            raise typer.Exit(code)
        if label == "verify bundle":
            record = sorted((out / "landing" / "mobile").glob("*.hea"))[0].with_suffix("")
            script = out / "bundle" / "score_recording.py"
            console.rule(f"[bold]device[/]: python {script} {record}")
            subprocess.run([sys.executable, str(script), str(record)], check=False)
    timings["total"] = time.perf_counter() - start_all
    print_summary(out, timings, notes)


def _rows(lake: Path) -> dict[str, int]:
    from deltalake import DeltaTable

    from cardiolake import tables

    out = {}
    for t in tables.ALL_TABLES:
        path = t.path(lake)
        if DeltaTable.is_deltatable(str(path)):
            out[str(t)] = int(DeltaTable(str(path)).to_pyarrow_dataset().count_rows())
    return out


def print_summary(out: Path, timings: dict[str, float] | None = None,
                  notes: dict[str, str] | None = None) -> None:  # fmt: skip
    """One summary of a demo folder: tables, gates, AUCs, model, predictions, drift, places."""
    import mlflow

    from cardiolake import lake as lake_io
    from cardiolake import tables
    from cardiolake.tracking import CHAMPION, DEVICE_MODEL, tracking_uri, ui_command
    from serving.registry import versions
    from serving.scoring import latest_figures

    lake = (out / "lake").resolve()
    console.rule("[bold]demo summary[/]")
    rows = Table(title="rows per table")
    rows.add_column("table")
    rows.add_column("rows", justify="right")
    for name, n in _rows(lake).items():
        rows.add_row(name, f"{n:,}")
    console.print(rows)
    if lake_io.table_exists(tables.QUARANTINE, lake_root=lake):
        q = lake_io.read_pandas(tables.QUARANTINE, lake_root=lake, columns=["stage", "reason"])
        gates = q[q["stage"].str.startswith("gate")]
        by_gate = ", ".join(f"{k} {v}" for k, v in gates["stage"].value_counts().items())
        console.print(f"quarantine: {len(q)} inputs ({len(gates)} held back by the quality "
                      f"gates: {by_gate})")  # fmt: skip
    metrics_path = out / "evaluation" / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        aucs = Table(title=f"AUC, urgent ({metrics.get('patients')} labelled demo patients, "
                           "in-sample)")  # fmt: skip
        for col in ("model", "input", "AUC"):
            aucs.add_column(col)
        for r in metrics["results"]:
            if r["model"] in ("teacher", "student", "student_labels_only") and r["input"] in (
                "12lead",
                "limb:I",
                "limb:I,II,III,aVR,aVL,aVF",
                "mobile",
            ):
                aucs.add_row(r["model"], r["input"], f"{r['auc']:.3f}")
        console.print(aucs)
    mlflow.set_tracking_uri(tracking_uri(lake))
    mlflow.set_registry_uri(tracking_uri(lake))
    device = [v for v in versions() if v["figures"]]
    champion = next((v for v in device if CHAMPION in v["aliases"]), None)
    shown = champion or (device[-1] if device else None)
    if shown is not None:
        f = shown["figures"]
        console.print(
            f"model {DEVICE_MODEL} v{shown['version']} ({', '.join(shown['aliases']) or 'no alias'}"
            f"): validation AUC {f.get('validation_auc', float('nan')):.3f}, p95 "
            f"{f.get('p95_ms', float('nan')):.3f} ms, {f.get('size_kb', float('nan')):.0f} KB "
            f"({f.get('shipped')}), gates: {shown['decision'] or '-'}")  # fmt: skip
    if lake_io.table_exists(tables.PREDICTIONS, lake_root=lake):
        p = lake_io.read_pandas(tables.PREDICTIONS, lake_root=lake, columns=["decision"])
        console.print(f"predictions written: {len(p)} ({int((p['decision'] == 'urgent').sum())}"
                      " urgent)")  # fmt: skip
    figures = latest_figures(lake)
    if not figures.empty:
        alerts = sorted(set(figures.loc[figures["alert"], "metric"]))
        console.print(f"drift: {'ALERT on ' + ', '.join(alerts) if alerts else 'no alert'} "
                      f"(report {figures['report_png'].iloc[0]})")  # fmt: skip
    for label, note in (notes or {}).items():
        console.print(f"note: {label}: {note}")
    places = Table(title="where to look")
    places.add_column("what")
    places.add_column("where")
    places.add_row("MLflow UI", " ".join(ui_command(lake, None)))
    places.add_row("Data Docs", str(lake / "_gx" / "data_docs" / "index.html"))
    places.add_row("ECG strip + echo keyframes", str(out / "patient_1.png"))
    places.add_row("ROC / calibration", str(out / "evaluation"))
    places.add_row("device bundle", f"{out / 'bundle'} (python {out / 'bundle'}/score_recording"
                                    ".py RECORD)")  # fmt: skip
    places.add_row("drift reports", str(lake / "_monitoring"))
    console.print(places)
    if timings:
        console.print("step times: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))


@app.command()
def summary(
    out: Path = typer.Option(Path("demo"), "--out", help="A finished demo folder."),
) -> None:
    """Print the summary of a finished demo folder."""
    if not (out / "lake").is_dir():
        raise UserError(f"{out} holds no demo lake", f"run `cardiolake demo --out {out}`")
    print_summary(out)
