"""``cardiolake model``: export the student, promote it through gates, bundle it for devices.

``export`` runs in the training environment (it needs PyTorch); everything else needs only
MLflow and onnxruntime and runs here, against the lake's registry (or ``$MLFLOW_TRACKING_URI``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cardiolake.cli.errors import UserError, require_dir
from cardiolake.config import resolve_lake
from cardiolake.tracking import CHALLENGER, CHAMPION, DEVICE_MODEL, TRACKING_ENV, tracking_uri

app = typer.Typer(
    help="Export, promote, roll back and bundle the device model (cardiolake-student).",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

_LAKE = typer.Option(None, "--lake", help="Lake root \\[default: $CARDIOLAKE_LAKE or ./lake].")


def _connect(lake: Path | None) -> Path:
    """Point MLflow at the lake's store (or $MLFLOW_TRACKING_URI); returns the lake root."""
    import mlflow

    root = resolve_lake(lake)
    uri = tracking_uri(root, os.environ.get(TRACKING_ENV))
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise UserError(
            f"no MLflow store at {uri}",
            "train a student (`cardiolake train student`) and `cardiolake model export` first",
        )
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return root


@app.command()
def export(
    lake: Path = _LAKE,
    student_run: str = typer.Option(
        None, "--student-run", help="Student run to export \\[default: newest distilled]."
    ),
    config: Path = typer.Option(None, "--config", help="YAML file with an 'export:' section."),
    set_: list[str] = typer.Option(None, "--set", help="Override a setting, e.g. opset=21."),
    python: Path = typer.Option(None, "--python", help="The training environment's python."),
) -> None:
    """Export the student to ONNX (fp32 + static int8), check parity, AUC, latency; register.

    The new version of cardiolake-student gets the alias 'challenger'.
    """
    from cardiolake.cli.train import launch

    sets = list(set_ or []) + ([f"student_run_id={student_run}"] if student_run else [])
    summary = launch("export", lake=lake, config=config, sets=sets, fresh=False, processes=None,
                     python=python, module="serving")  # fmt: skip
    report = summary["report"]
    assert isinstance(report, dict)
    table = Table(title=f"{DEVICE_MODEL} v{summary['version']} (challenger)")
    for col in ("input", "rows", "AUC fp32", "AUC int8", "max |onnx - torch|"):
        table.add_column(col)
    for name, entry in report["lead_sets"].items():
        table.add_row(f"{name} lead(s)" if name.isdigit() else name, str(entry["rows"]),
                      f"{entry['auc_fp32']:.3f}", f"{entry['auc_int8']:.3f}",
                      f"{entry['parity_max_abs']:.1e}")  # fmt: skip
    console.print(table)
    lat = report["latency"]
    for precision in ("fp32", "int8", "torch"):
        cells = [f"{n}-lead p50 {lat[f'{precision}_{n}lead']['p50_ms']:.3f} / p95 "
                 f"{lat[f'{precision}_{n}lead']['p95_ms']:.3f} ms" for n in (1, 6)
                 if f"{precision}_{n}lead" in lat]  # fmt: skip
        size = report["size_bytes"].get(precision)
        console.print(f"{precision:>5}: {'; '.join(cells)}"
                      + (f"; {size / 1024:.1f} KB" if size else ""))  # fmt: skip
    console.print(f"validation AUC {report['validation_auc']:.3f}; shipped: {summary['shipped']}")
    console.print(f"next: cardiolake model promote --lake {resolve_lake(lake)}")


@app.command()
def promote(
    lake: Path = _LAKE,
    version: str = typer.Option(CHALLENGER, "--version", help="Version number or alias."),
    mode: str = typer.Option("enforced", "--mode", help="enforced | dry-run | disabled."),
    config: Path = typer.Option(None, "--config", help="YAML file with a 'promote:' section."),
    set_: list[str] = typer.Option(
        None, "--set", help="Override a gate, e.g. max_p95_ms=2 (repeatable)."
    ),
) -> None:
    """Run the gates (validation AUC vs champion, parity, p95 latency, size); move 'champion'.

    Every gate's result is recorded on the version as a tag. Exit code 1 when an enforced
    promotion is refused.
    """
    from serving.registry import PromotionError
    from serving.registry import promote as run_promote
    from serving.settings import GateMode, PromotionGates
    from training.settings import load_settings

    _connect(lake)
    try:
        overrides = {k: v for item in set_ or [] for k, v in [_parse(item)]}
        gates = load_settings(PromotionGates, config, "promote", **overrides, mode=GateMode(mode))
        decision = run_promote(version, gates)
    except ValueError as exc:
        raise UserError(f"invalid gate settings: {exc}", "fix --set or --config") from exc
    except PromotionError as exc:
        raise UserError(str(exc), "see `cardiolake model list`") from exc
    table = Table(title=f"{DEVICE_MODEL} v{decision.version} gates ({decision.mode.value})")
    table.add_column("gate")
    table.add_column("result")
    table.add_column("detail")
    for gate in decision.gates:
        colour = {"pass": "green", "FAIL": "red"}.get(gate.verdict, "yellow")
        table.add_row(gate.name, f"[{colour}]{gate.verdict}[/]", gate.detail)
    console.print(table)
    before = f"v{decision.champion_before}" if decision.champion_before else "none"
    if decision.promoted:
        console.print(f"[green]champion -> v{decision.version}[/] (was {before})")
    elif decision.mode is GateMode.DRY_RUN:
        console.print(f"dry run: champion stays {before}; the gates would "
                      f"{'pass' if decision.passed else 'refuse'} v{decision.version}")  # fmt: skip
    else:
        console.print(f"[red]refused[/]: champion stays {before}")
        raise typer.Exit(1)


def _parse(item: str) -> tuple[str, object]:
    import yaml

    key, sep, raw = item.partition("=")
    if not sep:
        raise ValueError(f"--set expects key=value, got {item!r}")
    return key, yaml.safe_load(raw)


@app.command()
def rollback(lake: Path = _LAKE) -> None:
    """Move 'champion' back to the version it replaced."""
    from serving.registry import PromotionError
    from serving.registry import rollback as run_rollback

    _connect(lake)
    try:
        was, now = run_rollback()
    except PromotionError as exc:
        raise UserError(str(exc), "see `cardiolake model list`") from exc
    console.print(f"champion -> v{now} (rolled back from v{was})")


@app.command(name="list")
def list_(
    lake: Path = _LAKE,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Versions of cardiolake-student with aliases, export figures and gate results."""
    from serving.registry import versions

    _connect(lake)
    rows = versions()
    if as_json:
        json.dump(rows, sys.stdout, indent=2, default=str)
        print()
        return
    if not rows:
        console.print(f"no {DEVICE_MODEL} versions yet: run `cardiolake model export`")
        return
    table = Table(title=DEVICE_MODEL)
    for col in ("v", "aliases", "created (UTC)", "val AUC", "p95 ms", "KB", "ships", "gates",
                "decision"):  # fmt: skip
        table.add_column(col, overflow="fold")
    for r in rows:
        f = r["figures"]
        verdicts = {k: v.split(":")[0] for k, v in r["gates"].items()}
        failed = sorted(k for k, v in verdicts.items() if v == "FAIL")
        gates = (f"FAIL {', '.join(failed)}" if failed else
                 f"{len(verdicts)} {'skipped' if 'skipped' in verdicts.values() else 'pass'}"
                 if verdicts else "-")  # fmt: skip
        table.add_row(
            r["version"], ", ".join(r["aliases"]), f"{r['created']:%Y-%m-%d %H:%M}",
            _fmt(f.get("validation_auc"), ".3f"), _fmt(f.get("p95_ms"), ".3f"),
            _fmt(f.get("size_kb"), ".0f"), str(f.get("shipped", "")), gates or "-",
            r["decision"].split(" at ")[0] or "-",
        )  # fmt: skip
    console.print(table)
    console.print("gate details: cardiolake model list --json")


def _fmt(value: object, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


@app.command()
def bundle(
    lake: Path = _LAKE,
    alias: str = typer.Option(CHAMPION, "--alias", help="Alias or version number to bundle."),
    out: Path = typer.Option(..., "--out", help="Bundle folder (created; must be empty)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out."),
) -> None:
    """Write a device bundle: fp32 + int8 models, preprocessing spec, script, SHA-256 manifest."""
    from serving.bundle import SCRIPT, write_bundle
    from serving.registry import PromotionError

    _connect(lake)
    try:
        folder = write_bundle(alias, out, overwrite=overwrite)
    except PromotionError as exc:
        raise UserError(str(exc), "see `cardiolake model list`") from exc
    except FileExistsError as exc:
        raise UserError(str(exc), "pick an empty --out or pass --overwrite") from exc
    manifest = json.loads((folder / "manifest.json").read_text())
    console.print(f"bundle of {DEVICE_MODEL} v{manifest['version']} ({alias}) at {folder}")
    for name in sorted(manifest["files"]):
        console.print(f"  {name}  {manifest['files'][name][:16]}…")
    console.print(
        f"ships {manifest['shipped']}; on a device: "
        f"python {folder / SCRIPT} RECORD  (RECORD.hea + .dat, 1-6 limb leads)"
    )


@app.command(name="verify-bundle")
def verify_bundle(
    folder: Path = typer.Argument(..., help="Bundle folder."),
    lake: Path = typer.Option(
        None, "--lake", help="Also check the models against this lake's registry."
    ),
) -> None:
    """Check every file against the manifest (exit 1 on any changed, missing or extra file)."""
    from serving.bundle import verify_bundle as run_verify

    require_dir(
        folder, option="bundle", fix="give the folder `cardiolake model bundle --out` wrote"
    )
    if lake is not None:
        _connect(lake)
    problems = run_verify(folder, registry=lake is not None)
    if problems:
        for problem in problems:
            err.print(f"[red]{problem.kind}[/]: {problem.path}")
        err.print(f"[red]bundle {folder} failed verification ({len(problems)} problem(s))[/]")
        raise typer.Exit(1)
    console.print(f"[green]bundle {folder} verified[/]: every file matches its manifest")
