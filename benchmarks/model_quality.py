"""Teacher and student quality against what each input could know (issue 10's acceptance).

Runs in the platform environment after the stages trained in ``--train-lake``:

    .venv/bin/python benchmarks/model_quality.py --train-lake L --train-landing LL \\
        --eval-lake E --eval-landing EL [--train-missing] [--config F]

1. With ``--train-missing``: trains, in ``L``, every model the comparison needs that its
   registry lacks (the labels-only student and the label-efficiency students: labels only,
   stage-2 or random init, 10/25/50/100 % of the labels; for each fraction below 100 %, a
   teacher on that fraction and the SSL-initialised student distilled from it).
2. ``cardiolake evaluate --lake E --split all --models-lake L`` (an external, separately
   ingested cohort; without ``--eval-lake``, ``L``'s own test split).
3. Ceilings on the same patients and labels: the oracle (``oracle_p``, the full latent state),
   and boosted trees fitted on ``L``'s cohort from the latent signs a 12-lead ECG / lead I
   shows, scored on the evaluated patients. ``cardiolake cohort describe``'s figures (latent
   truth against latent truth) are printed beside them.
4. The goals: each measured, its target, the gap, met or not. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cardiolake.cohort.describe import (
    ECG12_FEATURES,
    LEAD1_FEATURES,
    ceiling_model,
    describe_cohort,
    patient_truth,
)
from cardiolake.pseudonym import SECRET_ENV, development_secret_path, resolve_secret
from training.metrics import auc, bootstrap_auc

REPO = Path(__file__).resolve().parents[1]
CLI = [str(Path(sys.executable).with_name("cardiolake"))]
SIX = "limb:I,II,III,aVR,aVL,aVF"
ONE = "limb:I"
#: Label fractions of the label-efficiency students (each with stage-2 and random init).
FRACTIONS = (0.1, 0.25, 0.5, 1.0)


def cardiolake(*args: str) -> None:
    """Run one ``cardiolake`` command (its output goes to this one's)."""
    subprocess.run([*CLI, *args], check=True, cwd=REPO)


def registered_students(lake: Path) -> set[tuple[str, str, str, str]]:
    """(kind, init, label fraction, teacher's) of every finished student run in a lake's store."""
    import mlflow

    from cardiolake.tracking import EXPERIMENTS, tracking_uri

    mlflow.set_tracking_uri(tracking_uri(lake))
    exp = mlflow.get_experiment_by_name(EXPERIMENTS["student"])
    if exp is None:
        return set()
    runs = mlflow.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              output_format="list")  # fmt: skip
    return {(r.data.tags.get("cardiolake.student_kind", ""), r.data.tags.get("cardiolake.init", ""),
             r.data.tags.get("cardiolake.label_fraction", ""),
             r.data.tags.get("cardiolake.teacher_label_fraction", "")) for r in runs}  # fmt: skip


def train_missing(lake: Path, config: Path | None, sets: list[str],
                  fractions: tuple[float, ...] = FRACTIONS) -> None:  # fmt: skip
    """Train the labels-only, label-efficiency and semi-supervised students the registry lacks."""
    have = registered_students(lake)
    extra = ["--config", str(config)] if config else []
    for item in sets:
        extra += ["--set", item]
    for init, fraction in [(i, f) for i in ("align", "random") for f in fractions]:
        if ("labels_only", init, str(float(fraction))) in {h[:3] for h in have}:
            continue
        cardiolake("train", "student", "--lake", str(lake), *extra, "--fresh",
                   "--set", "distill=false", "--set", f"init={init}",
                   "--set", f"label_fraction={fraction}")  # fmt: skip
    for fraction in (f for f in fractions if f < 1):
        f = str(float(fraction))
        if ("distilled", "align", f, f) in have:
            continue
        cardiolake("train", "teacher", "--lake", str(lake), *extra, "--fresh",
                   "--set", f"label_fraction={fraction}")  # fmt: skip
        cardiolake("train", "student", "--lake", str(lake), *extra, "--fresh",
                   "--set", f"label_fraction={fraction}")  # fmt: skip


def lake_secret(lake: Path) -> str:
    """The secret a lake's patient keys were made with.

    ``$CARDIOLAKE_PSEUDONYM_SECRET`` when set, else the lake's own development secret (never a
    new one: it would match no patient).
    """
    configured = os.environ.get(SECRET_ENV)
    if configured is None and not development_secret_path(lake).exists():
        raise SystemExit(f"{lake} has no development secret beside it: set {SECRET_ENV} to "
                         "the secret it was ingested with")  # fmt: skip
    return resolve_secret(configured, lake)


def ceilings(predictions: pd.DataFrame, train_landing: Path, eval_landing: Path,
             train_secret: str, eval_secret: str) -> dict[str, Any]:  # fmt: skip
    """Oracle and latent-sign ceilings on the evaluated patients, against their labels."""
    patients = predictions.drop_duplicates("patient_key")[["patient_key", "label"]]
    truth = patients.merge(patient_truth(eval_landing, eval_secret), on="patient_key")
    fit_on = patient_truth(train_landing, train_secret)
    y = truth["label"].to_numpy(dtype=float)
    out: dict[str, Any] = {"patients": int(len(truth))}
    scores = {"oracle": truth["oracle_p"].to_numpy(dtype=float)}
    for name, feats in (("ecg12_ceiling", ECG12_FEATURES), ("lead1_ceiling", LEAD1_FEATURES)):
        scores[name] = ceiling_model(fit_on, feats).predict_proba(truth[list(feats)])[:, 1]
    for name, p in scores.items():
        lo, hi = bootstrap_auc(y, p)
        out[name] = {"auc": auc(y, p), "ci95": [lo, hi]}
    return out


def _result(metrics: dict[str, Any], model: str, input_name: str, variant: str | None = None
            ) -> float:  # fmt: skip
    for r in metrics["results"]:
        if (
            r["model"] == model
            and r["input"] == input_name
            and (variant is None or r["variant"] == variant)
        ):
            return float(r["auc"])
    return float("nan")


def _curve(metrics: dict[str, Any], init: str, fraction: float,
           kind: str = "label_efficiency") -> float:  # fmt: skip
    for c in metrics.get(kind, []):
        if c["init"] == init and c["label_fraction"] == fraction and c["input"] == SIX:
            return float(c["auc"])
    return float("nan")


def goals(metrics: dict[str, Any], ceil: dict[str, Any]) -> list[dict[str, Any]]:
    """The acceptance goals: measured value, target, met."""
    teacher = _result(metrics, "teacher", "12lead")
    six = _result(metrics, "student", SIX, "distilled")
    one = _result(metrics, "student", ONE, "distilled")
    comps = metrics.get("comparisons", {})
    lift = comps.get("distillation_lift_6lead", {}).get("delta", float("nan"))
    mobile = comps.get("mobile_minus_derived", {}).get("delta", float("nan"))
    ssl25, sup100 = _curve(metrics, "align", 0.25), _curve(metrics, "random", 1.0)
    # two readings of "SSL + 25 % of the labels": the SSL-initialised student on those labels
    # alone, and (semi-supervised) distilled from a teacher that learnt from the same 25 %,
    # its soft targets reaching the unlabelled pool; both against random init + every label
    semi25 = _curve(metrics, "align", 0.25, "semi_supervised")
    rows = [
        ("teacher >= oracle - 0.02", teacher, ceil["oracle"]["auc"] - 0.02),
        ("6-lead student >= 12-lead ECG ceiling - 0.02", six, ceil["ecg12_ceiling"]["auc"] - 0.02),
        ("6-lead student >= 0.83 (design)", six, 0.83),
        ("1-lead student >= lead-I ceiling - 0.02", one, ceil["lead1_ceiling"]["auc"] - 0.02),
        ("distillation lift (6-lead) >= +0.02", lift, 0.02),
        ("SSL + 25 % labels >= supervised 100 %", ssl25 - sup100, 0.0),
        ("SSL + 25 % labels + its teacher >= supervised 100 %", semi25 - sup100, 0.0),
        ("mobile - derived limb leads >= -0.02", mobile, -0.02),
    ]
    return [{"goal": g, "measured": v, "target": t, "gap": v - t,
             "met": bool(np.isfinite(v) and v >= t)} for g, v, t in rows]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-lake", type=Path, required=True)
    parser.add_argument("--train-landing", type=Path, required=True)
    parser.add_argument("--eval-lake", type=Path, help="external cohort's lake (default: test)")
    parser.add_argument("--eval-landing", type=Path, help="its landing zone (truth/)")
    parser.add_argument("--train-missing", action="store_true")
    parser.add_argument("--config", type=Path, help="training YAML for --train-missing")
    parser.add_argument("--set", action="append", default=[], help="training override")
    parser.add_argument("--curve-fractions", default=",".join(map(str, FRACTIONS)),
                        help="label fractions of the label-efficiency students")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/model_quality.json"))
    args = parser.parse_args()
    train_lake = args.train_lake.resolve()
    if args.train_missing:
        fractions = tuple(float(f) for f in args.curve_fractions.split(","))
        train_missing(train_lake, args.config, args.set, fractions)
    eval_lake = (args.eval_lake or args.train_lake).resolve()
    eval_landing = args.eval_landing or args.train_landing
    folder = args.out.with_suffix("").resolve()
    cmd = ["evaluate", "--lake", str(eval_lake), "--out", str(folder)]
    if args.eval_lake is not None:
        cmd += ["--split", "all", "--models-lake", str(train_lake)]
    cardiolake(*cmd)
    metrics = json.loads((folder / "metrics.json").read_text())
    predictions = pd.read_parquet(folder / "predictions.parquet")
    ceil = ceilings(predictions, args.train_landing, eval_landing, lake_secret(train_lake),
                    lake_secret(eval_lake))  # fmt: skip
    described = describe_cohort(eval_landing).auc
    checks = goals(metrics, ceil)

    print(f"\nceilings on the same {ceil['patients']} patients and labels "
          f"(describe, latent vs latent: {json.dumps({k: round(v, 3) for k, v in described.items()})})")  # fmt: skip
    for name in ("oracle", "ecg12_ceiling", "lead1_ceiling"):
        c = ceil[name]
        print(f"  {name:<15} AUC {c['auc']:.3f} [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]")
    print(f"\n{'goal':<52} {'measured':>9} {'target':>8} {'gap':>7}  met")
    for g in checks:
        print(f"{g['goal']:<52} {g['measured']:>9.3f} {g['target']:>8.3f} {g['gap']:>+7.3f}  "
              f"{'yes' if g['met'] else 'NO'}")  # fmt: skip
    out = {"train_lake": str(train_lake), "eval_lake": str(eval_lake), "ceilings": ceil,
           "describe": described, "goals": checks, "evaluation": metrics,
           "load_average": list(os.getloadavg())}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
