"""Stage 3b: the mobile-ECG student, distilled from the teacher into 1-6 limb leads.

The student takes any subset of the limb leads I, II, III, aVR, aVL, aVF at the devices' rate
(300 Hz) with a lead mask; a fixed anti-aliasing decimator brings it to the encoder's rate, and
the encoder is the stage-2 (or stage-1, or a random) ECG encoder. It learns from:

* the teacher's soft targets (temperature ``T``) on every 12-lead ECG the teacher scored — the
  labelled rows *and* the unlabelled pool, where distillation earns its keep;
* the teacher's ECG embedding (cosine matching through a projection head);
* the labels of the labelled train patients (``label_fraction`` of them);
* limb leads derived from each 12-lead *and* the patients' own mobile recordings (device
  noise, 30 s strips, random 10 s crops), each example with a random device lead set.

With ``distill=False`` the same student trains on the labels alone (the distillation lift is
the difference). Calibration and the operating point follow the teacher's recipe, with one
threshold per lead count: a device knows how many leads it records.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import torch
import torch.nn.functional as F
from scipy.signal import firwin
from torch import nn

from cardiolake import tables
from cardiolake.domain import EVALUATION_LEAD_SETS, LIMB_LEADS, RESTING_12LEAD
from cardiolake.tracking import STUDENT_MODEL
from training.calibration import calibrated, fit_temperature, threshold_for_sensitivity
from training.encoders import EcgEncoder, count_parameters
from training.labeled import TARGETS, ecg_by_record, withheld_patients
from training.lake import PinnedTable, TrainingDataError, pin, read_columns
from training.metrics import auc
from training.runner import Context, StageRun, cosine_lr, parent_tag, seed_everything
from training.settings import EcgEncoderSettings, StudentSettings
from training.teacher import latest_teacher_run, multilabel_loss, teacher_fraction
from training.tracking import LoggedModel, log_json
from training.transforms import N_LEADS

logger = logging.getLogger(__name__)

N_LIMB = len(LIMB_LEADS)
#: Seconds of a mobile strip kept in memory (crops of ``seconds`` are drawn from it).
MOBILE_SECONDS = 30.0


class Decimator(nn.Module):
    """Fixed anti-aliasing FIR low-pass and integer downsampling, per lead (exports to ONNX)."""

    def __init__(self, fs_in: int, fs_out: int, channels: int = N_LIMB) -> None:
        super().__init__()
        if fs_in % fs_out:
            raise ValueError(f"input rate {fs_in} Hz is not a multiple of {fs_out} Hz")
        self.factor = fs_in // fs_out
        self.channels = channels
        taps = 8 * self.factor + 1 if self.factor > 1 else 1
        h = firwin(taps, 0.9 / self.factor) if self.factor > 1 else np.ones(1)
        kernel = torch.tensor(h, dtype=torch.float32).repeat(channels, 1, 1)
        self.register_buffer("kernel", kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) at ``fs_in`` -> (B, C, ceil(T / factor)) at ``fs_out``."""
        if self.factor == 1:
            return x
        pad = self.kernel.shape[-1] // 2
        return F.conv1d(x, self.kernel, stride=self.factor, padding=pad, groups=self.channels)


class Student(nn.Module):
    """(B, 6, T) limb leads at ``input_fs`` (absent leads zero) and (B, 6) mask -> logits, z."""

    def __init__(self, encoder: EcgEncoder, input_fs: int, encoder_fs: int, teacher_dim: int
                 ) -> None:  # fmt: skip
        super().__init__()
        self.decimate = Decimator(input_fs, encoder_fs)
        self.encoder = encoder
        d = encoder.cfg.embedding_dim
        self.heads = nn.Linear(d, len(TARGETS))
        self.match = nn.Linear(d, teacher_dim)
        self.input_fs = input_fs
        self.leads = LIMB_LEADS
        self.targets = TARGETS

    def forward(self, ecg: torch.Tensor, lead_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Logits (B, targets) and the projection (B, teacher_dim) matched to the teacher."""
        x = self.decimate(ecg * lead_mask[:, :, None])
        b, _, t = x.shape
        full = torch.cat([x, x.new_zeros(b, N_LEADS - N_LIMB, t)], dim=1)
        mask = torch.cat([lead_mask, lead_mask.new_zeros(b, N_LEADS - N_LIMB)], dim=1)
        z = self.encoder(full, mask)
        return self.heads(z), self.match(z)

    def weight_kb(self) -> float:
        """Float32 size of the trainable weights, in KB (the device budget)."""
        return count_parameters(self) * 4 / 1024


def recorded_samples(strips: np.ndarray) -> np.ndarray:
    """(N,) samples each zero-padded (N, C, T) strip really holds (to its last non-zero)."""
    any_lead = np.any(strips != 0, axis=1)
    last = np.where(
        any_lead.any(axis=1), strips.shape[-1] - np.argmax(any_lead[:, ::-1], axis=1), 0
    )
    return last.astype(np.int64)


def lead_mask_of(leads: tuple[str, ...]) -> np.ndarray:
    """The (6,) limb-lead mask of a lead set."""
    return np.array([1.0 if lead in leads else 0.0 for lead in LIMB_LEADS], dtype=np.float32)


@dataclass
class StudentData:
    """Everything the student trains and validates on, in memory.

    Attributes:
        ecg: (N, 6, T) limb leads at ``input_fs`` (12-lead rows 10 s, mobile rows 30 s padded).
        present: (N, 6) leads the recording has.
        length: (N,) samples really recorded.
        mobile: (N,) the row is a mobile recording (else limb leads of a 12-lead).
        patient: (N,) patient keys; split: (N,) splits.
        teacher: (N, targets) teacher logits (NaN rows: none).
        teacher_z: (N, D) teacher ECG embeddings.
        labels: (N, targets) labels used for training/validation (NaN: unknown or withheld).
        pinned: Delta versions read.
    """

    ecg: np.ndarray
    present: np.ndarray
    length: np.ndarray
    mobile: np.ndarray
    patient: np.ndarray
    split: np.ndarray
    teacher: np.ndarray
    teacher_z: np.ndarray
    labels: np.ndarray
    pinned: dict[str, PinnedTable]


def teacher_version(targets: PinnedTable, run_id: str | None) -> str:
    """The teacher version whose targets to use: of ``run_id``, else the newest written."""
    frame = read_columns(targets, ["model_version", "run_id", "written_at"]).to_pandas()
    if run_id is not None:
        frame = frame[frame["run_id"] == run_id]
    if frame.empty:
        raise TrainingDataError(f"{targets.tag} has no targets of teacher run {run_id}: run "
                                "`cardiolake train teacher` first")  # fmt: skip
    return str(frame.sort_values("written_at")["model_version"].iloc[-1])


def load_student_data(lake_root: Path, settings: StudentSettings, teacher_run: str | None
                      ) -> tuple[StudentData, str]:  # fmt: skip
    """The 12-lead and mobile recordings with the teacher's targets and the labels.

    Args:
        lake_root: the lake.
        settings: the student's settings.
        teacher_run: the teacher run whose targets to learn; None (a labels-only student,
            which only needs the recordings the teacher scored): the newest teacher's.

    Raises:
        TrainingDataError: no teacher targets, or none of ``teacher_run`` (a distilled student
            needs its teacher).
    """
    targets_pin = pin(tables.TEACHER_TARGETS, lake_root)
    if teacher_run is None and settings.distill:
        f = f"{settings.label_fraction:g}"
        raise TrainingDataError(
            f"no finished teacher trained on {f} of the labels: run "
            f"`cardiolake train teacher --set label_fraction={f}` first"
        )
    version = teacher_version(targets_pin, teacher_run)
    frame = ds.dataset(targets_pin.paths, format="parquet").to_table(
        filter=ds.field("model_version") == version
    ).to_pandas()  # fmt: skip
    labels_rows = frame[frame["source"] == "labels"]
    ecg_rows = frame[frame["source"] == "ecg"]
    # one row per 12-lead ECG: the pool's, else the label row's (same teacher inputs' record)
    per_record = pd.concat([ecg_rows, labels_rows]).drop_duplicates("ecg_record_key")
    label_of = {r: np.asarray(v, np.float32) for r, v in
                zip(labels_rows["ecg_record_key"], labels_rows["labels"], strict=True)}  # fmt: skip
    examples = pin(tables.EXAMPLES_PRETRAIN, lake_root)
    meta = read_columns(examples, ["record_key", "patient_key", "split", "modality",
                                   "device_kind"]).to_pandas()  # fmt: skip
    meta = meta[meta["modality"] == "ecg"]
    teacher_of_patient = per_record.drop_duplicates("patient_key").set_index("patient_key")
    mobile = meta[(meta["device_kind"] != RESTING_12LEAD)
                  & meta["patient_key"].isin(teacher_of_patient.index)]  # fmt: skip
    if not settings.use_mobile:
        mobile = mobile.iloc[:0]
    fs = settings.input_fs
    rec_keys = per_record["ecg_record_key"].tolist()
    twelve, mask12, found12 = ecg_by_record(examples, lake_root, fs, rec_keys, key="record_key",
                                            seconds=MOBILE_SECONDS)  # fmt: skip
    mob, mask_m, found_m = ecg_by_record(examples, lake_root, fs, mobile["record_key"].tolist(),
                                         key="record_key", seconds=MOBILE_SECONDS)  # fmt: skip
    n12 = int(round(settings.seconds * fs))
    length12 = np.full(len(rec_keys), n12)
    length_m = recorded_samples(mob)
    keep12, keepm = np.flatnonzero(found12), np.flatnonzero(found_m)
    lab_patients = labels_rows.loc[labels_rows["split"] == "train", "patient_key"].to_numpy()
    withheld = withheld_patients(lab_patients, settings.label_fraction, settings.run.seed)
    nan_row = np.full(len(TARGETS), np.nan, np.float32)

    def labels_for(patient: str, record: str | None) -> np.ndarray:
        if patient in withheld:
            return nan_row
        if record is not None and record in label_of:
            return label_of[record]
        rec = label_key_of_patient.get(patient)
        return label_of[rec] if rec is not None else nan_row

    label_key_of_patient = dict(zip(labels_rows["patient_key"], labels_rows["ecg_record_key"],
                                    strict=True))  # fmt: skip
    tp = teacher_of_patient
    rows12 = per_record.iloc[keep12]
    rows_m = mobile.iloc[keepm]
    data = StudentData(
        ecg=np.concatenate([twelve[keep12, :N_LIMB], mob[keepm, :N_LIMB]]),
        present=np.concatenate([mask12[keep12, :N_LIMB], mask_m[keepm, :N_LIMB]]),
        length=np.concatenate([length12[keep12], length_m[keepm]]),
        mobile=np.concatenate([np.zeros(len(keep12), bool), np.ones(len(keepm), bool)]),
        patient=np.concatenate([rows12["patient_key"].to_numpy(),
                                rows_m["patient_key"].to_numpy()]),
        split=np.concatenate([rows12["split"].to_numpy(), rows_m["split"].to_numpy()]),
        teacher=np.stack([*map(np.asarray, rows12["logits"]),
                          *(np.asarray(tp.loc[p, "logits"]) for p in rows_m["patient_key"])]
                         ).astype(np.float32),
        teacher_z=np.stack([*map(np.asarray, rows12["embedding"]),
                            *(np.asarray(tp.loc[p, "embedding"]) for p in rows_m["patient_key"])]
                           ).astype(np.float32),
        labels=np.stack([*(labels_for(p, r) for p, r in
                           zip(rows12["patient_key"], rows12["ecg_record_key"], strict=True)),
                         *(labels_for(p, None) for p in rows_m["patient_key"])]),
        pinned={"teacher_targets": targets_pin, "examples": examples},
    )  # fmt: skip
    return data, version


#: Device lead sets drawn for a training example derived from a 12-lead (a 6-lead strip may
#: be thinned to a smaller device's set too).
_TRAIN_LEAD_SETS = tuple(EVALUATION_LEAD_SETS.values())


def make_batch(data: StudentData, idx: np.ndarray, settings: StudentSettings,
               rng: np.random.Generator, *, train: bool,
               leads: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """Crops, device lead sets and (in training) gain/noise of rows ``idx``."""
    n = int(round(settings.seconds * settings.input_fs))
    x = np.zeros((len(idx), N_LIMB, n), dtype=np.float32)
    m = np.zeros((len(idx), N_LIMB), dtype=np.float32)
    for k, i in enumerate(idx):
        length = max(int(data.length[i]), 1)
        start = int(rng.integers(0, max(length - n, 0) + 1)) if train else 0
        seg = data.ecg[i, :, start : start + n]
        x[k, :, : seg.shape[-1]] = seg
        want = (
            leads
            if leads is not None
            else (
                _TRAIN_LEAD_SETS[int(rng.integers(len(_TRAIN_LEAD_SETS)))] if train else LIMB_LEADS
            )
        )
        mask = lead_mask_of(want) * data.present[i]
        if mask.sum() == 0:  # the set asks for leads the strip lacks: take what it has
            mask = data.present[i].copy()
        m[k] = mask
    if train:
        gain = 1.0 + settings.gain_jitter * (2 * rng.random((len(idx), 1, 1)) - 1)
        x = (x * gain + 0.02 * rng.standard_normal(x.shape)).astype(np.float32)
    return {"ecg": torch.from_numpy(x * m[:, :, None]), "lead_mask": torch.from_numpy(m),
            "teacher": torch.from_numpy(data.teacher[idx]),
            "teacher_z": torch.from_numpy(data.teacher_z[idx]),
            "labels": torch.from_numpy(data.labels[idx])}  # fmt: skip


def soft_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
              finding_weight: float) -> torch.Tensor:  # fmt: skip
    """Binary KD per head: BCE against the teacher's tempered probabilities, times T^2."""
    known = torch.isfinite(teacher).all(dim=1)
    if not known.any():
        return student.sum() * 0.0
    t = torch.sigmoid(teacher[known] / temperature)
    per = F.binary_cross_entropy_with_logits(student[known] / temperature, t, reduction="none")
    per_head = per.mean(0) * temperature**2
    return per_head[0] + finding_weight * per_head[1:].mean()


def student_loss(model_out: tuple[torch.Tensor, torch.Tensor], batch: dict[str, torch.Tensor],
                 settings: StudentSettings) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """Soft targets + hard labels + embedding matching (labels alone when not distilling)."""
    logits, z = model_out
    labels = batch["labels"]
    has_label = torch.isfinite(labels[:, 0])
    hard = (multilabel_loss(logits[has_label], labels[has_label], settings.finding_weight)
            if has_label.any() else logits.sum() * 0.0)  # fmt: skip
    if not settings.distill:
        return hard, {"hard": float(hard.detach())}
    soft = soft_loss(logits, batch["teacher"], settings.temperature, settings.finding_weight)
    match = (1 - F.cosine_similarity(z, batch["teacher_z"], dim=1)).mean()
    w = settings.soft_weight
    loss = w * soft + (1 - w) * hard + settings.embed_weight * match
    return loss, {"soft": float(soft.detach()), "hard": float(hard.detach()),
                  "embed": float(match.detach())}  # fmt: skip


@torch.no_grad()
def predict(model: Student, data: StudentData, idx: np.ndarray, settings: StudentSettings,
            leads: tuple[str, ...] | None, batch_size: int = 128) -> np.ndarray:  # fmt: skip
    """Logits of rows ``idx`` with a fixed lead set (None: each recording's own leads)."""
    model.eval()
    rng = np.random.default_rng(0)
    out = []
    for s in range(0, len(idx), batch_size):
        b = make_batch(data, idx[s : s + batch_size], settings, rng, train=False, leads=leads)
        out.append(model(b["ecg"], b["lead_mask"])[0].float().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(TARGETS)), np.float32)


def validation_rows(data: StudentData) -> np.ndarray:
    """Labelled validation rows derived from 12-leads (the early-stopping set)."""
    ok = (data.split == "validation") & ~data.mobile & np.isfinite(data.labels[:, 0])
    return np.flatnonzero(ok)


def validation_auc(model: Student, data: StudentData, settings: StudentSettings,
                   rows: np.ndarray | None = None) -> float:  # fmt: skip
    """Mean triage AUC over the 1-lead and 6-lead inputs of ``rows`` (the validation rows)."""
    val = validation_rows(data) if rows is None else rows
    aucs = [auc(data.labels[val, 0],
                predict(model, data, val, settings, EVALUATION_LEAD_SETS[k])[:, 0])
            for k in (1, 6)]  # fmt: skip
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")


def scaled_schedule(settings: StudentSettings) -> tuple[int, int]:
    """The student's (epochs, patience), stretched for a label-efficiency student.

    With ``equal_steps``, a student that sees a fraction ``f`` of the labels alone runs ``1/f``
    times the epochs, so every point of the label-efficiency curve gets the optimiser steps of
    the full-label student (early stopping still applies).
    """
    scale = 1.0
    if settings.equal_steps and not settings.distill and 0 < settings.label_fraction < 1:
        scale = 1.0 / settings.label_fraction
    return int(round(settings.run.epochs * scale)), int(round(settings.patience * scale))


def fit_student(model: Student, data: StudentData, settings: StudentSettings,
                stage: StageRun | None) -> dict[str, float]:  # fmt: skip
    """Train with early stopping on validation AUC; leaves the best weights loaded."""
    run = settings.run
    train = np.flatnonzero(data.split == "train")
    if not settings.distill:  # labels alone: only rows with a label teach anything
        train = train[np.isfinite(data.labels[train, 0])]
    if len(train) < 2:
        raise TrainingDataError("the student has fewer than 2 training rows")
    encoder = list(model.encoder.parameters())
    mine = {id(p) for p in encoder}
    optimizer = torch.optim.AdamW(
        [{"params": encoder,
          "lr_scale": 1.0 if settings.init == "random" else settings.encoder_lr_scale},
         {"params": [p for p in model.parameters() if id(p) not in mine], "lr_scale": 1.0}],
        lr=run.lr, weight_decay=run.weight_decay,
    )  # fmt: skip
    best_model = copy.deepcopy(model)
    state: dict[str, nn.Module | torch.optim.Optimizer] = {
        "student": model, "best": best_model, "optimizer": optimizer}  # fmt: skip
    start, history = 0, {}
    if stage is not None:
        stage.restore(state)
        start, history = stage.start_epoch, stage.curves.history
    scores = list(history.get("val_auc", []))
    best_epoch = int(np.nanargmax(scores)) if scores and np.isfinite(scores).any() else -1
    epochs, patience = scaled_schedule(settings)
    rng = np.random.default_rng(run.seed)
    for epoch in range(start, epochs):
        if best_epoch >= 0 and epoch - 1 - best_epoch >= patience:
            break
        cosine_lr(optimizer, run.lr, epoch / max(1, epochs))
        rng = np.random.default_rng(run.seed * 1000 + epoch)
        model.train()
        parts: dict[str, list[float]] = {}
        order = rng.permutation(train)
        for s in range(0, len(order), run.batch_size):
            idx = order[s : s + run.batch_size]
            if len(idx) < 2:
                continue
            batch = make_batch(data, idx, settings, rng, train=True)
            loss, stats = student_loss(model(batch["ecg"], batch["lead_mask"]), batch, settings)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            for k, v in {"loss": float(loss.detach()), **stats}.items():
                parts.setdefault(k, []).append(v)
        metrics = {k: float(np.mean(v)) for k, v in parts.items()}
        metrics["val_auc"] = validation_auc(model, data, settings)
        scores.append(metrics["val_auc"])
        if np.isfinite(metrics["val_auc"]) and (
            best_epoch < 0 or metrics["val_auc"] > scores[best_epoch]
        ):
            best_epoch = epoch
            best_model.load_state_dict(model.state_dict())
        if stage is not None:
            stage.end_epoch(epoch, metrics, state, best_key="val_auc", higher_is_better=True)
    if best_epoch >= 0:
        model.load_state_dict(best_model.state_dict())
    # the kept weights' AUC on the labelled rows they learned from: next to val_auc it shows
    # how far the student fits versus generalises (a small cohort's val split is noisy)
    fitted = np.flatnonzero((data.split == "train") & ~data.mobile
                            & np.isfinite(data.labels[:, 0]))  # fmt: skip
    return {"val_auc": float(scores[best_epoch]) if best_epoch >= 0 else float("nan"),
            "train_auc": validation_auc(model, data, settings, fitted),
            "best_epoch": float(best_epoch + 1), "epochs_run": float(len(scores))}  # fmt: skip


def student_calibration(model: Student, data: StudentData, settings: StudentSettings
                        ) -> dict[str, Any]:  # fmt: skip
    """Temperatures (per head, pooled over lead sets) and one urgent threshold per lead count."""
    val = validation_rows(data)
    per_set = {k: predict(model, data, val, settings, leads)
               for k, leads in EVALUATION_LEAD_SETS.items()}  # fmt: skip
    y = data.labels[val]
    pooled = np.concatenate(list(per_set.values()))
    ys = np.concatenate([y] * len(per_set))
    temps = {}
    for j, name in enumerate(TARGETS):
        ok = np.isfinite(ys[:, j])
        temps[name] = fit_temperature(pooled[ok, j], ys[ok, j])
    thresholds = {}
    ok = np.isfinite(y[:, 0])
    for k, logits in per_set.items():
        p = calibrated(logits[ok, 0], temps[TARGETS[0]])
        thresholds[str(k)] = (threshold_for_sensitivity(p, y[ok, 0], settings.sensitivity)
                              if (y[ok, 0] > 0).any() else 0.5)  # fmt: skip
    return {"temperatures": temps, "thresholds_by_lead_count": thresholds,
            "sensitivity_target": settings.sensitivity}  # fmt: skip


def initial_encoder(settings: StudentSettings) -> tuple[EcgEncoder, dict[str, str]]:
    """The ECG encoder the student starts from, and tags saying which."""
    from training.embed import encoders_of_run
    from training.tracking import latest_finished_run

    if settings.init == "random":
        return EcgEncoder(EcgEncoderSettings()), {"cardiolake.init": "random"}
    run_id = latest_finished_run(settings.init)
    if run_id is None:
        raise LookupError(f"no finished {settings.init} run to start the student from")
    ecg, _echo, uris = encoders_of_run(run_id)
    return ecg, {"cardiolake.init": settings.init, "cardiolake.start_ecg_encoder": uris["ecg"],
                 **parent_tag(run_id)}  # fmt: skip


def train_student(settings: StudentSettings, ctx: Context) -> dict[str, Any]:
    """Run stage 3b: distil (or train on labels alone), calibrate and register the student.

    Raises:
        training.lake.TrainingDataError: no teacher targets (run the teacher first).
        LookupError: no encoder run to start from.
    """
    import mlflow

    from training.tracking import connect

    connect(ctx.lake_root, ctx.tracking)
    # a distilled student learns from the teacher of its own label fraction: a teacher that
    # saw more labels would hand it labels the curve says it does not have
    teacher_run = settings.teacher_run_id or latest_teacher_run(settings.label_fraction)
    data, teacher = load_student_data(ctx.lake_root, settings, teacher_run)
    seed_everything(settings.run.seed)
    encoder, init_tags = initial_encoder(settings)
    model = Student(encoder, settings.input_fs, settings.data.ecg_fs, data.teacher_z.shape[1])
    kind = "distilled" if settings.distill else "labels_only"
    logger.info(
        "student (%s, init %s): %d rows (%d mobile), %.0f KB of weights",
        kind,
        settings.init,
        len(data.split),
        int(data.mobile.sum()),
        model.weight_kb(),
    )
    stage = StageRun(
        ctx, stage="student", settings=settings, pinned=data.pinned,
        tags={**init_tags, "cardiolake.teacher": teacher, "cardiolake.student_kind": kind,
              "cardiolake.label_fraction": str(settings.label_fraction),
              **({"cardiolake.teacher_label_fraction": teacher_fraction(teacher_run)}
                 if teacher_run is not None else {})},
        checkpoint_name=f"student-{kind}-{settings.init}-{settings.label_fraction:g}",
    )  # fmt: skip
    summary: dict[str, Any] = {"teacher": teacher, "kind": kind}
    with stage:
        best = fit_student(model, data, settings, stage)
        if ctx.main:
            cal = student_calibration(model, data, settings)
            weight_kb = model.weight_kb()
            mlflow.log_metrics({"weight_kb": weight_kb, **{f"best_{k}": v for k, v in best.items()
                                                           if np.isfinite(v)}})  # fmt: skip
            mlflow.set_tag(
                "cardiolake.within_device_budget", str(weight_kb <= settings.max_weight_kb).lower()
            )
            card = {"targets": list(TARGETS), "leads": list(LIMB_LEADS),
                    "input_fs": settings.input_fs, "seconds": settings.seconds, **cal,
                    "kind": kind, "teacher": teacher}  # fmt: skip
            log_json(card, "student_card.json")
            logged = log_student(model, card)
            summary |= {"metrics": best, "calibration": cal, "student": logged.uri,
                        "weight_kb": weight_kb}  # fmt: skip
        stage.finish({"student": model})
    summary["run_id"] = stage.run_id
    return summary


def log_student(model: Student, card: dict[str, Any]) -> LoggedModel:
    """Register the student with a signature: (B, 6, T) float32 limb leads, NaN = absent."""
    import mlflow
    from mlflow.models import infer_signature

    wrapper = StudentScorer(model.eval())
    example = np.zeros((2, N_LIMB, int(card["seconds"] * card["input_fs"])), np.float32)
    example[:, 1:] = np.nan
    with torch.no_grad():
        out = wrapper(torch.from_numpy(example)).numpy()
    run = mlflow.active_run()
    assert run is not None
    wrapper.card = card  # type: ignore[assignment]
    info = mlflow.pytorch.log_model(
        wrapper, name="student", signature=infer_signature(example, out), input_example=example,
        registered_model_name=STUDENT_MODEL,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        serialization_format="pickle",
    )  # fmt: skip
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_model_version_tag(STUDENT_MODEL, version, "cardiolake.kind", str(card["kind"]))
    return LoggedModel(STUDENT_MODEL, version, f"models:/{STUDENT_MODEL}/{version}",
                       run.info.run_id)  # fmt: skip


class StudentScorer(nn.Module):
    """(B, 6, T) limb leads with NaN for absent ones -> (B, targets) logits (one input)."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.isfinite(x).all(dim=-1).float()
        return self.student(torch.nan_to_num(x), mask)[0]


__all__ = ["Student", "StudentScorer", "train_student"]
