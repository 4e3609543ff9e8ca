"""The definitions Feast's own CLI loads: ``feast plan|apply|materialize-incremental|ui``.

Run from ``feature_repo/``, Feast imports every Python file of the folder as a top-level
module; the definition modules also import each other as ``feature_repo.*``, so each view
would exist twice under two module paths (``ConflictingFeatureViewNames``). ``.feastignore``
therefore hides every module but this one, which re-exports the package's objects once.

The views are pinned to the snapshots ``cardiolake features apply`` last registered in the
registry the CLI uses (``pins.json`` beside ``registry.db``), so ``feast plan`` after
``cardiolake features apply`` reports no change and ``feast apply`` never un-pins a view.
Before any apply the views read their placeholder snapshot folders.
"""

from __future__ import annotations

from pathlib import Path

from feast import FeatureStore, FeatureView
from feast.repo_config import RepoConfig, load_repo_config

from feature_repo.entities import patient
from feature_repo.feature_services import cohort_scoring, teacher_training
from feature_repo.feature_views import FEATURE_VIEWS
from feature_repo.store import pin, read_pins

__all__ = ["patient", "teacher_training", "cohort_scoring", *(v.name for v in FEATURE_VIEWS)]


def _cli_config() -> tuple[Path, RepoConfig] | None:
    """The repository folder and config of the running ``feast`` command, if any."""
    import click

    ctx = click.get_current_context(silent=True)
    obj = getattr(ctx.find_root() if ctx else None, "obj", None) or {}
    if "CHDIR" not in obj or "FS_YAML_FILE" not in obj:
        return None
    return Path(obj["CHDIR"]), load_repo_config(Path(obj["CHDIR"]), Path(obj["FS_YAML_FILE"]))


def _views() -> tuple[FeatureView, ...]:
    cli = _cli_config()
    path = getattr(cli[1].registry, "path", None) if cli else None
    if cli is None or not isinstance(path, str) or "://" in path:
        return FEATURE_VIEWS
    registry = Path(path) if Path(path).is_absolute() else cli[0] / path
    # a fresh clone has no lake yet: Feast creates the registry file, not its folders
    registry.parent.mkdir(parents=True, exist_ok=True)
    pins = read_pins(registry.parent)
    if not pins:
        return FEATURE_VIEWS
    views = pin(pins)
    if registry.is_file():
        # Feast compares materialization intervals too, which only the registry knows: a
        # view registered from the same snapshot keeps them, so `feast plan` after a
        # materialization reports no change (Feast's registry keeps them on apply as well)
        store = FeatureStore(repo_path=str(cli[0]), config=cli[1])
        registered = {fv.name: fv for fv in store.list_feature_views()}
        for view in views:
            old = registered.get(view.name)
            if old is not None and old.batch_source == view.batch_source:
                view.materialization_intervals = list(old.materialization_intervals)
    return tuple(views)


(
    labs_latest,
    labs_window,
    ecg_measurements,
    ecg_embedding,
    echo_embedding,
    fused_embedding,
) = _views()
