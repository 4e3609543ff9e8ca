# Databricks notebook source
# MAGIC %md
# MAGIC # 03 · Features: Feast over pinned Delta snapshots
# MAGIC One step per task, the same functions `cardiolake features apply | materialize |
# MAGIC training-set` call (`feature_repo.store`, `feature_repo.training_sets`): build the feature
# MAGIC tables from silver, export pinned Delta versions and register the views; load the latest
# MAGIC row per patient into the online store (Redis on a cluster, its URL from the secret scope);
# MAGIC join the teacher's features point-in-time onto the labels (and onto every 12-lead ECG).

# COMMAND ----------

dbutils.widgets.text("lake_root", "/Volumes/cardiolake_dev/lake/lake")  # noqa: F821
dbutils.widgets.dropdown("step", "apply", ["apply", "materialize", "training-set"])  # noqa: F821
dbutils.widgets.dropdown("online", "redis", ["sqlite", "redis"])  # noqa: F821
lake_root = dbutils.widgets.get("lake_root")  # noqa: F821
step = dbutils.widgets.get("step")  # noqa: F821
online = dbutils.widgets.get("online")  # noqa: F821
redis_url = dbutils.secrets.get("cardiolake", "redis_url") if online == "redis" else ""  # noqa: F821

# COMMAND ----------

from pathlib import Path

from cardiolake.spark import SparkSettings, get_spark
from feature_repo.store import FeatureSettings, apply, materialize, open_store
from feature_repo.training_sets import write_distillation_set, write_training_set

settings = FeatureSettings(lake_root=Path(lake_root), online=online, redis_url=redis_url)
store = open_store(settings)
if step == "apply":
    spark = get_spark(SparkSettings(delta_mode="native"))
    snapshots = apply(store, settings, spark=spark)
    print({str(t): s.tag for t, s in snapshots.items()})
elif step == "materialize":
    materialize(store)
else:
    for written in (write_training_set(store, settings.lake_root),
                    write_distillation_set(store, settings.lake_root)):
        print(f"{written.table} v{written.version}: {written.rows:,} rows")
