"""Each ingestion step's Spark jobs and Delta commits are counted, without starting Spark."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from cardiolake.spark import LazySparkSession
from pipelines.accounting import JobAccountant, totals_of


@pytest.mark.spark
def test_steps_count_their_own_jobs_and_commits(spark, lake_root: Path) -> None:  # type: ignore[no-untyped-def]
    lazy = LazySparkSession()  # reuses the running test session once something needs it
    accountant = JobAccountant(lazy, lake_root)
    with accountant.step("nothing to do"):
        pass
    assert not lazy.started  # measuring a step does not start Spark
    with accountant.step("first Spark work"):
        assert lazy.range(10).count() == 10  # starts the session inside the step
        write_deltalake(str(lake_root / "bronze" / "t"), pa.table({"x": [1, 2]}))
    spark.sparkContext.setJobGroup("the caller's group", "outer")
    with accountant.step("more"):
        lazy.range(3).collect()
        lazy.range(4).collect()
        for _ in range(2):
            write_deltalake(str(lake_root / "bronze" / "t"), pa.table({"x": [3]}), mode="append")
        write_deltalake(str(lake_root / "silver" / "u"), pa.table({"y": [1]}))
    # the caller's job group is back after the step
    assert spark.sparkContext.getLocalProperty("spark.jobGroup.id") == "the caller's group"
    spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    steps = accountant.as_dict()
    assert steps["nothing to do"]["spark_jobs"] == 0
    assert steps["nothing to do"]["delta_commits"] == 0
    assert steps["first Spark work"]["spark_jobs"] >= 1
    assert steps["first Spark work"]["tables"] == {"bronze.t": 1}
    assert steps["more"]["spark_jobs"] >= 2
    assert steps["more"]["tables"] == {"bronze.t": 2, "silver.u": 1}
    totals = totals_of(steps)
    assert totals["delta_commits"] == 4 == accountant.totals()["delta_commits"]
    assert totals["spark_jobs"] == sum(s["spark_jobs"] for s in steps.values())
