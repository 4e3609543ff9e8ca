"""``cardiolake features``: the Feast feature store over the lake (apply, materialize, get)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from cardiolake.cli.errors import UserError, require_applied, require_lake
from cardiolake.config import resolve_lake

if TYPE_CHECKING:
    from feature_repo.store import FeatureSettings

app = typer.Typer(help="Feast feature store: apply, materialize, get.", no_args_is_help=True)
console = Console()

_LAKE = typer.Option(None, "--lake", help="Lake root \\[default: $CARDIOLAKE_LAKE or ./lake].")
_ONLINE = typer.Option("sqlite", "--online", help="Online store: sqlite or redis.")
_REDIS = typer.Option("localhost:6379", "--redis-url", help="Redis host:port[,db=N].")


def _settings(
    lake: Path | None,
    online: str,
    redis_url: str,
    *,
    need: tuple[str, ...] = (),
    applied: bool = True,
) -> FeatureSettings:
    """The store settings, once the lake holds ``need`` and (``applied``) a Feast registry.

    Raises:
        UserError: no lake, a needed table missing, or features never applied.
        typer.BadParameter: an unknown online store.
    """
    from feature_repo.store import FeatureSettings

    if online not in ("sqlite", "redis"):
        raise typer.BadParameter(f"{online!r} is not sqlite or redis", param_hint="--online")
    settings = FeatureSettings(lake_root=resolve_lake(lake), online=online, redis_url=redis_url)  # type: ignore[arg-type]
    require_lake(settings.lake_root, need=need)  # before open_store writes lake/_feast
    if applied:
        require_applied(settings.feast_dir)
    return settings


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

    settings = _settings(lake, online, redis_url, need=() if no_build else _SILVER, applied=False)
    if dry_run:
        console.print(
            f"would apply {len(FEATURE_VIEWS)} views and {len(FEATURE_SERVICES)} services "
            f"over {settings.lake_root} (online: {settings.online})"
        )
        return
    from cardiolake.tables import get_table
    from feature_repo.snapshot import EMBEDDING_TABLES

    encoders = {}
    for item in encoder or []:
        name, sep, version = item.partition("=")
        try:
            ref = get_table(name) if sep and version else None
        except (KeyError, ValueError):
            ref = None
        if ref not in EMBEDDING_TABLES:
            choices = ", ".join(t.name for t in EMBEDDING_TABLES)
            raise typer.BadParameter(
                f"{item!r} is not TABLE=NAME/N with TABLE one of {choices}",
                param_hint="--encoder",
            )
        encoders[ref] = version
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
    from feature_repo.feature_views import FEATURE_VIEWS
    from feature_repo.store import materialize as run
    from feature_repo.store import open_store

    settings = _settings(lake, online, redis_url)
    names = [v.name for v in FEATURE_VIEWS]
    for name in view or []:
        if name not in names:
            raise typer.BadParameter(
                f"{name!r} is not one of {', '.join(names)}", param_hint="--view"
            )
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
    store = open_store(settings)
    services = [s.name for s in store.list_feature_services()]
    if service not in services:
        raise typer.BadParameter(
            f"{service!r} is not one of {', '.join(services)}", param_hint="--service"
        )
    frame = get_online(store, list(patient), features=service)
    values = frame.drop(columns=["patient_key"])
    empty = frame.loc[values.isna().all(axis=1), "patient_key"].tolist()
    if empty:
        raise UserError(
            f"no online features of patient {', '.join(empty)}",
            "check the pseudonymous key (`cardiolake lake tables`, silver.ecg patient_key) "
            f"or run `cardiolake features materialize --online {online}`",
        )
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
        raise typer.BadParameter(f"{entities!r} is not labels or ecg", param_hint="--entities")
    write = write_training_set if entities == "labels" else write_distillation_set
    distillation = "features.distillation_set"

    need = ("gold.examples_labeled",) if entities == "labels" else ()
    settings = _settings(lake, "sqlite", "", need=need)
    if service not in TRAINING_SET_TABLES:
        known = ", ".join(TRAINING_SET_TABLES)
        raise typer.BadParameter(
            f"no training set for {service!r}; known: {known}", param_hint="--service"
        )
    if dry_run:
        target = TRAINING_SET_TABLES[service] if entities == "labels" else distillation
        console.print(f"would join {service} onto the {entities} rows into {target} "
                      f"under {settings.lake_root}")  # fmt: skip
        return
    # a service missing from the registry: Feast's not-found error, answered by cli.main
    written = write(open_store(settings), settings.lake_root, service=service)
    console.print(
        f"{written.table} v{written.version}: {written.rows:,} rows "
        f"({service} as of each {'label' if entities == 'labels' else 'ECG'} time; source "
        f"v{written.examples_version})"
    )


#: The silver tables ``features apply`` builds the feature tables from.
_SILVER = ("silver.labs", "silver.ecg")


def _short(value: object) -> str:
    if isinstance(value, list | tuple) and len(value) > 6:
        return f"[{', '.join(f'{v:.3g}' for v in value[:6])}, …] ({len(value)})"
    return str(value)
