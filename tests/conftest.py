"""Shared pytest configuration: fixture plugins and automatic markers."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.fixtures.spark", "tests.fixtures.cohort", "tests.fixtures.trained"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests without a marker are unit tests."""
    known = {"spark", "integration", "benchmark", "gpu"}
    for item in items:
        if not any(m.name in known for m in item.iter_markers()):
            item.add_marker(pytest.mark.unit)
