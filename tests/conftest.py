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


@pytest.fixture(autouse=True)
def _no_leaked_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without ``MLFLOW_TRACKING_URI``.

    ``mlflow.set_tracking_uri`` exports it, so a command run in-process by an earlier test
    (``cardiolake model …`` points MLflow at its lake) would otherwise send a later test's
    commands to that lake's store. Tests that need a store name it themselves.
    """
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
