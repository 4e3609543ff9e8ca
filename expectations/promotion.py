"""Ingestion with its quality gates: bronze -> silver -> silver gates -> gold -> gold gates.

The gates sit between silver and gold. Rows a silver suite fails are quarantined under the
expectation's name (stage ``gate_<table>``) and gold, like the feature tables, never reads
them; the gold suites then gate what training reads. The CLI, the Databricks job (one task per
step) and the tests run this same sequence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pyspark.sql import SparkSession

from cardiolake import tables
from expectations.runner import GateReport, run_gates
from expectations.settings import GateSettings
from pipelines.job import STAGES, IngestSummary, Stage, StepCallback, run_ingest
from pipelines.settings import IngestSettings

logger = logging.getLogger(__name__)


@dataclass
class GatedIngest:
    """What one gated ingestion run did.

    Attributes:
        summary: the ingestion summary; gate quarantine counts are under ``gates_<layer>``.
        reports: the gate reports, silver first.
    """

    summary: IngestSummary
    reports: list[GateReport] = field(default_factory=list)

    def blocked(self) -> list[tables.Table]:
        """Tables with rows the gates held back."""
        return [t for r in self.reports for t in r.blocked()]


def ingest_with_gates(
    spark: SparkSession,
    settings: IngestSettings,
    *,
    gate_settings: GateSettings | None = None,
    stages: tuple[Stage, ...] = STAGES,
    gated: bool = True,
    data_docs: bool = True,
    on_step: StepCallback | None = None,
    now: datetime | None = None,
) -> GatedIngest:
    """Run the ingestion stages with the quality gates between silver and gold.

    Args:
        spark: the session.
        settings: ingestion settings.
        gate_settings: the gates' bounds (default :class:`GateSettings`).
        stages: which ingestion stages to run; the silver gates run when silver does, the
            gold gates when gold does.
        gated: False runs the stages without any gate (gold then promotes every silver row).
        data_docs: build Great Expectations Data Docs under ``lake_root/_gx/data_docs``.
        on_step: called with a short description before each step.
        now: the run's timestamp (default: now, UTC).

    Returns:
        The ingestion summary and the gate reports.
    """
    now = now or datetime.now(UTC)
    step = on_step or (lambda _: None)
    early = tuple(s for s in stages if s != "gold")
    result = GatedIngest(run_ingest(spark, settings, stages=early, on_step=step, now=now))

    def gate(layer: str) -> None:
        step(f"validate: {layer} quality gates")
        report = run_gates(
            spark,
            settings.lake_root,
            layer=layer,
            settings=gate_settings,
            data_docs=data_docs,
            now=now,
        )
        result.reports.append(report)
        result.summary.add_quarantine(f"gates_{layer}", report.quarantined)

    if gated and "silver" in stages:
        gate("silver")
    if "gold" in stages:
        gold = run_ingest(spark, settings, stages=("gold",), on_step=step, now=now)
        result.summary.rows_added.update(gold.rows_added)
        if gated:
            gate("gold")
    logger.info("run %s: gates held back rows of %s", result.summary.run_id, result.blocked())
    return result
