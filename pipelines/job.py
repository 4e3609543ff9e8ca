"""The ingestion job: landing zone -> bronze -> silver -> gold, with a summary at the end.

Each stage is a function of (spark, settings) that reads the previous stage's Delta tables,
so Databricks can run them as separate tasks (``resources/ingestion_job.yml``) and a local
run can run them in one process. Stages only process what is new, so re-runs add nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from pyspark.sql import SparkSession

from pipelines.accounting import JobAccountant, totals_of
from pipelines.bronze import ingest_files
from pipelines.bronze_tabular import ingest_exports
from pipelines.landing import LandingInventory, scan_landing
from pipelines.settings import IngestSettings
from pipelines.silver_signals import silver_ecg, silver_echo
from pipelines.silver_tabular import known_patients, silver_labels, silver_labs, silver_notes

logger = logging.getLogger(__name__)

Stage = Literal["bronze", "silver", "gold", "alignment", "examples"]
#: The stages a full run goes through; ``gold`` is ``alignment`` then ``examples``, which
#: can also run alone so the alignment gate sits between them.
STAGES: tuple[Stage, ...] = ("bronze", "silver", "gold")
GOLD_STEPS: tuple[Stage, ...] = ("alignment", "examples")
StepCallback = Callable[[str], None]


@dataclass
class IngestSummary:
    """What one ingestion run did."""

    run_id: str
    files_by_format: dict[str, int] = field(default_factory=dict)
    rows_added: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, dict[str, int]] = field(default_factory=dict)  # stage -> reason -> n
    skipped_files: int = 0
    #: step -> seconds, Spark jobs and Delta commits (see :class:`pipelines.accounting.StepCost`)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    totals: dict[str, Any] = field(default_factory=dict)

    def add_steps(self, steps: dict[str, dict[str, Any]]) -> None:
        """Add the measured steps of another part of the run (and recount the totals)."""
        self.steps.update(steps)
        self.totals = totals_of(self.steps)

    def add_quarantine(self, stage: str, counts: dict[str, int]) -> None:
        """Accumulate quarantine counts of one stage."""
        bucket = self.quarantined.setdefault(stage, {})
        for reason, n in counts.items():
            bucket[reason] = bucket.get(reason, 0) + n


def _count_formats(inventory: LandingInventory) -> dict[str, int]:
    counts: dict[str, int] = {}
    for src in [*inventory.records, *inventory.unknown]:
        counts[src.format] = counts.get(src.format, 0) + 1
    return counts


def run_ingest(
    spark: SparkSession,
    settings: IngestSettings,
    *,
    stages: tuple[Stage, ...] = STAGES,
    on_step: StepCallback | None = None,
    now: datetime | None = None,
    run_id: str | None = None,
) -> IngestSummary:
    """Run the ingestion stages over the landing zone.

    Args:
        spark: the session.
        settings: ingestion settings (landing zone, lake root, secret, rates).
        stages: which stages to run (all by default; Databricks runs one per task);
            ``alignment`` and ``examples`` are the two halves of ``gold``.
        on_step: called with a short description before each step (progress display).
        now: the run's timestamp (default: now, UTC).
        run_id: the run's id (default: a new one); steps of one run called separately
            share it.

    Returns:
        Files per format, rows added per table, quarantined inputs per stage and reason, and
        each step's seconds, Spark jobs and Delta commits.

    Raises:
        SecretError: an empty or short pseudonym secret, refused before any file is read.
    """
    # the secret is checked (or the lake's development secret created) before any input
    settings = replace(settings, pseudonym_secret=settings.secret())
    now = now or datetime.now(UTC)
    summary = IngestSummary(run_id=run_id or uuid.uuid4().hex[:12])
    accountant = JobAccountant(spark, settings.lake_root)
    announce = on_step or (lambda _: None)

    def step(name: str) -> Any:
        announce(name)
        return accountant.step(name)

    # the landing zone is scanned once per run, and only by the stages that read it (gold
    # steps called on their own, as the gated job does, read the lake alone)
    inventory = LandingInventory(root=settings.landing)
    if {"bronze", "silver"} & set(stages):
        with accountant.step("scan"):
            inventory = scan_landing(settings.landing)
        summary.files_by_format = _count_formats(inventory)
        logger.info(
            "run %s: %d inputs in %s",
            summary.run_id,
            sum(summary.files_by_format.values()),
            settings.landing,
        )
    kw: dict[str, Any] = {"run_id": summary.run_id, "now": now}

    if "bronze" in stages:
        with step("bronze: files"):
            result = ingest_files(spark, inventory, settings, **kw)
        summary.rows_added.update(result.rows_added)
        summary.skipped_files = result.skipped
        summary.add_quarantine("bronze", result.quarantined)
        with step("bronze: tabular exports"):
            added, bad = ingest_exports(spark, inventory, settings, **kw)
        summary.rows_added.update(added)
        summary.add_quarantine("bronze", bad)
    if "silver" in stages:
        with accountant.step("silver: patients"):
            known = known_patients(spark, inventory, settings)
        for name, fn in (("ecg", silver_ecg), ("echo", silver_echo)):
            with step(f"silver: {name}"):
                n, bad = fn(spark, settings, **kw)
            summary.rows_added[name] = n
            summary.add_quarantine(f"silver_{name}", bad)
        with step("silver: labs"):
            n, bad = silver_labs(spark, settings, known, **kw)
        summary.rows_added["labs"] = n
        summary.add_quarantine("silver_labs", bad)
        with step("silver: notes"):
            n, bad = silver_notes(spark, settings, inventory, **kw)
        summary.rows_added["notes"] = n
        summary.add_quarantine("silver_notes", bad)
        with step("silver: labels"):
            n, bad = silver_labels(spark, settings, **kw)
        summary.rows_added["labels"] = n
        summary.add_quarantine("silver_labels", bad)
    if "gold" in stages or "alignment" in stages:
        from pipelines.gold import build_alignment

        with step("gold: alignment"):
            summary.rows_added["alignment"] = build_alignment(
                spark, settings, run_id=summary.run_id
            )
    if "gold" in stages or "examples" in stages:
        from pipelines.gold import build_examples

        with step("gold: examples"):
            summary.rows_added.update(build_examples(spark, settings, run_id=summary.run_id))
    summary.steps = accountant.as_dict()
    summary.totals = accountant.totals()
    logger.info("run %s done: %s", summary.run_id, summary.rows_added)
    return summary
