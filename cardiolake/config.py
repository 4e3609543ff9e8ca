"""Settings loading at the CLI edge: YAML file, then environment, then explicit flags.

Code deeper in the package never reads ``os.environ``; it receives settings objects.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

#: Environment variable naming the lake root (every command also takes ``--lake``).
LAKE_ENV = "CARDIOLAKE_LAKE"
DEFAULT_LAKE = Path("lake")


def load_yaml(path: Path | None, section: str | None = None) -> dict[str, Any]:
    """Read a YAML config file (optionally one top-level section); ``{}`` when no path."""
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    if section is not None:
        data = data.get(section, {}) or {}
    return dict(data)


def build_settings(cls: type[T], config: Path | None, section: str, **overrides: Any) -> T:
    """Build a settings dataclass from a YAML section with explicit overrides on top.

    Args:
        cls: the frozen settings dataclass.
        config: optional YAML file.
        section: top-level key of that file holding this stage's settings.
        **overrides: flag values; ``None`` means "not given" and keeps the file/default.

    Raises:
        ValueError: when the file names a field the dataclass does not have.
    """
    values = load_yaml(config, section)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{config}: unknown {section} settings {sorted(unknown)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name, value in list(values.items()):
        if isinstance(value, list):
            values[name] = tuple(value)
    return cls(**values)


def resolve_lake(lake: Path | None) -> Path:
    """The lake root: ``--lake``, else ``$CARDIOLAKE_LAKE``, else ``./lake`` (made absolute)."""
    root = lake if lake is not None else Path(os.environ.get(LAKE_ENV, DEFAULT_LAKE))
    return root if "://" in str(root) else root.resolve()
