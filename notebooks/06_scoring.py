# Databricks notebook source
# MAGIC %md
# MAGIC # 06 · Scoring: the champion over a landing folder of mobile recordings
# MAGIC The function `cardiolake score` calls (`serving.scoring.score_cohort`): Spark tasks
# MAGIC read the recordings and run the registered ONNX model, predictions are merged into
# MAGIC `scoring.predictions`, what cannot be scored goes to `quarantine`, and the run's drift
# MAGIC figures are written. Patient keys use the lake's pseudonym secret (secret scope).

# COMMAND ----------

dbutils.widgets.text("lake_root", "/Volumes/cardiolake_dev/lake/lake")  # noqa: F821
dbutils.widgets.text("landing", "/Volumes/cardiolake_dev/lake/mobile_landing")  # noqa: F821
dbutils.widgets.text("alias", "champion")  # noqa: F821
lake_root = dbutils.widgets.get("lake_root")  # noqa: F821
landing = dbutils.widgets.get("landing")  # noqa: F821
alias = dbutils.widgets.get("alias")  # noqa: F821
secret = dbutils.secrets.get("cardiolake", "pseudonym_secret")  # noqa: F821

# COMMAND ----------

from pathlib import Path

from cardiolake.spark import SparkSettings, get_spark
from serving.scoring import ScoringSettings, score_cohort

spark = get_spark(SparkSettings(delta_mode="native"))
result = score_cohort(spark, Path(lake_root), ScoringSettings(alias=alias), secret=secret,
                      landing=Path(landing))
print(f"{result.model} v{result.version}: {result.scored} scored, {result.inserted} new")
