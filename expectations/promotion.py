"""Ingestion with its quality gates: bronze, silver, silver gates, alignment, gold gates, examples.

Rows a silver suite fails are quarantined under the expectation's name (stage
``gate_<table>``) and gold, like the feature tables, never reads them. The alignment gate
then sits between the per-beat alignment and the example tables built from it, so training
reads only beats whose timing passed. The CLI, the Databricks job (one task per step) and the
tests run this same sequence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pyspark.sql import SparkSession

from cardiolake import tables
from expectations.runner import GateReport, run_gates
from expectations.settings import GateSettings
from pipelines.accounting import JobAccountant
from pipelines.job import GOLD_STEPS, STAGES, IngestSummary, Stage, StepCallback, run_ingest
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
            gold gates when the alignment does (``gold`` is alignment then examples).
        gated: False runs the stages without any gate (gold then promotes every silver row).
        data_docs: build Great Expectations Data Docs under ``lake_root/_gx/data_docs``.
        on_step: called with a short description before each step.
        now: the run's timestamp (default: now, UTC).

    Returns:
        The ingestion summary and the gate reports.
    """
    now = now or datetime.now(UTC)
    step = on_step or (lambda _: None)
    wanted = {s for s in stages if s != "gold"} | (set(GOLD_STEPS) if "gold" in stages else set())
    early = tuple(s for s in ("bronze", "silver") if s in wanted)
    result = GatedIngest(run_ingest(spark, settings, stages=early, on_step=step, now=now))
    run_id = result.summary.run_id

    def more(stage: Stage) -> None:
        later = run_ingest(spark, settings, stages=(stage,), on_step=step, now=now, run_id=run_id)
        result.summary.rows_added.update(later.rows_added)
        result.summary.add_steps(later.steps)

    def gate(layer: str) -> None:
        name = f"validate: {layer} quality gates"
        step(name)
        accountant = JobAccountant(spark, settings.lake_root)
        with accountant.step(name):
            report = run_gates(
                spark,
                settings.lake_root,
                layer=layer,
                settings=gate_settings,
                data_docs=data_docs,
                now=now,
            )
        result.summary.add_steps(accountant.as_dict())
        result.reports.append(report)
        result.summary.add_quarantine(f"gates_{layer}", report.quarantined)

    if gated and "silver" in wanted:
        gate("silver")
    if "alignment" in wanted:
        more("alignment")
        if gated:
            gate("gold")
    if "examples" in wanted:
        more("examples")
    logger.info("run %s: gates held back rows of %s", result.summary.run_id, result.blocked())
    return result
