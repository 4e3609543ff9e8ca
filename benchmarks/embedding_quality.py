"""What the ECG embeddings know: linear probes for urgent triage, and cross-modal retrieval.

Runs in the platform environment on a lake the training stages wrote to:

    .venv/bin/python benchmarks/embedding_quality.py --lake L --landing LANDING

For every encoder stage in ``features.ecg_embedding`` (``random`` init, stage-1 ``pretrain``,
stage-2 ``align``; the newest version of each), a logistic-regression probe is fitted on the
embeddings of the 12-lead ECGs of ``gold.examples_labeled``'s train + validation patients and
scored on its test patients (the lake's own patient-level split): AUC for the adjudicated
urgent label with a patient bootstrap 95 % CI. The same probe on the cohort's ECG-observable
latent truth (``truth/patients.parquet``, joined through the pseudonym) is the ceiling a linear
read-out of a perfect ECG encoder would reach. The held-out beat -> keyframe retrieval of the
newest stage-2 run (top-1 among 32 candidates from other patients) comes from its MLflow
metrics, against chance (1/32). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cardiolake import lake, tables
from cardiolake.cohort.describe import ECG12_FEATURES, patient_truth
from cardiolake.pseudonym import SECRET_ENV, resolve_secret
from cardiolake.tracking import EXPERIMENTS, tracking_uri
from training.metrics import bootstrap_auc, paired_difference

STAGES = ("random", "pretrain", "align")


def probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> dict:
    """Standardise + L2 logistic regression (C by 5-fold CV on train); test AUC with CI.

    The test predictions come back under ``_p`` (keyed by position) for paired comparisons.
    """
    sizes = {"n_train": len(train_y), "n_test": len(test_y), "positives_test": int(test_y.sum())}
    minority = min(np.bincount(train_y, minlength=2).min(), np.bincount(test_y, minlength=2).min())
    if minority < 2:  # a tiny smoke-test lake: nothing to measure, say so
        return {"auc": None, "ci95": [None, None], **sizes}
    model = make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(Cs=np.logspace(-4, 1, 12), cv=int(min(5, minority)),
                             scoring="roc_auc", max_iter=5000),
    )  # fmt: skip
    model.fit(train_x, train_y)
    p = model.predict_proba(test_x)[:, 1]
    lo, hi = bootstrap_auc(test_y, p)
    return {"auc": float(roc_auc_score(test_y, p)), "ci95": [lo, hi], **sizes, "_p": p}


def labeled_examples(lake_root: Path) -> pd.DataFrame:
    cols = ["patient_key", "split", "triage_urgent", "ecg_record_key"]
    frame = lake.read_pandas(tables.EXAMPLES_LABELED, lake_root=lake_root, columns=cols)
    return frame.dropna(subset=["triage_urgent"]).drop_duplicates("patient_key")


def stage_versions(emb: pd.DataFrame) -> dict[str, str]:
    """The newest encoder version of each stage present in the table."""
    out = {}
    for stage in STAGES:
        rows = emb[emb["encoder_stage"] == stage]
        if len(rows):
            out[stage] = str(rows.sort_values("written_at")["model_version"].iloc[-1])
    return out


def latent_features(landing: Path, secret: str) -> pd.DataFrame:
    return patient_truth(landing, secret)[["patient_key", *ECG12_FEATURES]]


def retrieval_metrics(lake_root: Path) -> dict:
    """Held-out retrieval of the newest finished stage-2 run (from MLflow)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(lake_root, os.environ.get("MLFLOW_TRACKING_URI")))
    exp = mlflow.get_experiment_by_name(EXPERIMENTS["align"])
    if exp is None:
        return {}
    runs = mlflow.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1,
                              output_format="list")  # fmt: skip
    if not runs:
        return {}
    m = runs[0].data.metrics
    return {"run_id": runs[0].info.run_id, "top1": m.get("test_retrieval_top1"),
            "queries": m.get("test_retrieval_queries"), "chance": m.get("retrieval_chance"),
            "validation_top1": m.get("validation_retrieval_top1")}  # fmt: skip


def stage_gaps(results: dict[str, dict]) -> dict[str, dict]:
    """Paired AUC gaps of consecutive stages (random -> pretrain -> align) on shared patients."""
    gaps = {}
    order = [s for s in STAGES if s in results and results[s].get("auc") is not None]
    for a, b in zip(order, order[1:], strict=False):
        ra, rb = results[a], results[b]
        common, ia, ib = np.intersect1d(ra["_test"], rb["_test"], return_indices=True)
        if len(common) < 10:
            continue
        gaps[f"{a} -> {b}"] = paired_difference(ra["_y"][ia], ra["_p"][ia], rb["_p"][ib])
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", type=Path, required=True)
    parser.add_argument("--landing", type=Path, help="the cohort (truth/) for the latent ceiling")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/embedding_quality.json")
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
    secret = resolve_secret(os.environ.get(SECRET_ENV), args.lake)

    labeled = labeled_examples(args.lake)
    emb = lake.read_pandas(tables.ECG_EMBEDDING, lake_root=args.lake)
    fit_split = labeled["split"].isin(["train", "validation"])
    results: dict[str, dict] = {}
    for stage, version in stage_versions(emb).items():
        rows = emb[emb["model_version"] == version][["record_key", "embedding"]]
        joined = labeled.merge(rows, left_on="ecg_record_key", right_on="record_key")
        x = np.stack(joined["embedding"].to_numpy()).astype(np.float64)
        y = joined["triage_urgent"].astype(int).to_numpy()
        fit = joined["split"].isin(["train", "validation"]).to_numpy()
        results[stage] = {"model_version": version, **probe(x[fit], y[fit], x[~fit], y[~fit]),
                          "_test": joined.loc[~fit, "patient_key"].to_numpy(),
                          "_y": y[~fit]}  # fmt: skip
    if args.landing is not None:
        latent = labeled.merge(latent_features(args.landing, secret), on="patient_key")
        x = latent[list(ECG12_FEATURES)].to_numpy(dtype=np.float64)
        y = latent["triage_urgent"].astype(int).to_numpy()
        fit = latent["split"].isin(["train", "validation"]).to_numpy()
        results["latent_ceiling"] = {"model_version": "truth: " + ",".join(ECG12_FEATURES),
                                     **probe(x[fit], y[fit], x[~fit], y[~fit])}  # fmt: skip
    retrieval = retrieval_metrics(args.lake)
    gaps = stage_gaps(results)

    print(f"linear probe, urgent triage (fit on {int(fit_split.sum())} train+validation patients, "
          f"test split of the lake)")  # fmt: skip
    print(f"{'encoder':<16} {'AUC':>6} {'95% CI':>15} {'n test':>7}  version")
    for name, r in results.items():
        lo, hi = r["ci95"]
        auc = "n/a" if r["auc"] is None else f"{r['auc']:.3f}"
        ci = "" if lo is None else f"[{lo:.3f}, {hi:.3f}]"
        print(f"{name:<16} {auc:>6} {ci:>15} {r['n_test']:>7}  {r['model_version']}")
    order = [s for s in STAGES if s in results and results[s]["auc"] is not None]
    monotone = all(
        results[a]["auc"] < results[b]["auc"] for a, b in zip(order, order[1:], strict=False)
    )
    print(f"random < pretrain < align: {'yes' if monotone and len(order) == 3 else 'no'}")
    for name, g in gaps.items():
        print(
            f"{name:<20} AUC gap {g['delta']:+.3f}  paired 95% CI [{g['ci95'][0]:+.3f}, "
            f"{g['ci95'][1]:+.3f}]  gap > 0 in {g['share_positive']:.0%} of resamples"
        )
    results = {k: {f: v for f, v in r.items() if not f.startswith("_")}
               for k, r in results.items()}  # fmt: skip
    if retrieval.get("top1") is not None:
        print(f"retrieval (test beats, 1 of {round(1 / retrieval['chance'])}): top-1 "
              f"{retrieval['top1']:.3f} vs chance {retrieval['chance']:.3f} "
              f"over {int(retrieval['queries'])} queries")  # fmt: skip
    out = {"lake": str(args.lake), "probes": results, "ordered": monotone, "gaps": gaps,
           "retrieval": retrieval,
           "load_average": list(os.getloadavg())}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
