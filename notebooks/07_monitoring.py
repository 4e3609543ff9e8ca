# Databricks notebook source
# MAGIC %md
# MAGIC # 07 · Monitoring: drift of the newest scoring run
# MAGIC The figures `cardiolake monitor` prints (`serving.scoring.latest_figures`): input
# MAGIC statistics, lead sets, quality flags and scores against the training reference. The
# MAGIC notebook fails when one is past its threshold, so the job's failure is the alert.

# COMMAND ----------

dbutils.widgets.text("lake_root", "/Volumes/cardiolake_dev/lake/lake")  # noqa: F821
lake_root = dbutils.widgets.get("lake_root")  # noqa: F821

# COMMAND ----------

from pathlib import Path

from serving.scoring import latest_figures

figures = latest_figures(Path(lake_root))
display(figures)  # noqa: F821
alerts = sorted(set(figures.loc[figures["alert"], "metric"]))
if alerts:
    raise RuntimeError(f"drift past threshold: {', '.join(alerts)}")
