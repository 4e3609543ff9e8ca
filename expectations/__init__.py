"""Great Expectations quality gates on the silver and gold tables.

Each gated table has a suite (:mod:`expectations.suites`) checked on per-row derived columns
(:mod:`expectations.derived`); :func:`run_gates` validates them through checkpoints, writes
failing rows to ``quarantine`` with the expectation's name, and builds Data Docs under
``lake_root/_gx/data_docs``. A table whose suite fails must not be promoted.

Example:
    >>> report = run_gates(spark, Path("lake"), layer="silver", settings=GateSettings())
    >>> report.blocked()
    []
"""

from expectations.runner import (
    ExpectationOutcome,
    GateReport,
    GateRunner,
    SuiteOutcome,
    gated_tables,
    run_gates,
)
from expectations.settings import GateSettings
from expectations.suites import SUITE_BUILDERS, Check, SuiteSpec

__all__ = [
    "SUITE_BUILDERS",
    "Check",
    "ExpectationOutcome",
    "GateReport",
    "GateRunner",
    "GateSettings",
    "SuiteOutcome",
    "SuiteSpec",
    "gated_tables",
    "run_gates",
]
