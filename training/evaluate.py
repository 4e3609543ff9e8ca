"""Honest evaluation of the stage-3 models on any lake's labelled examples.

``python -m training evaluate --lake L`` (``cardiolake evaluate``) scores one label row per
patient of ``L``'s training set (Feast's point-in-time join at the label's time) with:

* the teacher, on the 12-lead ECG with the echo embedding and labs as of the label;
* the student, on limb leads derived from that 12-lead for every device lead set (1, 2, 3, 6
  leads) and on the patient's own mobile recording (the one nearest the exam; a 30 s strip is
  scored as the mean logit of its 10 s windows);
* the same student architecture trained on labels alone (the distillation lift), and the
  label-efficiency students (labels only, SSL-initialised or random, 10-100 % of labels);
* the semi-supervised students: SSL-initialised, distilled from a teacher that learnt from the
  same fraction ``f`` < 1 of the labels (``student_semi``, variant ``distilled/align/f``).

The models come from the MLflow registry of the tracking store (another lake's, for an
external test cohort). Scores are calibrated probabilities; decisions use each model's own
operating point. Writes ``predictions.parquet``, ``metrics.json`` and PNG plots to ``out`` and
logs all of them to an ``cardiolake-evaluate`` run whose tags name the models and tables.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cardiolake import tables
from cardiolake.domain import EVALUATION_LEAD_SETS, LIMB_LEADS, RESTING_12LEAD
from cardiolake.tracking import LEGACY_STUDENT_MODEL, STUDENT_MODEL, TEACHER_MODEL
from training.calibration import calibrated, expected_calibration_error
from training.labeled import TARGETS, LabeledSet, ecg_by_record, load_labeled
from training.lake import PinnedTable, TrainingDataError, pin, read_columns
from training.metrics import auc, bootstrap_auc, paired_difference
from training.runner import Context
from training.settings import DataSettings, EvaluateSettings
from training.student import MOBILE_SECONDS, Student, lead_mask_of, recorded_samples
from training.tabular import TabularSpec
from training.teacher import TeacherInputs, latest_teacher_run
from training.teacher import predict as teacher_logits

logger = logging.getLogger(__name__)

#: Tags of the students the evaluation compares (kind, init, label fraction).
MAIN_STUDENTS: dict[str, dict[str, str]] = {
    "student": {
        "cardiolake.student_kind": "distilled",
        "cardiolake.init": "align",
        "cardiolake.label_fraction": "1.0",
    },
    "student_labels_only": {
        "cardiolake.student_kind": "labels_only",
        "cardiolake.init": "align",
        "cardiolake.label_fraction": "1.0",
    },
}


@dataclass(frozen=True)
class Loaded:
    """A registered model, its card and where it came from."""

    name: str
    version: str
    run_id: str
    model: Any
    card: dict[str, Any]

    @property
    def label(self) -> str:
        """``name/version``."""
        return f"{self.name}/{self.version}"


def load_registered(registered: str, run_id: str) -> Loaded:
    """The newest version ``run_id`` registered under ``registered`` (CPU, eval mode)."""
    import mlflow

    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name = '{registered}' and run_id = '{run_id}'")
    if not versions and registered == STUDENT_MODEL:  # a lake trained before the rename
        registered = LEGACY_STUDENT_MODEL
        versions = client.search_model_versions(f"name = '{registered}' and run_id = '{run_id}'")
    if not versions:
        raise LookupError(f"run {run_id} registered no {registered}")
    version = str(max(int(v.version) for v in versions))
    model = mlflow.pytorch.load_model(f"models:/{registered}/{version}", map_location="cpu")
    return Loaded(registered, version, run_id, model.eval(), dict(model.card))


def find_models(settings: EvaluateSettings) -> dict[str, Loaded]:
    """Teacher, students, label-efficiency and semi-supervised students (the newest of each).

    The teacher and the main students learnt from every label; a semi-supervised student at
    fraction ``f`` counts only when its teacher learnt from ``f`` too.

    Raises:
        LookupError: no finished teacher or distilled student run.
    """
    from training.tracking import latest_finished_run

    out: dict[str, Loaded] = {}
    teacher = settings.teacher_run_id or latest_teacher_run(1.0)
    if teacher is None:
        raise LookupError("no finished teacher run: run `cardiolake train teacher` first")
    out["teacher"] = load_registered(TEACHER_MODEL, teacher)
    chosen = {
        "student": settings.student_run_id,
        "student_labels_only": settings.labels_only_run_id,
    }
    for name, tags in MAIN_STUDENTS.items():
        run = chosen[name] or latest_finished_run("student", tags)
        if run is None:
            if name == "student":
                raise LookupError("no finished distilled student: run `cardiolake train student`")
            logger.warning("no labels-only student: the distillation lift is not measured")
            continue
        out[name] = load_registered(STUDENT_MODEL, run)
    for init in ("align", "random"):
        for fraction in settings.curve_fractions:
            tags = {
                "cardiolake.student_kind": "labels_only",
                "cardiolake.init": init,
                "cardiolake.label_fraction": str(float(fraction)),
            }
            run = latest_finished_run("student", tags)
            main = out.get("student_labels_only")
            if run is not None and (main is None or main.run_id != run):  # scored once
                out[f"curve/{init}/{float(fraction)}"] = load_registered(STUDENT_MODEL, run)
    for fraction in (f for f in settings.curve_fractions if f < 1):
        tags = {"cardiolake.student_kind": "distilled", "cardiolake.init": "align",
                "cardiolake.label_fraction": str(float(fraction)),
                "cardiolake.teacher_label_fraction": str(float(fraction))}  # fmt: skip
        run = latest_finished_run("student", tags)
        if run is not None:
            out[f"semi/align/{float(fraction)}"] = load_registered(STUDENT_MODEL, run)
    return out


@dataclass
class Cohort:
    """One label row per patient, with every input the models take.

    Attributes:
        rows: the teacher's inputs (training-set rows, 12-lead at the teacher's rate).
        limb: (N, 6, T) limb leads derived from the 12-lead at the student's rate.
        limb_present: (N, 6).
        mobile: (M, 6, T30) the patients' own mobile strips; ``mobile_row`` maps each to a row.
        mobile_present: (M, 6).
        mobile_length: (M,) samples recorded.
        mobile_row: (M,) index into ``rows``.
    """

    rows: LabeledSet
    limb: np.ndarray
    limb_present: np.ndarray
    mobile: np.ndarray
    mobile_present: np.ndarray
    mobile_length: np.ndarray
    mobile_row: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """(N, targets) labels."""
        return self.rows.targets


def load_cohort(lake_root: Path, split: str, teacher: Loaded, student: Loaded) -> Cohort:
    """The evaluated patients of a lake and their inputs.

    Raises:
        TrainingDataError: no labelled row in the split.
    """
    echo_dim = int(teacher.model.echo[0].normalized_shape[0])
    data = load_labeled(
        lake_root, DataSettings(ecg_fs=int(teacher.card["ecg_fs"])), echo_dim=echo_dim
    )
    frame = data.frame.assign(_row=np.arange(len(data.frame)))
    if split != "all":
        frame = frame[frame["split"] == split]
    frame = frame[np.isfinite(data.targets[frame["_row"].to_numpy(), 0])]
    # one label row per patient: the newest (a patient's exams are not independent samples)
    frame = frame.sort_values(["patient_key", "event_timestamp"]).drop_duplicates(
        "patient_key", keep="last"
    )
    if frame.empty:
        raise TrainingDataError(
            f"{data.pinned['training_set'].tag}: no labelled row in split {split!r}"
        )
    keep = frame["_row"].to_numpy()
    rows = LabeledSet(
        frame=data.frame.iloc[keep].reset_index(drop=True),
        ecg=data.ecg[keep],
        lead_mask=data.lead_mask[keep],
        echo=data.echo[keep],
        echo_present=data.echo_present[keep],
        targets=data.targets[keep],
        pinned=data.pinned,
    )
    fs = int(student.card["input_fs"])
    labeled = data.pinned[tables.EXAMPLES_LABELED.name]  # the version the rows came from
    limb, present, _ = ecg_by_record(
        labeled,
        lake_root,
        fs,
        rows.frame["ecg_record_key"].tolist(),
        key="ecg_record_key",
        seconds=float(student.card["seconds"]),
    )
    examples = pin(tables.EXAMPLES_PRETRAIN, lake_root)
    mobile_keys, mobile_row = nearest_mobile(lake_root, examples, rows.frame)
    mob, mob_present, found = ecg_by_record(
        examples, lake_root, fs, mobile_keys, key="record_key", seconds=MOBILE_SECONDS
    )
    length = recorded_samples(mob)
    rows.pinned = {**rows.pinned, tables.EXAMPLES_PRETRAIN.name: examples}
    return Cohort(
        rows,
        limb[:, : len(LIMB_LEADS)],
        present[:, : len(LIMB_LEADS)],
        mob[found, : len(LIMB_LEADS)],
        mob_present[found, : len(LIMB_LEADS)],
        length[found],
        mobile_row[found],
    )


def nearest_mobile(
    lake_root: Path, examples: PinnedTable, frame: pd.DataFrame
) -> tuple[list[str], np.ndarray]:
    """Each patient's mobile recording (of ``examples``) nearest the exam (keys, row indices)."""
    from training.embed import event_times

    meta = read_columns(
        examples, ["record_key", "patient_key", "modality", "device_kind"]
    ).to_pandas()
    meta = meta[(meta["modality"] == "ecg") & (meta["device_kind"] != RESTING_12LEAD)]
    row_of = {p: i for i, p in enumerate(frame["patient_key"])}
    meta = meta[meta["patient_key"].isin(row_of)]
    if meta.empty:
        return [], np.zeros(0, dtype=np.int64)
    times = event_times(lake_root, tables.ECG)
    exam = dict(
        zip(frame["patient_key"], pd.to_datetime(frame["event_timestamp"], utc=True), strict=True)
    )
    meta = meta.assign(
        gap=[
            abs((times[r] - exam[p]).total_seconds()) if r in times else np.inf
            for r, p in zip(meta["record_key"], meta["patient_key"], strict=True)
        ]
    )
    meta = meta.sort_values("gap").drop_duplicates("patient_key")
    return meta["record_key"].tolist(), np.array([row_of[p] for p in meta["patient_key"]])


@torch.no_grad()
def student_logits(
    model: Student,
    ecg: np.ndarray,
    present: np.ndarray,
    length: np.ndarray,
    leads: tuple[str, ...] | None,
    window: int,
    batch: int = 128,
) -> np.ndarray:
    """Mean logits over a recording's ``window``-sample windows (a lead set, or its own)."""
    items = []  # (row, start)
    for i, n in enumerate(length):
        starts = list(range(0, max(int(n) - window, 0) + 1, window)) or [0]
        items += [(i, s) for s in starts]
    total = np.zeros((len(ecg), len(TARGETS)), dtype=np.float64)
    count = np.zeros(len(ecg))
    for b in range(0, len(items), batch):
        chunk = items[b : b + batch]
        x = np.zeros((len(chunk), ecg.shape[1], window), dtype=np.float32)
        m = np.zeros((len(chunk), ecg.shape[1]), dtype=np.float32)
        for k, (i, s) in enumerate(chunk):
            seg = ecg[i, :, s : s + window]
            x[k, :, : seg.shape[-1]] = seg
            m[k] = present[i] if leads is None else lead_mask_of(leads) * present[i]
        x *= m[:, :, None]
        logits = model.eval()(torch.from_numpy(x), torch.from_numpy(m))[0].float().numpy()
        for k, (i, _) in enumerate(chunk):
            total[i] += logits[k]
            count[i] += 1
    return (total / np.maximum(count, 1)[:, None]).astype(np.float32)


def _temperature(card: dict[str, Any], target: str) -> float:
    return float(card["temperatures"].get(target, 1.0))


def _threshold(card: dict[str, Any], n_leads: int) -> float:
    if "threshold" in card:
        return float(card["threshold"])
    by_count = card.get("thresholds_by_lead_count", {})
    return float(by_count.get(str(n_leads), 0.5))


def prediction_rows(
    name: str,
    loaded: Loaded,
    input_name: str,
    rows: np.ndarray,
    n_leads: np.ndarray,
    logits: np.ndarray,
    cohort: Cohort,
    variant: str,
) -> pd.DataFrame:
    """Calibrated scores and decisions of one model on one input (one row per patient)."""
    frame = cohort.rows.frame.iloc[rows]
    out = {
        "patient_key": frame["patient_key"].to_numpy(),
        "model": name,
        "variant": variant,
        "model_version": loaded.label,
        "input": input_name,
        "n_leads": n_leads.astype(int),
    }
    for j, target in enumerate(TARGETS):
        col = "score" if j == 0 else f"score_{target}"
        out[col] = calibrated(logits[:, j], _temperature(loaded.card, target))
        out["label" if j == 0 else f"label_{target}"] = cohort.labels[rows, j]
    result = pd.DataFrame(out)
    thresholds = np.array([_threshold(loaded.card, int(k)) for k in n_leads])
    result["threshold"] = thresholds
    result["decision"] = result["score"] >= thresholds
    return result


def score_all(models: dict[str, Loaded], cohort: Cohort) -> pd.DataFrame:
    """Every model on every input it takes."""
    n = len(cohort.rows.frame)
    everyone = np.arange(n)
    parts = []
    teacher = models["teacher"]
    spec = TabularSpec.from_dict(teacher.card["tabular"])
    logits, _ = teacher_logits(teacher.model, TeacherInputs.of(cohort.rows, spec), everyone)
    twelve = cohort.rows.lead_mask.sum(1)
    parts.append(
        prediction_rows(
            "teacher", teacher, "12lead", everyone, twelve, logits, cohort, "multimodal"
        )
    )
    for key, loaded in models.items():
        if key == "teacher":
            continue
        semi = key.startswith("semi/")
        curve = key.startswith("curve/") or semi  # 1 and 6 leads only, no mobile
        if semi:
            name, variant = "student_semi", "distilled/" + key.removeprefix("semi/")
        elif curve:
            name, variant = "student_labels_only", "labels_only/" + key.removeprefix("curve/")
        else:
            name, variant = key, str(loaded.card["kind"])
        student: Student = loaded.model.student
        window = int(round(float(loaded.card["seconds"]) * float(loaded.card["input_fs"])))
        full = np.full(n, window)
        for count, leads in EVALUATION_LEAD_SETS.items():
            if curve and count not in (1, 6):
                continue
            lg = student_logits(student, cohort.limb, cohort.limb_present, full, leads, window)
            parts.append(
                prediction_rows(
                    name,
                    loaded,
                    f"limb:{','.join(leads)}",
                    everyone,
                    np.full(n, count),
                    lg,
                    cohort,
                    variant,
                )
            )
        if len(cohort.mobile_row) and not curve:
            lg = student_logits(
                student, cohort.mobile, cohort.mobile_present, cohort.mobile_length, None, window
            )
            parts.append(
                prediction_rows(
                    name,
                    loaded,
                    "mobile",
                    cohort.mobile_row,
                    cohort.mobile_present.sum(1),
                    lg,
                    cohort,
                    variant,
                )
            )
    return pd.concat(parts, ignore_index=True)


def group_metrics(frame: pd.DataFrame, n_boot: int) -> dict[str, Any]:
    """AUC with CI, ECE and the operating point of one model x input (one row per patient)."""
    y = frame["label"].to_numpy(dtype=float)
    p = frame["score"].to_numpy(dtype=float)
    lo, hi = bootstrap_auc(y, p, n=n_boot)
    # each row's own threshold (a student's depends on the lead count), so count by hand
    flag = frame["decision"].to_numpy(dtype=bool)
    pos = y > 0.5
    op = {
        "sensitivity": float(flag[pos].mean()) if pos.any() else float("nan"),
        "specificity": float((~flag[~pos]).mean()) if (~pos).any() else float("nan"),
        "ppv": float(pos[flag].mean()) if flag.any() else float("nan"),
        "flagged": float(flag.mean()),
    }
    findings = {
        t: auc(frame[f"label_{t}"].to_numpy(dtype=float), frame[f"score_{t}"].to_numpy(dtype=float))
        for t in TARGETS[1:]
    }
    return {
        "n": int(len(frame)),
        "positives": int(pos.sum()),
        "auc": auc(y, p),
        "ci95": [lo, hi],
        "ece": expected_calibration_error(p, y),
        **op,
        "finding_auc": findings,
    }


def compare(
    predictions: pd.DataFrame, a: tuple[str, str, str], b: tuple[str, str, str], n_boot: int
) -> dict[str, Any] | None:
    """Paired AUC gap b - a on the patients both (model, variant, input) scored."""

    def pick(key: tuple[str, str, str]) -> pd.DataFrame:
        model, variant, input_name = key
        sel = predictions[
            (predictions["model"] == model)
            & (predictions["variant"] == variant)
            & (predictions["input"] == input_name)
        ]
        return sel.set_index("patient_key")

    left, right = pick(a), pick(b)
    common = left.index.intersection(right.index)
    if len(common) < 10:
        return None
    y = left.loc[common, "label"].to_numpy(dtype=float)
    if len(np.unique(y)) < 2:
        return None
    return {
        "a": "|".join(a),
        "b": "|".join(b),
        "n": int(len(common)),
        **paired_difference(
            y,
            left.loc[common, "score"].to_numpy(dtype=float),
            right.loc[common, "score"].to_numpy(dtype=float),
            n=n_boot,
        ),
    }


def summarise(predictions: pd.DataFrame, n_boot: int) -> dict[str, Any]:
    """Per model x input metrics, the distillation lift, mobile vs derived, label efficiency."""
    results = []
    keys = ["model", "variant", "input"]
    for (model, variant, input_name), group in predictions.groupby(keys, sort=False):
        results.append(
            {
                "model": model,
                "variant": variant,
                "input": input_name,
                "n_leads": int(group["n_leads"].max()),
                "model_version": group["model_version"].iloc[0],
                **group_metrics(group, n_boot),
            }
        )
    six = f"limb:{','.join(EVALUATION_LEAD_SETS[6])}"
    one = f"limb:{','.join(EVALUATION_LEAD_SETS[1])}"
    comparisons: dict[str, Any] = {}
    for label, input_name in (("6lead", six), ("1lead", one)):
        gap = compare(
            predictions,
            ("student_labels_only", "labels_only", input_name),
            ("student", "distilled", input_name),
            n_boot,
        )
        if gap is not None:
            comparisons[f"distillation_lift_{label}"] = gap
    mobile = predictions[(predictions["model"] == "student") & (predictions["input"] == "mobile")]
    if len(mobile):
        # the derived limb leads with each patient's own device lead set, on the same patients
        derived = []
        for count, leads in EVALUATION_LEAD_SETS.items():
            who = mobile.loc[mobile["n_leads"] == count, "patient_key"]
            sel = predictions[
                (predictions["model"] == "student")
                & (predictions["input"] == f"limb:{','.join(leads)}")
                & predictions["patient_key"].isin(who)
            ]
            derived.append(sel)
        matched = pd.concat(derived).assign(input="limb:matched")
        gap = compare(
            pd.concat([predictions, matched]),
            ("student", "distilled", "limb:matched"),
            ("student", "distilled", "mobile"),
            n_boot,
        )
        if gap is not None:
            comparisons["mobile_minus_derived"] = gap
    curve = [
        {"init": init, "label_fraction": float(fraction), "input": r["input"], "auc": r["auc"],
         "ci95": r["ci95"], "model_version": r["model_version"]}
        for r in results
        if r["model"] == "student_labels_only" and r["input"] in (one, six)
        for init, fraction in [_curve_point(r["variant"])]
    ]  # fmt: skip
    semi = [
        {"init": init, "label_fraction": float(fraction), "input": r["input"], "auc": r["auc"],
         "ci95": r["ci95"], "model_version": r["model_version"]}
        for r in results
        if r["model"] == "student_semi"
        for init, fraction in [_curve_point(r["variant"])]
    ]  # fmt: skip
    for point in (p for p in semi if p["input"] == six):
        # SSL init + a fraction of the labels (+ its teacher) against random init + every label
        gap = compare(
            predictions,
            ("student_labels_only", "labels_only/random/1.0", six),
            ("student_semi", f"distilled/{point['init']}/{point['label_fraction']}", six),
            n_boot,
        )
        if gap is not None:
            pct = round(100 * point["label_fraction"])
            comparisons[f"ssl_distilled_{pct}pct_minus_random_labels_only_100pct_6lead"] = gap
    return {"results": results, "comparisons": comparisons, "label_efficiency": curve,
            "semi_supervised": semi}  # fmt: skip


def _curve_point(variant: str) -> tuple[str, str]:
    """(init, label fraction) of a curve or semi-supervised student (main: stage-2, 100 %)."""
    parts = variant.split("/")
    return (parts[1], parts[2]) if len(parts) == 3 else ("align", "1.0")


def evaluate(settings: EvaluateSettings, ctx: Context) -> dict[str, Any]:
    """Score a lake's labelled patients with the registered models; write and log the results.

    Raises:
        LookupError: no teacher or student in the tracking store.
        training.lake.TrainingDataError: no training set or no labelled patient in the split.
    """
    import mlflow

    from training.plots import calibration_plot, label_efficiency_plot, roc_plot
    from training.runner import StageRun
    from training.tracking import connect, log_figure_file

    connect(ctx.lake_root, ctx.tracking)
    models = find_models(settings)
    cohort = load_cohort(ctx.lake_root, settings.split, models["teacher"], models["student"])
    logger.info(
        "evaluate: %d patients (%d with a mobile recording), %d models",
        len(cohort.rows.frame),
        len(cohort.mobile_row),
        len(models),
    )
    predictions = score_all(models, cohort)
    summary = summarise(predictions, settings.bootstrap)
    out = Path(settings.out) if settings.out else Path(ctx.lake_root) / "_evaluation"
    out.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(out / "predictions.parquet", index=False)
    lineage = {p.tag.split("@")[0]: p.version for p in cohort.rows.pinned.values()}
    meta = {
        "lake": str(ctx.lake_root),
        "split": settings.split,
        "patients": int(len(cohort.rows.frame)),
        "positives": int(np.nansum(cohort.labels[:, 0])),
        "models": {k: {"version": m.label, "run_id": m.run_id} for k, m in models.items()},
        "tables": lineage,
    }
    stage = StageRun(
        ctx,
        stage="evaluate",
        settings=settings,
        pinned=cohort.rows.pinned,
        tags={f"cardiolake.model.{k}": m.label for k, m in models.items()}
        | {"cardiolake.split": settings.split, "cardiolake.evaluated_lake": str(ctx.lake_root)},
    )
    with stage:
        plots = [
            roc_plot(predictions, out / "roc.png"),
            calibration_plot(predictions, out / "calibration.png"),
        ]
        if summary["label_efficiency"]:
            plots.append(
                label_efficiency_plot(summary["label_efficiency"], out / "label_efficiency.png")
            )
        result = {**meta, **summary, "run_id": stage.run_id, "plots": [str(p) for p in plots]}
        (out / "metrics.json").write_text(json.dumps(result, indent=2, default=_json))
        for r in summary["results"]:
            slug = f"{r['model']}.{r['variant']}.{r['input']}".replace("/", "_").replace(",", "")
            if np.isfinite(r["auc"]):
                mlflow.log_metric(f"auc.{slug}".replace(":", "_"), r["auc"])
        for p in plots:
            log_figure_file(p)
        mlflow.log_artifact(str(out / "metrics.json"))
        mlflow.log_artifact(str(out / "predictions.parquet"))
    return {**result, "out": str(out)}


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
