"""Stage 3a: the multimodal teacher (12-lead ECG + echo + labs) fine-tuned on the labels.

The ECG branch starts from the stage-2 ECG encoder (fine-tuned at a lower rate); the echo
enters as the stage-2 echo encoder's embedding that Feast served point-in-time; labs and ECG
measurements enter as values with presence flags (:mod:`training.tabular`). One head per
target — the triage decision and every finding — so the teacher's soft targets carry how the
findings relate. Echo and labs are hidden at random during training: a patient without them is
a normal input, not a dropped row.

Several teachers that differ only in their seed are averaged (:class:`TeacherEnsemble`). After
training: a temperature per head fitted on validation (:mod:`training.calibration`), the
urgent threshold for the target sensitivity on validation, and the teacher registered in MLflow
with both; its soft targets and ECG embedding become the student's distillation targets.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from cardiolake import tables
from cardiolake.tracking import EXPERIMENTS, TEACHER_MODEL
from training.calibration import (
    calibrated,
    expected_calibration_error,
    fit_temperature,
    operating_point,
    threshold_for_sensitivity,
)
from training.encoders import EcgEncoder
from training.labeled import (
    TARGETS,
    LabeledSet,
    load_distillation,
    load_labeled,
    withheld_patients,
)
from training.lake import PinnedTable, TrainingDataError, merge_rows
from training.metrics import auc
from training.runner import Context, StageRun, cosine_lr, parent_tag, seed_everything
from training.settings import DataSettings, TeacherSettings
from training.tabular import TabularSpec, numeric_columns
from training.tracking import LoggedModel

logger = logging.getLogger(__name__)


class Teacher(nn.Module):
    """(12-lead ECG, echo embedding, tabular) -> one logit per target, and its ECG embedding."""

    def __init__(self, ecg: EcgEncoder, echo_dim: int, spec: TabularSpec,
                 settings: TeacherSettings) -> None:  # fmt: skip
        super().__init__()
        h = settings.hidden
        e = ecg.cfg.embedding_dim
        self.ecg = ecg
        self.echo = nn.Sequential(nn.LayerNorm(echo_dim), nn.Linear(echo_dim, h), nn.GELU())
        n_tab = max(1, spec.width)
        self.tab = nn.Sequential(nn.Linear(2 * n_tab, h), nn.GELU(), nn.Linear(h, h), nn.GELU())
        self.trunk = nn.Sequential(
            nn.LayerNorm(e + 2 * h + 2), nn.Linear(e + 2 * h + 2, h), nn.GELU(),
            nn.Dropout(settings.dropout), nn.Linear(h, h), nn.GELU(),
        )  # fmt: skip
        self.heads = nn.Linear(h, len(TARGETS))
        self.targets = TARGETS

    def forward(
        self, ecg: torch.Tensor, lead_mask: torch.Tensor, echo: torch.Tensor,
        echo_present: torch.Tensor, tab: torch.Tensor, tab_present: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Logits (B, targets) and the ECG embedding (B, D) the student learns to match."""
        z = self.ecg(ecg, lead_mask)
        v = self.echo(echo) * echo_present[:, None]
        has_tab = (tab_present.sum(1, keepdim=True) > 0).to(tab.dtype)
        t = self.tab(torch.cat([tab * tab_present, tab_present], dim=1)) * has_tab
        x = torch.cat([z, v, t, echo_present[:, None], has_tab], dim=1)
        return self.heads(self.trunk(x)), z


class TeacherEnsemble(nn.Module):
    """Teachers trained alike from different seeds, scoring as one: the mean of their outputs.

    The forward takes a :class:`Teacher`'s inputs and returns the mean of the members' logits
    and of their ECG embeddings; ``echo`` (its input width) and ``targets`` are the members',
    so code that reads a registered teacher reads an ensemble the same way.
    """

    def __init__(self, members: Sequence[Teacher]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one teacher")
        self.members = nn.ModuleList(members)
        self.targets = members[0].targets

    @property
    def echo(self) -> nn.Sequential:
        """The first member's echo branch (``echo[0].normalized_shape`` is the input width)."""
        return cast(Teacher, self.members[0]).echo

    def forward(
        self, ecg: torch.Tensor, lead_mask: torch.Tensor, echo: torch.Tensor,
        echo_present: torch.Tensor, tab: torch.Tensor, tab_present: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Mean logits (B, targets) and mean ECG embedding (B, D) of the members."""
        outs = [m(ecg, lead_mask, echo, echo_present, tab, tab_present) for m in self.members]
        return (torch.stack([lg for lg, _ in outs]).mean(0),
                torch.stack([z for _, z in outs]).mean(0))  # fmt: skip


#: What a registered teacher is: one teacher, or an ensemble of them.
TeacherModel = Teacher | TeacherEnsemble


@dataclass
class TeacherInputs:
    """The teacher's input arrays of a labelled set (aligned with its rows)."""

    ecg: torch.Tensor
    lead_mask: torch.Tensor
    echo: torch.Tensor
    echo_present: torch.Tensor
    tab: torch.Tensor
    tab_present: torch.Tensor
    targets: torch.Tensor

    @classmethod
    def of(cls, data: LabeledSet, spec: TabularSpec) -> TeacherInputs:
        """Tensors of every row (the tabular spec fitted on the train split)."""
        tab, present = spec.transform(data.frame)
        return cls(torch.from_numpy(data.ecg), torch.from_numpy(data.lead_mask),
                   torch.from_numpy(data.echo), torch.from_numpy(data.echo_present),
                   torch.from_numpy(tab), torch.from_numpy(present),
                   torch.from_numpy(data.targets))  # fmt: skip

    def take(self, idx: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """The rows ``idx`` as the model's keyword arguments (plus ``targets``)."""
        i = torch.as_tensor(idx, dtype=torch.long)
        return {"ecg": self.ecg[i], "lead_mask": self.lead_mask[i], "echo": self.echo[i],
                "echo_present": self.echo_present[i], "tab": self.tab[i],
                "tab_present": self.tab_present[i], "targets": self.targets[i]}  # fmt: skip


def multilabel_loss(logits: torch.Tensor, targets: torch.Tensor, finding_weight: float
                    ) -> torch.Tensor:  # fmt: skip
    """BCE of the triage head plus ``finding_weight`` x the mean BCE of the finding heads.

    Unknown labels (NaN) contribute nothing.
    """
    known = torch.isfinite(targets)
    y = torch.nan_to_num(targets)
    bce = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none") * known
    per_head = bce.sum(0) / known.sum(0).clamp(min=1)
    return per_head[0] + finding_weight * per_head[1:].mean()


def augment(batch: dict[str, torch.Tensor], settings: TeacherSettings, gen: torch.Generator
            ) -> dict[str, torch.Tensor]:  # fmt: skip
    """Gain jitter and noise on the ECG; echo and labs hidden at random (modality dropout)."""
    b = batch["ecg"].shape[0]
    gain = 1.0 + settings.gain_jitter * (2 * torch.rand(b, 1, 1, generator=gen) - 1)
    ecg = batch["ecg"] * gain + 0.02 * torch.randn(batch["ecg"].shape, generator=gen)
    keep_echo = (torch.rand(b, generator=gen) >= settings.modality_dropout).float()
    keep_tab = (torch.rand(b, 1, generator=gen) >= settings.modality_dropout).float()
    return {**batch, "ecg": ecg * batch["lead_mask"][:, :, None],
            "echo_present": batch["echo_present"] * keep_echo,
            "tab_present": batch["tab_present"] * keep_tab}  # fmt: skip


@torch.no_grad()
def predict(model: TeacherModel, inputs: TeacherInputs, idx: np.ndarray, batch_size: int = 128
            ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Logits (N, targets) and ECG embeddings (N, D) of rows ``idx``."""
    model.eval()
    logits, emb = [], []
    for start in range(0, len(idx), batch_size):
        batch = inputs.take(idx[start : start + batch_size])
        batch.pop("targets")
        lg, z = model(**batch)
        logits.append(lg.float().numpy())
        emb.append(z.float().numpy())
    if not logits:
        return np.zeros((0, len(TARGETS)), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(logits), np.concatenate(emb)


@dataclass(frozen=True)
class Calibration:
    """Per-head temperatures and the urgent operating point (from validation).

    Attributes:
        temperatures: by target.
        threshold: calibrated urgent probability at or above which an exam is flagged.
        sensitivity_target: what the threshold was chosen for.
    """

    temperatures: dict[str, float]
    threshold: float
    sensitivity_target: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (logged with the model, later in the device bundle)."""
        return {"temperatures": self.temperatures, "threshold": self.threshold,
                "sensitivity_target": self.sensitivity_target}  # fmt: skip


def calibrate(logits: np.ndarray, targets: np.ndarray, sensitivity: float) -> Calibration:
    """Fit the temperatures and the urgent threshold on validation predictions."""
    temps = {}
    for j, name in enumerate(TARGETS):
        ok = np.isfinite(targets[:, j])
        temps[name] = fit_temperature(logits[ok, j], targets[ok, j])
    ok = np.isfinite(targets[:, 0])
    probs = calibrated(logits[ok, 0], temps[TARGETS[0]])
    if not (targets[ok, 0] > 0).any():  # a tiny lake: nothing to set the point on
        logger.warning("no urgent validation example: the operating point defaults to 0.5")
        return Calibration(temps, 0.5, sensitivity)
    threshold = threshold_for_sensitivity(probs, targets[ok, 0], sensitivity)
    return Calibration(temps, threshold, sensitivity)


def split_metrics(prefix: str, logits: np.ndarray, targets: np.ndarray, cal: Calibration
                  ) -> dict[str, float]:  # fmt: skip
    """AUC per target, ECE before/after calibration and the urgent operating point."""
    out: dict[str, float] = {}
    for j, name in enumerate(TARGETS):
        out[f"{prefix}_auc_{name}"] = auc(targets[:, j], logits[:, j])
    ok = np.isfinite(targets[:, 0])
    y = targets[ok, 0]
    raw = calibrated(logits[ok, 0], 1.0)
    cal_p = calibrated(logits[ok, 0], cal.temperatures[TARGETS[0]])
    out[f"{prefix}_ece_raw"] = expected_calibration_error(raw, y)
    out[f"{prefix}_ece"] = expected_calibration_error(cal_p, y)
    op = operating_point(cal_p, y, cal.threshold)
    out |= {f"{prefix}_sensitivity": op.sensitivity, f"{prefix}_specificity": op.specificity,
            f"{prefix}_ppv": op.ppv, f"{prefix}_flagged": op.flagged}  # fmt: skip
    return out


def fit(
    model: Teacher, inputs: TeacherInputs, train: np.ndarray, val: np.ndarray,
    settings: TeacherSettings, gen: torch.Generator, stage: StageRun | None = None,
) -> dict[str, float]:  # fmt: skip
    """Train with early stopping on the validation triage AUC; leaves the best weights loaded.

    With a ``stage``, every epoch is logged and checkpointed (the best weights too), and a
    killed run resumes after its last epoch with its early-stopping count intact.

    Returns:
        The best epoch's validation metrics.
    """
    run = settings.run
    encoder = list(model.ecg.parameters())
    mine = {id(p) for p in encoder}
    heads = [p for p in model.parameters() if id(p) not in mine]
    optimizer = torch.optim.AdamW(
        [{"params": encoder, "lr_scale": settings.encoder_lr_scale},
         {"params": heads, "lr_scale": 1.0}],
        lr=run.lr, weight_decay=run.weight_decay,
    )  # fmt: skip
    best_model = copy.deepcopy(model)
    state: dict[str, nn.Module | torch.optim.Optimizer] = {
        "teacher": model, "best": best_model, "optimizer": optimizer}  # fmt: skip
    start, history = 0, {}
    if stage is not None:
        stage.restore(state)
        start, history = stage.start_epoch, stage.curves.history
    scores = list(history.get("val_auc", []))
    best_epoch = int(np.nanargmax(scores)) if scores and np.isfinite(scores).any() else -1
    for epoch in range(start, run.epochs):
        if best_epoch >= 0 and epoch - 1 - best_epoch >= settings.patience:
            break
        cosine_lr(optimizer, run.lr, epoch / max(1, run.epochs))
        model.train()
        order = train[torch.randperm(len(train), generator=gen).numpy()]
        losses = []
        for start_row in range(0, len(order), run.batch_size):
            idx = order[start_row : start_row + run.batch_size]
            if len(idx) < 2:  # BatchNorm needs two
                continue
            batch = augment(inputs.take(idx), settings, gen)
            targets = batch.pop("targets")
            logits, _ = model(**batch)
            loss = multilabel_loss(logits, targets, settings.finding_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            losses.append(float(loss.detach()))
        val_logits, _ = predict(model, inputs, val)
        val_t = inputs.targets[torch.as_tensor(val, dtype=torch.long)].numpy()
        val_loss = multilabel_loss(torch.from_numpy(val_logits), torch.from_numpy(val_t),
                                   settings.finding_weight)  # fmt: skip
        metrics = {
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "val_loss": float(val_loss),
            "val_auc": auc(val_t[:, 0], val_logits[:, 0]),
        }
        scores.append(metrics["val_auc"])
        if np.isfinite(metrics["val_auc"]) and (
            best_epoch < 0 or metrics["val_auc"] > scores[best_epoch]
        ):
            best_epoch = epoch
            best_model.load_state_dict(model.state_dict())
        if stage is not None:
            stage.end_epoch(epoch, metrics, state, best_key="val_auc", higher_is_better=True)
    if best_epoch >= 0:  # no finite validation AUC (a tiny lake): keep the last weights
        model.load_state_dict(best_model.state_dict())
    best = scores[best_epoch] if best_epoch >= 0 else float("nan")
    return {"val_auc": float(best), "best_epoch": float(best_epoch + 1),
            "epochs_run": float(len(scores))}  # fmt: skip


def train_teacher(settings: TeacherSettings, ctx: Context) -> dict[str, Any]:
    """Run stage 3a: fine-tune ``settings.members`` teachers, calibrate and register them.

    The members differ only in their seed (initial heads, batch order, augmentations); more
    than one is registered as a :class:`TeacherEnsemble`, one as a plain :class:`Teacher`.
    Each member's best validation AUC is logged (``member{i}_val_auc``); only member 0's
    epochs are logged and checkpointed.

    Args:
        settings: the stage's settings.
        ctx: lake, tracking store and process rank (the teacher trains in one process: its
            data is a few thousand rows).

    Returns:
        ``run_id``, the parent (stage-2) run, validation metrics, the calibration and the
        registered teacher version.

    Raises:
        training.lake.TrainingDataError: no training set or no labelled ECG.
        LookupError: no finished stage-2 run to start from.
    """
    import mlflow

    from training.embed import encoders_of_run
    from training.tracking import connect, latest_finished_run, log_json

    if settings.members < 1:
        raise ValueError(f"teacher members must be at least 1, not {settings.members}")
    connect(ctx.lake_root, ctx.tracking)
    parent = settings.encoder_run_id or latest_finished_run("align")
    if parent is None:
        raise LookupError("no finished stage-2 run: run `cardiolake train align` first")
    ecg, echo, uris = encoders_of_run(parent)
    echo_dim = echo.cfg.embedding_dim
    data = load_labeled(ctx.lake_root, settings.data, echo_dim=echo_dim,
                        version=settings.training_set_version)  # fmt: skip
    train, val = data.split("train"), data.split("validation")
    if len(train) < 2:
        raise TrainingDataError(f"{data.pinned['training_set'].tag}: fewer than 2 train rows")
    spec = TabularSpec.fit(data.frame.iloc[train], numeric_columns(data.frame, TARGETS))
    patients = data.frame["patient_key"].to_numpy()
    withheld = withheld_patients(patients[train], settings.label_fraction, settings.run.seed)
    train = train[~np.isin(patients[train], list(withheld))]
    if len(train) < 2:
        raise TrainingDataError(f"{settings.label_fraction:g} of the labels: < 2 train rows")
    inputs = TeacherInputs.of(data, spec)
    start = copy.deepcopy(ecg)  # every member fine-tunes its own copy of the stage-2 encoder
    logger.info("teacher: %d train / %d validation rows (%d train patients' labels withheld), "
                "%d tabular inputs, echo for %.0f %%", len(train), len(val), len(withheld),
                spec.width, 100 * data.echo_present.mean())  # fmt: skip
    fraction = float(settings.label_fraction)
    stage = StageRun(
        ctx, stage="teacher", settings=settings, pinned=data.pinned,
        tags={**parent_tag(parent), **feast_tags(data.pinned["training_set"]),
              "cardiolake.init": "align", "cardiolake.start_ecg_encoder": uris["ecg"],
              LABEL_FRACTION_TAG: str(fraction)},
        checkpoint_name="teacher" if fraction >= 1.0 else f"teacher-{fraction:g}",
    )  # fmt: skip
    summary: dict[str, Any] = {"parent_run_id": parent}
    with stage:
        members: list[Teacher] = []
        fits: list[dict[str, float]] = []
        for i in range(settings.members):
            # member 0 is checkpointed (a killed run resumes it); the others retrain, seeded
            gen = seed_everything(settings.run.seed + i)
            member = Teacher(ecg if i == 0 else copy.deepcopy(start), echo_dim, spec, settings)
            fits.append(fit(member, inputs, train, val, settings, gen, stage if i == 0 else None))
            members.append(member)
            if ctx.main and np.isfinite(fits[-1]["val_auc"]):
                mlflow.log_metric(f"member{i}_val_auc", fits[-1]["val_auc"])
        model: TeacherModel = members[0] if len(members) == 1 else TeacherEnsemble(members)
        if ctx.main:
            val_logits, _ = predict(model, inputs, val)
            val_t = data.targets[val]
            cal = calibrate(val_logits, val_t, settings.sensitivity)
            metrics = split_metrics("validation", val_logits, val_t, cal)
            mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
            card = {"targets": list(TARGETS), "tabular": spec.as_dict(), **cal.as_dict(),
                    "ecg_fs": settings.data.ecg_fs}  # fmt: skip
            log_json(card, "teacher_card.json")
            logged = log_teacher(model, card, tags={"cardiolake.parent_run": parent})
            targets = write_targets(model, data, spec, logged, ctx.lake_root, settings.data)
            mlflow.set_tags({"cardiolake.teacher_targets": str(targets["version"]),
                             **({"cardiolake.distillation_set": targets["distillation_set"]}
                                if "distillation_set" in targets else {})})  # fmt: skip
            summary |= {"metrics": {**fits[0], **metrics},
                        "member_val_auc": [f["val_auc"] for f in fits],
                        "calibration": cal.as_dict(), "teacher": logged.uri,
                        "targets": targets}  # fmt: skip
        stage.finish({"teacher": members[0]})
    summary["run_id"] = stage.run_id
    return summary


#: The run tag that says which share of the labelled train patients a teacher learnt from.
LABEL_FRACTION_TAG = "cardiolake.label_fraction"


def teacher_fraction(run_id: str) -> str:
    """The label fraction a teacher run learnt from (a run from before the tag: ``1.0``)."""
    import mlflow

    return str(mlflow.get_run(run_id).data.tags.get(LABEL_FRACTION_TAG, "1.0"))


def latest_teacher_run(label_fraction: float = 1.0) -> str | None:
    """The newest finished teacher run trained on ``label_fraction`` of the labels, or None."""
    import mlflow

    found = mlflow.get_experiment_by_name(EXPERIMENTS["teacher"])
    if found is None:
        return None
    runs = mlflow.search_runs(
        [found.experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    wanted = str(float(label_fraction))
    for run in runs:
        if run.data.tags.get(LABEL_FRACTION_TAG, "1.0") == wanted:
            return str(run.info.run_id)
    return None


#: Arrow schema of ``features.teacher_targets``.
TARGETS_SCHEMA = pa.schema(
    [
        ("patient_key", pa.string()),
        ("ecg_record_key", pa.string()),
        ("split", pa.string()),
        ("source", pa.string()),  # labels (a label row) | ecg (every 12-lead ECG)
        ("logits", pa.list_(pa.float32())),  # one per TARGETS, uncalibrated
        ("labels", pa.list_(pa.float32())),  # the label row's labels (NaN unknown / none)
        ("embedding", pa.list_(pa.float32())),  # the teacher's ECG embedding
        ("model_version", pa.string()),  # registered teacher name/version
        ("run_id", pa.string()),
        ("written_at", pa.timestamp("us", tz="UTC")),
    ]
)
TARGETS_KEYS = ("ecg_record_key", "source", "model_version")


def target_rows(
    model: TeacherModel, data: LabeledSet, spec: TabularSpec, source: str, logged: LoggedModel
) -> pa.Table:  # fmt: skip
    """The teacher's logits and ECG embedding of every row of a set."""
    import datetime as dt

    inputs = TeacherInputs.of(data, spec)
    logits, emb = predict(model, inputs, np.arange(len(data.frame)))
    now = dt.datetime.now(dt.UTC)
    n = len(data.frame)
    return pa.table(
        {"patient_key": data.frame["patient_key"].astype(str).tolist(),
         "ecg_record_key": data.frame["ecg_record_key"].astype(str).tolist(),
         "split": data.frame["split"].astype(str).tolist(), "source": [source] * n,
         "logits": list(logits.astype(np.float32)),
         "labels": list(data.targets.astype(np.float32)),
         "embedding": list(emb.astype(np.float32)), "model_version": [logged.label] * n,
         "run_id": [logged.run_id] * n, "written_at": [now] * n},
        schema=TARGETS_SCHEMA,
    )  # fmt: skip


def write_targets(
    model: TeacherModel, labeled: LabeledSet, spec: TabularSpec, logged: LoggedModel,
    lake_root: Path, data: DataSettings,
) -> dict[str, Any]:  # fmt: skip
    """Soft targets of the label rows and, when the distillation set exists, of every ECG."""
    parts = [target_rows(model, labeled, spec, "labels", logged)]
    pool: LabeledSet | None = None
    try:
        pool = load_distillation(lake_root, data, echo_dim=labeled.echo.shape[1])
    except TrainingDataError as exc:
        logger.warning("teacher: no distillation set, the student gets label rows only (%s)",
                       exc)  # fmt: skip
    if pool is not None:
        parts.append(target_rows(model, pool, spec, "ecg", logged))
    version, inserted = merge_rows(pa.concat_tables(parts), tables.TEACHER_TARGETS, lake_root,
                                   keys=TARGETS_KEYS)  # fmt: skip
    out = {"version": version, "inserted": inserted, "label_rows": parts[0].num_rows,
           "ecg_rows": parts[1].num_rows if pool is not None else 0}  # fmt: skip
    if pool is not None:
        out["distillation_set"] = pool.pinned["training_set"].tag
    return out


def feast_tags(pinned: PinnedTable) -> dict[str, str]:
    """The Feast lineage the platform wrote into the training set's commit."""
    from deltalake import DeltaTable

    for entry in DeltaTable(pinned.uri).history():
        if int(entry.get("version", -1)) != pinned.version:
            continue
        return {f"feast.{k}": str(entry[k]) for k in
                ("feature_service", "feast_project", "feature_service_updated",
                 "examples_labeled_version") if k in entry}  # fmt: skip
    return {}


def log_teacher(model: TeacherModel, card: dict[str, Any], tags: dict[str, str]) -> LoggedModel:
    """Register the teacher (its card — targets, tabular scales, calibration — rides along)."""
    import mlflow

    run = mlflow.active_run()
    assert run is not None
    model.card = card  # type: ignore[assignment]
    info = mlflow.pytorch.log_model(
        model.eval(), name="teacher", registered_model_name=TEACHER_MODEL,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        serialization_format="pickle",
    )  # fmt: skip
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(TEACHER_MODEL, version, key, value)
    return LoggedModel(TEACHER_MODEL, version, f"models:/{TEACHER_MODEL}/{version}",
                       run.info.run_id)  # fmt: skip
