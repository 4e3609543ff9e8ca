"""``cardiolake features``: the Feast feature store over the lake (apply, materialize, get)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from cardiolake.config import resolve_lake

if TYPE_CHECKING:
    from feature_repo.store import FeatureSettings

app = typer.Typer(help="Feast feature store: apply, materialize, get.", no_args_is_help=True)
console = Console()

_LAKE = typer.Option(None, "--lake", help="Lake root \\[default: $CARDIOLAKE_LAKE or ./lake].")
_ONLINE = typer.Option("sqlite", "--online", help="Online store: sqlite or redis.")
_REDIS = typer.Option("localhost:6379", "--redis-url", help="Redis host:port[,db=N].")


def _settings(lake: Path | None, online: str, redis_url: str) -> FeatureSettings:
    from feature_repo.store import FeatureSettings

    if online not in ("sqlite", "redis"):
        raise typer.BadParameter(f"--online must be sqlite or redis, got {online!r}")
    return FeatureSettings(lake_root=resolve_lake(lake), online=online, redis_url=redis_url)  # type: ignore[arg-type]


@app.command("apply")
def apply_cmd(
    lake: Path = _LAKE,
    online: str = _ONLINE,
    redis_url: str = _REDIS,
    no_build: bool = typer.Option(
        False, "--no-build", help="Do not recompute the feature tables from silver."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan; write nothing."),
    encoder: list[str] = typer.Option(
        None,
        "--encoder",
        help="Serve this encoder version from an embedding table, TABLE=NAME/N "
        "(e.g. ecg_embedding=cardiolake-ecg-encoder/3; default: the newest written).",
    ),
) -> None:
    """Build feature tables from silver, snapshot pinned Delta versions, register definitions."""
    from feature_repo.feature_services import FEATURE_SERVICES
    from feature_repo.feature_views import FEATURE_VIEWS
    from feature_repo.store import apply, open_store

    settings = _settings(lake, online, redis_url)
    if dry_run:
        console.print(
            f"would apply {len(FEATURE_VIEWS)} views and {len(FEATURE_SERVICES)} services "
            f"over {settings.lake_root} (online: {settings.online})"
        )
        return
    from cardiolake.tables import get_table

    encoders = {}
    for item in encoder or []:
        name, sep, version = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--encoder expects TABLE=NAME/N, got {item!r}")
        encoders[get_table(name)] = version
    snapshots = apply(open_store(settings), settings, build=not no_build, encoders=encoders)
    table = Table(title=f"feature sources under {settings.feast_dir}/snapshots/<table>")
    for col in ("table", "delta version", "encoder", "rows", "snapshot"):
        table.add_column(col, no_wrap=col == "table")
    for t, snap in snapshots.items():
        table.add_row(str(t), snap.tag, snap.model_version or "", f"{snap.rows:,}", snap.path.name)
    console.print(table)


@app.command()
def materialize(
    lake: Path = _LAKE,
    online: str = _ONLINE,
    redis_url: str = _REDIS,
    view: list[str] = typer.Option(None, "--view", help="Only these feature views."),
) -> None:
    """Load the latest features per patient into the online store."""
    from feature_repo.store import materialize as run
    from feature_repo.store import open_store

    settings = _settings(lake, online, redis_url)
    run(open_store(settings), views=list(view) if view else None)
    console.print(f"materialized into {settings.online}")


@app.command()
def get(
    patient: list[str] = typer.Option(..., "--patient", help="Pseudonymous patient key."),
    lake: Path = _LAKE,
    online: str = _ONLINE,
    redis_url: str = _REDIS,
    service: str = typer.Option("teacher_training", "--service", help="Feature service."),
) -> None:
    """Print a patient's online features (from the last materialization)."""
    from feature_repo.store import get_online, open_store

    settings = _settings(lake, online, redis_url)
    frame = get_online(open_store(settings), list(patient), features=service)
    for _, row in frame.iterrows():
        table = Table(title=f"patient {row['patient_key']}")
        table.add_column("feature")
        table.add_column("value")
        for name, value in row.items():
            if name != "patient_key":
                table.add_row(str(name), _short(value))
        console.print(table)


@app.command("training-set")
def training_set_cmd(
    lake: Path = _LAKE,
    service: str = typer.Option("teacher_training", "--service", help="Feature service."),
    entities: str = typer.Option(
        "labels",
        "--entities",
        help="labels: every label row at its label time (features.teacher_training_set); "
        "ecg: every 12-lead ECG at its acquisition time (features.distillation_set).",
    ),  # fmt: skip
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be written."),
) -> None:
    """Point-in-time join of a feature service onto labels or ECGs, written as Delta."""
    from feature_repo.store import open_store
    from feature_repo.training_sets import (
        TRAINING_SET_TABLES,
        write_distillation_set,
        write_training_set,
    )

    if entities not in ("labels", "ecg"):
        console.print(f"[red]error:[/] --entities must be labels or ecg, not {entities!r}")
        raise typer.Exit(2)
    write = write_training_set if entities == "labels" else write_distillation_set
    distillation = "features.distillation_set"

    settings = _settings(lake, "sqlite", "")
    if service not in TRAINING_SET_TABLES:
        console.print(f"[red]error:[/] no training set for service {service!r}; "
                      f"known: {', '.join(TRAINING_SET_TABLES)}")  # fmt: skip
        raise typer.Exit(2)
    if dry_run:
        target = TRAINING_SET_TABLES[service] if entities == "labels" else distillation
        console.print(f"would join {service} onto the {entities} rows into {target} "
                      f"under {settings.lake_root}")  # fmt: skip
        return
    from feast.errors import FeatureServiceNotFoundException

    try:
        written = write(open_store(settings), settings.lake_root, service=service)
    except FeatureServiceNotFoundException:
        console.print(f"[red]error:[/] feature service {service!r} is not registered in "
                      f"{settings.feast_dir}: run `cardiolake features apply` first")  # fmt: skip
        raise typer.Exit(2) from None
    console.print(
        f"{written.table} v{written.version}: {written.rows:,} rows "
        f"({service} as of each {'label' if entities == 'labels' else 'ECG'} time; source "
        f"v{written.examples_version})"
    )


def _short(value: object) -> str:
    if isinstance(value, list | tuple) and len(value) > 6:
        return f"[{', '.join(f'{v:.3g}' for v in value[:6])}, …] ({len(value)})"
    return str(value)
