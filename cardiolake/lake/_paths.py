"""Where a table lives: its URI under the lake root and the filesystem holding it."""

from __future__ import annotations

import os
from pathlib import Path

from pyarrow import fs as pafs

from cardiolake.tables import Table, get_table

LakeRoot = str | os.PathLike[str]


def is_uri(location: str) -> bool:
    """Whether a location is a URI with a scheme (``s3://…``) rather than a local path."""
    return "://" in location


def table_uri(table: Table | str, lake_root: LakeRoot) -> str:
    """The location of a table: ``lake_root/layer/name`` (an absolute local path or a URI).

    Args:
        table: a :class:`~cardiolake.tables.Table` or a reference ``get_table`` accepts.
        lake_root: the lake's root folder or URI.

    Returns:
        The table's location as deltalake and Spark accept it.
    """
    ref = get_table(table)
    return f"{root_location(lake_root)}/{ref.layer}/{ref.name}"


def root_location(lake_root: LakeRoot) -> str:
    """The lake root as an absolute local path or a URI, without a trailing slash."""
    root = os.fspath(lake_root)
    if is_uri(root):
        return root.rstrip("/")
    return str(Path(root).expanduser().resolve())


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The Arrow filesystem holding a location and the location's path inside it."""
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)  # type: ignore[no-any-return]
    return pafs.LocalFileSystem(), location
