# Databricks notebook source
# MAGIC %md
# MAGIC # 01 · Ingestion: landing zone → bronze → silver → gold
# MAGIC Reads its parameters, then calls the same package function a laptop run and the tests
# MAGIC call (`pipelines.job.run_ingest`). The pseudonymisation secret comes from a secret scope.

# COMMAND ----------

dbutils.widgets.text("landing", "/Volumes/cardiolake_dev/lake/landing")  # noqa: F821
dbutils.widgets.text("lake_root", "/Volumes/cardiolake_dev/lake/lake")  # noqa: F821
dbutils.widgets.dropdown("stage", "bronze", ["bronze", "silver", "gold", "alignment", "examples"])  # noqa: F821
landing = dbutils.widgets.get("landing")  # noqa: F821
lake_root = dbutils.widgets.get("lake_root")  # noqa: F821
stage = dbutils.widgets.get("stage")  # noqa: F821
secret = dbutils.secrets.get("cardiolake", "pseudonym_secret")  # noqa: F821

# COMMAND ----------

from pathlib import Path

from cardiolake.spark import SparkSettings, get_spark
from pipelines.job import run_ingest
from pipelines.settings import IngestSettings

spark = get_spark(SparkSettings(delta_mode="native"))
settings = IngestSettings(landing=Path(landing), lake_root=Path(lake_root), pseudonym_secret=secret)
summary = run_ingest(spark, settings, stages=(stage,))

# COMMAND ----------

display(summary.rows_added)  # noqa: F821
display(summary.quarantined)  # noqa: F821
