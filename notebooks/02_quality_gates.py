# Databricks notebook source
# MAGIC %md
# MAGIC # 02 · Quality gates: Great Expectations between silver and gold, and after gold
# MAGIC Runs the suites of one layer with the same function `cardiolake validate` and
# MAGIC `cardiolake ingest` call (`expectations.run_gates`). Failing rows go to `quarantine`
# MAGIC under the expectation's name; gold and the feature tables never read them. Data Docs
# MAGIC are written under `<lake_root>/_gx/data_docs`.

# COMMAND ----------

dbutils.widgets.text("lake_root", "/Volumes/cardiolake_dev/lake/lake")  # noqa: F821
dbutils.widgets.dropdown("layer", "silver", ["silver", "gold"])  # noqa: F821
dbutils.widgets.dropdown("fail_on_failure", "false", ["false", "true"])  # noqa: F821
lake_root = dbutils.widgets.get("lake_root")  # noqa: F821
layer = dbutils.widgets.get("layer")  # noqa: F821
fail_on_failure = dbutils.widgets.get("fail_on_failure") == "true"  # noqa: F821

# COMMAND ----------

from pathlib import Path

from cardiolake.spark import SparkSettings, get_spark
from expectations import run_gates

spark = get_spark(SparkSettings(delta_mode="native"))
report = run_gates(spark, Path(lake_root), layer=layer)

# COMMAND ----------

rows = [
    (s.suite, e.expectation, e.success, e.unexpected_count, s.rows)
    for s in report.suites
    for e in s.expectations
]
display(spark.createDataFrame(rows, "suite string, expectation string, success boolean, unexpected long, rows long"))  # noqa: F821
print("held back rows of:", [str(t) for t in report.blocked()] or "nothing")
if fail_on_failure and not report.success:
    raise RuntimeError(f"gates failed on {[str(t) for t in report.blocked()]}")
