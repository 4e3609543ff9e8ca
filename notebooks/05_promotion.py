# Databricks notebook source
# MAGIC %md
# MAGIC # 05 · Promotion: ONNX export, gates, `challenger` → `champion`, device bundle
# MAGIC `export` runs on the ML runtime (it loads the PyTorch student: `serving.export`, what
# MAGIC `python -m serving export` runs); `promote` moves the alias only when the gates pass
# MAGIC (mode enforced, dry-run or disabled: `serving.registry.promote`, what `cardiolake model
# MAGIC promote` runs); `bundle` writes the champion's device bundle (`serving.bundle`).

# COMMAND ----------

dbutils.widgets.text("lake_root", "/Volumes/cardiolake_dev/lake/lake")  # noqa: F821
dbutils.widgets.dropdown("step", "export", ["export", "promote", "bundle"])  # noqa: F821
dbutils.widgets.dropdown("mode", "enforced", ["enforced", "dry-run", "disabled"])  # noqa: F821
dbutils.widgets.text("bundle_out", "/Volumes/cardiolake_dev/lake/bundles/champion")  # noqa: F821
lake_root = dbutils.widgets.get("lake_root")  # noqa: F821
step = dbutils.widgets.get("step")  # noqa: F821
mode = dbutils.widgets.get("mode")  # noqa: F821
bundle_out = dbutils.widgets.get("bundle_out")  # noqa: F821

# COMMAND ----------

import os
from pathlib import Path

if step == "export":
    from serving.export import export_student
    from serving.settings import ExportSettings
    from training.runner import context_from_env

    ctx = context_from_env(Path(lake_root), os.environ.get("MLFLOW_TRACKING_URI"), False)
    print(export_student(ExportSettings(), ctx))
elif step == "promote":
    from serving.registry import promote
    from serving.settings import PromotionGates

    decision = promote("challenger", PromotionGates(mode=mode))
    for gate in decision.gates:
        print(f"{gate.name}: {gate.verdict} ({gate.detail})")
    print(f"version {decision.version}: {'promoted' if decision.promoted else 'not promoted'}")
    if mode == "enforced" and not decision.passed:
        raise RuntimeError(f"version {decision.version} failed its promotion gates")
else:
    from serving.bundle import write_bundle

    print(write_bundle("champion", Path(bundle_out), overwrite=True))
