"""Smoke test of ``benchmarks/deid.py`` at a tiny size (the real numbers are its default run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.test_benchmark_smoke import run_benchmark


@pytest.mark.integration
def test_deid_benchmark_tiny(tmp_path: Path) -> None:
    report = run_benchmark("deid.py", "--notes", "12", out=tmp_path / "deid.json")

    assert report["benchmark"] == "deid" and report["notes"] == 12
    rows = {r["scrubber"]: r for r in report["results"]}
    assert set(rows) == {"rules", "philter", "chosen"}
    for row in rows.values():
        assert 0.0 <= row["token_recall"] <= 1.0 and 0.0 <= row["token_precision"] <= 1.0
        assert row["notes_per_s"] > 0
    # the chosen scrubber is at least as good as the rules it replaced, on the same notes
    assert rows["chosen"]["entity_recall"] >= rows["rules"]["entity_recall"]
    assert rows["chosen"]["entity_recall"] >= 0.95
