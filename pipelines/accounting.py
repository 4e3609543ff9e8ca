"""What each step of an ingestion run cost: wall time, Spark jobs and Delta commits.

A step runs under its own Spark job group, so the status tracker can say afterwards which jobs
it started; commits are counted from the Delta logs' newest versions before and after (a
listing, no log replay), so they are counted the same on the delta-rs and the native path.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from cardiolake import lake

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepCost:
    """One step's cost.

    Attributes:
        seconds: wall time.
        spark_jobs: Spark jobs the step started (None where the session has no status
            tracker, e.g. Spark Connect).
        delta_commits: Delta commits the step made, over every table of the lake.
        tables: the tables it committed to, with how many commits each.
    """

    seconds: float
    spark_jobs: int | None
    delta_commits: int
    tables: dict[str, int] = field(default_factory=dict)


class JobAccountant:
    """Measures the steps of one run (``with accountant.step("silver: ecg"): ...``)."""

    def __init__(self, spark: SparkSession, lake_root: str | os.PathLike[str]) -> None:
        self._spark = spark
        self._lake_root = lake_root
        self._run = uuid.uuid4().hex[:8]
        self.steps: dict[str, StepCost] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Account the work done inside the block to step ``name``."""
        sc = _context(self._spark)
        group = f"cardiolake-{self._run}-{len(self.steps)}"
        before = lake.log_versions(self._lake_root)
        outer = None
        if sc is not None:
            outer = (sc.getLocalProperty("spark.jobGroup.id"),
                     sc.getLocalProperty("spark.job.description"))  # fmt: skip
            sc.setJobGroup(group, name, interruptOnCancel=False)
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - started
            jobs = None
            if sc is not None and outer is not None:
                jobs = len(sc.statusTracker().getJobIdsForGroup(group))
                # a caller's own job group (a notebook's, a test's) is back after the step
                sc.setLocalProperty("spark.jobGroup.id", outer[0])
                sc.setLocalProperty("spark.job.description", outer[1])
            after = lake.log_versions(self._lake_root)
            moved = {t: v - before.get(t, -1) for t, v in after.items() if v != before.get(t, -1)}
            self.steps[name] = StepCost(
                seconds=round(seconds, 3),
                spark_jobs=jobs,
                delta_commits=sum(moved.values()),
                tables=dict(sorted(moved.items())),
            )

    def totals(self) -> dict[str, Any]:
        """Seconds, jobs and commits over every step."""
        jobs = [s.spark_jobs for s in self.steps.values()]
        return {
            "seconds": round(sum(s.seconds for s in self.steps.values()), 3),
            "spark_jobs": None if None in jobs else sum(j or 0 for j in jobs),
            "delta_commits": sum(s.delta_commits for s in self.steps.values()),
        }

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Every step's cost, JSON-able."""
        return {name: asdict(cost) for name, cost in self.steps.items()}


def _context(spark: SparkSession) -> Any:
    """The session's SparkContext, or None (Spark Connect has none)."""
    try:
        return spark.sparkContext
    except Exception:  # noqa: BLE001 - Spark Connect raises on sparkContext
        logger.debug("no SparkContext: Spark jobs are not counted")
        return None
