# Databricks notebook source
# MAGIC %md
# MAGIC # 04 · Training: one stage on a GPU cluster (ML runtime) under TorchDistributor
# MAGIC The same stage functions `cardiolake train STAGE` runs in `.venv-train`
# MAGIC (`training.__main__.run_stage`: pretrain, align, embed, teacher, student, evaluate),
# MAGIC here distributed with one process per GPU across the job cluster's workers. Runs log to
# MAGIC the MLflow experiment the job sets (`MLFLOW_EXPERIMENT_NAME`).

# COMMAND ----------

dbutils.widgets.text("lake_root", "/Volumes/cardiolake_dev/lake/lake")  # noqa: F821
dbutils.widgets.dropdown("stage", "pretrain", ["pretrain", "align", "embed", "teacher", "student", "evaluate"])  # noqa: F821
dbutils.widgets.text("config", "")  # noqa: F821
dbutils.widgets.text("processes", "")  # noqa: F821  (empty: one per GPU of the cluster)
lake_root = dbutils.widgets.get("lake_root")  # noqa: F821
stage = dbutils.widgets.get("stage")  # noqa: F821
config = dbutils.widgets.get("config") or None  # noqa: F821
processes = dbutils.widgets.get("processes")  # noqa: F821

# COMMAND ----------

import json
import os
from pathlib import Path

from pyspark.ml.torch.distributor import TorchDistributor

from training.__main__ import ENTRY_POINTS, run_stage
from training.settings import load_settings
import training.settings as training_settings

settings_class = getattr(training_settings, ENTRY_POINTS[stage][2])
settings = load_settings(settings_class, Path(config) if config else None, stage)
gpus = int(spark.conf.get("spark.executor.resource.gpu.amount", "0") or 0)  # noqa: F821
workers = int(spark.conf.get("spark.databricks.clusterUsageTags.clusterWorkers", "1") or 1)  # noqa: F821
n = int(processes) if processes else max(1, gpus * workers)
summary_out = f"{lake_root}/_checkpoints/{stage}.json"
tracking = os.environ.get("MLFLOW_TRACKING_URI")
distributor = TorchDistributor(num_processes=n, local_mode=False, use_gpu=gpus > 0)
distributor.run(run_stage, stage, settings, lake_root, tracking, False, summary_out)

# COMMAND ----------

print(json.dumps(json.loads(Path(summary_out).read_text()), indent=2))
