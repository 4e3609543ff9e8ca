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
        group = f"cardiolake-{self._run}-{len(self.steps)}"
        entered: list[tuple[Any, tuple[str | None, str | None]]] = []

        def enter(session: Any) -> None:
            sc = _context(session)
            if sc is not None:
                outer = (sc.getLocalProperty("spark.jobGroup.id"),
                         sc.getLocalProperty("spark.job.description"))  # fmt: skip
                sc.setJobGroup(group, name, interruptOnCancel=False)
                entered.append((sc, outer))

        # a lazily started session is not started just to be measured: the group is set
        # when (if) the step starts it
        pending = getattr(self._spark, "when_started", None)
        if getattr(self._spark, "started", True):
            enter(self._spark)
        elif pending is not None:
            pending.append(enter)
        before = lake.log_versions(self._lake_root)
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - started
            if pending is not None and enter in pending:
                pending.remove(enter)
            jobs: int | None = 0 if pending is not None else None
            for sc, outer in entered:
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
        return totals_of(self.as_dict())

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


def totals_of(steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Seconds, Spark jobs (None when any step could not count them) and Delta commits over
    the steps of :meth:`JobAccountant.as_dict` (of one run or several merged)."""
    jobs = [c["spark_jobs"] for c in steps.values()]
    return {
        "seconds": round(sum(c["seconds"] for c in steps.values()), 3),
        "spark_jobs": None if None in jobs else sum(jobs),
        "delta_commits": sum(c["delta_commits"] for c in steps.values()),
    }
