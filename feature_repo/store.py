"""Build a Feast ``FeatureStore`` over a lake, and the operations the CLI and training use.

The checked-in ``feature_store.yaml`` stays tiny (project, provider, online store type).
At runtime :func:`open_store` writes a resolved copy to ``lake_root/_feast/feature_store.yaml``
with absolute registry and online-store paths (SQLite), or the Redis connection string, so
the same definitions serve any lake.

Example:
    >>> cfg = FeatureSettings(lake_root=Path("lake"))
    >>> store = open_store(cfg)
    >>> apply(store, cfg)
    >>> materialize(store)
    >>> get_online(store, ["3f2a..."])
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import yaml
from feast import FeatureService, FeatureStore, FeatureView, FileSource
from feast.data_format import ParquetFormat
from feast.feature_view_projection import FeatureViewProjection
from feast.repo_config import load_repo_config

from cardiolake.tables import Table
from feature_repo.entities import patient
from feature_repo.feature_services import FEATURE_SERVICES
from feature_repo.feature_views import FEATURE_VIEWS
from feature_repo.snapshot import (
    Snapshot,
    build_feature_tables,
    export_snapshots,
)
from feature_repo.sources import SOURCES

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

OnlineKind = Literal["sqlite", "redis"]
#: The checked-in repository folder (definitions and the template ``feature_store.yaml``).
REPO_DIR = Path(__file__).resolve().parent
#: Tag naming the pinned Delta version a view's snapshot holds.
VERSION_TAG = "delta_version"
#: Tag naming the encoder version an embedding view serves.
ENCODER_TAG = "encoder_version"
#: Where materialization starts when no start is given (before any synthetic or real data).
EPOCH = datetime(1970, 1, 2, tzinfo=UTC)
#: Beside ``registry.db``: the snapshot each view reads, so Feast's own CLI loading
#: ``feature_repo/definitions.py`` pins the views exactly as ``apply`` registered them.
PINS_FILE = "pins.json"


@dataclass(frozen=True)
class FeatureSettings:
    """Where the feature store lives and which online store it serves from.

    Attributes:
        lake_root: the lake root; Feast's registry, SQLite file and snapshots go under
            ``lake_root/_feast``.
        online: ``sqlite`` (default, a file beside the registry) or ``redis``.
        redis_url: ``host:port[,db=N,...]`` of the Redis server when ``online="redis"``.
        project: the Feast project name.
    """

    lake_root: Path
    online: OnlineKind = "sqlite"
    redis_url: str = "localhost:6379"
    project: str = "cardiolake"

    @property
    def feast_dir(self) -> Path:
        """The runtime repo folder ``lake_root/_feast`` (absolute)."""
        return Path(self.lake_root).resolve() / "_feast"


def write_config(settings: FeatureSettings) -> Path:
    """Write the resolved ``feature_store.yaml`` under ``lake_root/_feast``; returns its path.

    Raises:
        ValueError: an unknown online store kind.
    """
    template = yaml.safe_load((REPO_DIR / "feature_store.yaml").read_text())
    folder = settings.feast_dir
    folder.mkdir(parents=True, exist_ok=True)
    template["project"] = settings.project
    template["registry"] = {"path": str(folder / "registry.db"), "cache_ttl_seconds": 0}
    template["offline_store"] = {"type": "file"}
    if settings.online == "sqlite":
        template["online_store"] = {"type": "sqlite", "path": str(folder / "online.db")}
    elif settings.online == "redis":
        template["online_store"] = {
            "type": "redis",
            "connection_string": settings.redis_url,
        }
    else:
        raise ValueError(f"online store must be sqlite or redis, got {settings.online!r}")
    path = folder / f"feature_store.{settings.online}.yaml"
    path.write_text(yaml.safe_dump(template, sort_keys=False))
    return path


def open_store(settings: FeatureSettings) -> FeatureStore:
    """A ``FeatureStore`` for the lake with the configured online store.

    Args:
        settings: the store settings.

    Returns:
        The store; relative source paths resolve against ``lake_root/_feast``.
    """
    path = write_config(settings)
    config = load_repo_config(settings.feast_dir, path)
    return FeatureStore(repo_path=str(settings.feast_dir), config=config)


def pin(snapshots: dict[Table, Snapshot]) -> list[FeatureView]:
    """Copies of the feature views reading the given snapshots, the versions in their tags.

    Args:
        snapshots: a snapshot of every table a view reads.

    Returns:
        The views, in :data:`~feature_repo.feature_views.FEATURE_VIEWS` order.

    Raises:
        KeyError: a view's table has no snapshot.
    """
    by_source = {src.name: table for table, src in SOURCES.items()}
    pinned = []
    # one source object per table: views sharing a source share its pinned copy (Feast
    # rejects two distinct sources of one name in a repository)
    sources: dict[str, FileSource] = {}
    for view in FEATURE_VIEWS:
        template = view.batch_source
        assert isinstance(template, FileSource), f"{view.name} must read a FileSource"
        snap = snapshots[by_source[template.name]]
        if template.name not in sources:
            sources[template.name] = FileSource(
                name=template.name,
                path=str(snap.path),
                file_format=ParquetFormat(),
                timestamp_field=template.timestamp_field,
                field_mapping=dict(template.field_mapping),
                description=template.description,
                tags={**template.tags, VERSION_TAG: snap.tag},
            )
        source = sources[template.name]
        fv = copy.copy(view)
        fv.batch_source = source
        # the projection carries the source too (the registry rebuilds it from the pinned one)
        fv.projection = FeatureViewProjection.from_feature_view_definition(fv)
        fv.tags = {**view.tags, VERSION_TAG: snap.tag}
        if snap.model_version is not None:
            fv.tags[ENCODER_TAG] = snap.model_version
        pinned.append(fv)
    return pinned


def write_pins(feast_dir: Path, snapshots: dict[Table, Snapshot]) -> Path:
    """Record the snapshot every view reads in ``feast_dir/pins.json``; returns its path.

    Args:
        feast_dir: the folder holding the registry the views were applied to.
        snapshots: the snapshot of every feature table.
    """
    pins = {
        str(table): {
            "version": snap.version,
            "path": str(snap.path),
            "rows": snap.rows,
            "model_version": snap.model_version,
        }
        for table, snap in snapshots.items()
    }
    path = Path(feast_dir) / PINS_FILE
    path.write_text(json.dumps(pins, indent=1))
    return path


def read_pins(feast_dir: Path) -> dict[Table, Snapshot] | None:
    """The snapshots :func:`apply` last registered beside ``feast_dir/registry.db``.

    Args:
        feast_dir: the folder holding the registry.

    Returns:
        The snapshot of every feature table, or None when nothing was applied there.
    """
    from cardiolake.tables import get_table

    path = Path(feast_dir) / PINS_FILE
    if not path.is_file():
        return None
    pins = json.loads(path.read_text())
    return {
        get_table(name): Snapshot(
            table=get_table(name),
            version=pin["version"],
            path=Path(pin["path"]),
            rows=pin["rows"],
            model_version=pin["model_version"],
        )
        for name, pin in pins.items()
    }


def apply(
    store: FeatureStore,
    settings: FeatureSettings,
    *,
    build: bool = True,
    spark: SparkSession | None = None,
    versions: dict[Table, int] | None = None,
    encoders: dict[Table, str] | None = None,
) -> dict[Table, Snapshot]:
    """Build the feature tables, snapshot pinned versions and register every definition.

    Args:
        store: the store.
        settings: its settings (the lake root).
        build: recompute ``labs_features`` and ``ecg_measurements`` from silver first.
        spark: optional session to write the feature tables through Spark.
        versions: versions to pin instead of the latest.
        encoders: the encoder version each embedding view serves (``name/N``; default: the
            newest written).

    Returns:
        The snapshot each view reads.
    """
    if build:
        built = build_feature_tables(settings.lake_root, spark=spark)
        versions = {**built, **(versions or {})}
    snapshots = export_snapshots(settings.lake_root, versions=versions, encoders=encoders)
    store.apply([patient, *pin(snapshots), *FEATURE_SERVICES])
    write_pins(settings.feast_dir, snapshots)
    for table, snap in snapshots.items():
        logger.info("feast reads %s version %s (%d rows)", table, snap.tag, snap.rows)
    return snapshots


def materialize(
    store: FeatureStore,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    views: list[str] | None = None,
) -> None:
    """Load the latest row per patient of each view into the online store.

    Args:
        store: the store (after :func:`apply`).
        start: earliest event time to load; default :data:`EPOCH`.
        end: latest event time; default now (plus a minute for clock skew).
        views: view names; None for every view.
    """
    end = end or datetime.now(UTC) + timedelta(minutes=1)
    store.materialize(start or EPOCH, end, feature_views=views)


def get_online(
    store: FeatureStore,
    patient_keys: list[str],
    *,
    features: str | list[str] = "teacher_training",
) -> pd.DataFrame:
    """Online features of some patients.

    Args:
        store: the store.
        patient_keys: pseudonymous keys.
        features: a feature service name or ``view:feature`` references.

    Returns:
        One row per key: ``patient_key`` and the features (None where absent).
    """
    refs: FeatureService | list[str]
    refs = store.get_feature_service(features) if isinstance(features, str) else features
    rows = [{"patient_key": key} for key in patient_keys]
    return store.get_online_features(features=refs, entity_rows=rows).to_df()


def training_set(
    store: FeatureStore,
    labels: pd.DataFrame,
    *,
    features: str | list[str] = "teacher_training",
    event_time: str = "label_time",
) -> pd.DataFrame:
    """Point-in-time join of features onto label rows: no feature later than the label.

    Args:
        store: the store.
        labels: label rows with ``patient_key`` and the event-time column; every other
            column (triage_urgent, findings, ...) is carried through.
        features: a feature service name or ``view:feature`` references.
        event_time: the label column used as the join's event time.

    Returns:
        The label rows with ``event_timestamp`` and the features as of that time.
    """
    entity_df = labels.rename(columns={event_time: "event_timestamp"}).copy()
    entity_df["event_timestamp"] = pd.to_datetime(entity_df["event_timestamp"], utc=True)
    entity_df[_ROW] = range(len(entity_df))
    refs: Any = store.get_feature_service(features) if isinstance(features, str) else features
    out = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
    if len(out) != len(entity_df):
        # Feast's file offline store returns no rows at all when one view has no feature row at
        # or before any entity's time (every ECG of a small cohort taken before its echo, say):
        # join view by view and keep every entity row, that view's features null.
        out = entity_df
        keys = entity_df[[_ROW, "patient_key", "event_timestamp"]]
        for view_refs in _refs_by_view(store, features).values():
            part = store.get_historical_features(entity_df=keys, features=view_refs).to_df()
            cols = [ref.split(":", 1)[1] for ref in view_refs]
            out = out.merge(part[[_ROW, *cols]], on=_ROW, how="left")
        logger.info("training set joined view by view (a view had no row before any entity)")
    out = out.drop(columns=[_ROW])
    return out.sort_values(["patient_key", "event_timestamp"]).reset_index(drop=True)


#: Entity row id carried through Feast's join (its output order is not the input's).
_ROW = "_entity_row"


def _refs_by_view(store: FeatureStore, features: str | list[str]) -> dict[str, list[str]]:
    """``view:feature`` references of a feature service (or a list of them), by view."""
    if isinstance(features, str):
        service = store.get_feature_service(features)
        refs = [f"{p.name_to_use()}:{f.name}"  # type: ignore[no-untyped-call]
                for p in service.feature_view_projections for f in p.features]  # fmt: skip
    else:
        refs = list(features)
    grouped: dict[str, list[str]] = {}
    for ref in refs:
        grouped.setdefault(ref.split(":", 1)[0], []).append(ref)
    return grouped
