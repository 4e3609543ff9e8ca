"""Settings of the training stages: one frozen dataclass per stage, YAML overrides at the edge.

Defaults are sized for a laptop CPU (the measured rates are in the training README); the
same fields move a run to a GPU cluster (``device``, ``echo_size``, ``ecg_fs``, ``processes``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


@dataclass(frozen=True)
class DataSettings:
    """How examples become tensors (shared by every stage).

    Attributes:
        ecg_fs: ECG rate the encoders see (silver stores 500 Hz; 100 Hz keeps CPU runs fast).
        ecg_window_s: length of the ECG crops pretraining contrasts (any length at inference).
        echo_size: echo frames are resized to ``echo_size`` x ``echo_size`` (112 on a GPU).
        echo_frames: frames per echo clip.
        echo_clip_s: seconds a pretraining clip spans (frames spread evenly over it).
        beat_frames: frames of the echo window that follows one R peak in stage 2.
        beat_window_s: ECG seconds around an R peak (before, after) that make one beat.
        key_window_s: echo seconds around end-diastole (before, after) that make one keyframe
            window: ED, the ejection and ES at the end of the T wave (250-450 ms after R).
        reader_workers: Petastorm pool workers (one per core was fastest here).
        reader_pool: ``thread`` or ``process`` (Petastorm's worker pool).
        shuffle_capacity: rows in the loader's shuffling buffer (row groups are shuffled too).
    """

    ecg_fs: int = 100
    ecg_window_s: float = 8.0
    echo_size: int = 64
    echo_frames: int = 16
    echo_clip_s: float = 1.6
    beat_frames: int = 12
    beat_window_s: tuple[float, float] = (0.25, 0.45)
    key_window_s: tuple[float, float] = (0.1, 0.55)
    reader_workers: int = 2
    reader_pool: str = "thread"
    shuffle_capacity: int = 512


@dataclass(frozen=True)
class RunSettings:
    """What every stage's loop shares.

    Attributes:
        epochs: passes over the training split.
        batch_size: examples per optimiser step (per process).
        lr: AdamW learning rate (cosine decay to 10 % over the run).
        weight_decay: AdamW weight decay.
        seed: seeds torch, numpy and the augmentations.
        device: ``cpu`` or ``cuda``.
        bf16: autocast the forward pass to bfloat16.
        grad_checkpointing: recompute block activations in the backward pass (less memory).
        processes: >1 runs the same loop under ``TorchDistributor`` (gloo on CPU).
        max_steps_per_epoch: cap on steps per epoch (0: the whole split).
        embed: write the ``features.*_embedding`` tables when the stage ends.
    """

    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "cpu"
    bf16: bool = False
    grad_checkpointing: bool = False
    processes: int = 1
    max_steps_per_epoch: int = 0
    embed: bool = True


@dataclass(frozen=True)
class EcgEncoderSettings:
    """The 1-D ResNet over any subset of the 12 leads.

    Attributes:
        widths: channels of the four residual stages (each after the first halves time);
            small enough (52k parameters) that the student built on it fits a device budget
            of 300 KB, and trains 3.5x faster on a CPU than (32, 48, 64, 96).
        embedding_dim: size of the recording embedding (global average of the last stage).
        lead_dropout: probability that a lead is hidden from a training view (at least one
            lead always stays), so the encoder accepts any lead subset.
        projection_dim: size of the contrastive projection head's output.
    """

    widths: tuple[int, ...] = (16, 24, 32, 48)
    embedding_dim: int = 64
    lead_dropout: float = 0.4
    projection_dim: int = 64


@dataclass(frozen=True)
class EchoEncoderSettings:
    """The (2+1)-D CNN over grayscale clips.

    Attributes:
        widths: channels of the (2+1)-D stages (each halves height and width, keeps time).
        embedding_dim: size of the clip embedding.
        projection_dim: size of the contrastive projection head's output.
        recon_size: masked frames are predicted at ``recon_size`` x ``recon_size``.
    """

    widths: tuple[int, ...] = (16, 32, 48, 64)
    embedding_dim: int = 128
    projection_dim: int = 64
    recon_size: int = 16


@dataclass(frozen=True)
class PretrainSettings:
    """Stage 1: ECG and echo encoders, each self-supervised on its own unpaired examples.

    Attributes:
        run: the loop.
        data: tensors from examples.
        ecg: the ECG encoder.
        echo: the echo encoder.
        temperature: InfoNCE temperature of both contrastive losses.
        ecg_repeats: passes over the ECG train split per epoch (ECG steps cost a tenth of echo
            steps, and the ECG set is small: one pass per epoch under-trains the ECG encoder).
        gain_jitter: +- relative gain of each ECG view (small: voltage itself is diagnostic).
        mask_fraction: share of each ECG crop (in 0.5 s segments) and of each clip's frames
            that masked reconstruction hides and predicts.
        recon_weight: weight of the masked-reconstruction losses against the contrastive ones.
        modalities: which encoders to train (``ecg``, ``echo``).
        table_version: Delta version of ``gold.examples_pretrain`` to read (None: latest).
        init: ``ssl`` trains; ``random`` only logs a randomly initialised encoder (baseline).
    """

    run: RunSettings = field(default_factory=RunSettings)
    data: DataSettings = field(default_factory=DataSettings)
    ecg: EcgEncoderSettings = field(default_factory=EcgEncoderSettings)
    echo: EchoEncoderSettings = field(default_factory=EchoEncoderSettings)
    temperature: float = 0.1
    ecg_repeats: int = 3
    gain_jitter: float = 0.1
    mask_fraction: float = 0.25
    recon_weight: float = 1.0
    modalities: tuple[str, ...] = ("ecg", "echo")
    table_version: int | None = None
    init: str = "ssl"


@dataclass(frozen=True)
class AlignSettings:
    """Stage 2: beat-level ECG <-> echo keyframe alignment on synchronised pairs.

    Attributes:
        run: the loop.
        data: tensors from examples.
        temperature: InfoNCE temperature of the beat <-> keyframe loss.
        mask_leads: leads hidden from the ECG beat that cross-attention must predict.
        mask_frames: keyframe-window frames hidden that cross-attention must predict.
        recon_weight: weight of the joint masked modelling against the contrastive loss.
        attention_dim: width of the cross-attention between the modalities.
        heads: attention heads.
        beats_per_pair: beats sampled from each aligned pair per epoch.
        encoder_run_id: the stage-1 run whose encoders start the stage (None: the latest
            finished stage-1 run of the experiment).
        table_version: Delta version of ``gold.examples_align`` to read (None: latest).
        retrieval_candidates: candidates per query in the held-out retrieval metric.
        encoder_lr_scale: the pretrained encoders' learning rate relative to the new heads'
            (fine-tuning gently keeps what stage 1 learned).
        rehearsal_weight: weight of stage 1's ECG objective (views + masked segments on whole
            recordings of ``gold.examples_pretrain``), kept during alignment so the
            recording-level embedding learns the echo's view of a beat without forgetting
            rhythm, which single beats do not show; 0 turns it off.
    """

    run: RunSettings = field(default_factory=lambda: RunSettings(epochs=10, batch_size=64))
    data: DataSettings = field(default_factory=DataSettings)
    temperature: float = 0.1
    mask_leads: int = 4
    mask_frames: int = 3
    recon_weight: float = 0.5
    attention_dim: int = 64
    heads: int = 4
    beats_per_pair: int = 4
    encoder_run_id: str | None = None
    table_version: int | None = None
    retrieval_candidates: int = 32
    encoder_lr_scale: float = 0.3
    rehearsal_weight: float = 1.0


@dataclass(frozen=True)
class TeacherSettings:
    """Stage 3a: the multimodal teacher fine-tuned on the labelled training split.

    Attributes:
        run: the loop (small data: more epochs, smaller batches).
        data: tensors from examples.
        hidden: width of the fusion trunk.
        dropout: dropout in the trunk.
        modality_dropout: probability that a training example's echo, and separately its labs,
            are hidden, so the teacher also predicts for patients who lack them.
        finding_weight: weight of the findings' multi-label loss against the triage loss.
        encoder_lr_scale: the stage-2 ECG encoder's learning rate relative to the new heads'.
        gain_jitter: +- relative ECG gain of training examples.
        sensitivity: the operating point's sensitivity target for urgent (on validation).
        encoder_run_id: the stage-2 run whose ECG encoder starts the teacher (None: latest).
        training_set_version: Delta version of ``features.teacher_training_set`` (None: latest).
        patience: epochs without a better validation AUC before stopping.
        members: teachers trained alike from seeds ``run.seed + i`` on the same split; the
            registered teacher scores with the mean of their logits and ECG embeddings (with a
            few hundred labelled patients each member's weights, and the epoch early stopping
            picks on a small validation split, are noisy; the mean cancels part of that
            noise). 1 trains and registers a single teacher.
        label_fraction: share of the labelled train patients whose labels the teacher learns
            from (the same patients a student of this fraction and seed keeps; the rest only
            get soft targets); the run is tagged with it, and a distilled student of fraction
            ``f`` learns from the newest teacher of fraction ``f``.
    """

    run: RunSettings = field(
        default_factory=lambda: RunSettings(epochs=30, batch_size=32, lr=1e-3, weight_decay=1e-3)
    )
    data: DataSettings = field(default_factory=DataSettings)
    hidden: int = 128
    dropout: float = 0.2
    modality_dropout: float = 0.2
    finding_weight: float = 0.5
    encoder_lr_scale: float = 0.3
    gain_jitter: float = 0.1
    sensitivity: float = 0.90
    encoder_run_id: str | None = None
    training_set_version: int | None = None
    patience: int = 8
    members: int = 5
    label_fraction: float = 1.0


@dataclass(frozen=True)
class StudentSettings:
    """Stage 3b: the 1-6 limb-lead student distilled from the teacher.

    Attributes:
        run: the loop.
        data: tensors from examples (``ecg_fs`` is the rate after the student's decimator).
        input_fs: the rate the student takes (the mobile devices' 300 Hz); its first layer is
            a fixed anti-aliasing decimator down to ``data.ecg_fs``.
        seconds: ECG seconds per example (a 30 s mobile strip gives a random 10 s crop).
        init: the ECG encoder the student starts from: ``align`` (stage 2), ``pretrain``
            (stage 1) or ``random``.
        distill: learn from the teacher (soft targets on labelled and unlabelled recordings plus
            its ECG embedding); False trains the same student on the labels alone.
        temperature: distillation temperature of the soft targets.
        soft_weight: weight of the soft-target loss (the hard-label loss gets 1 - this).
        embed_weight: weight of matching the teacher's ECG embedding (cosine).
        label_fraction: share of the labelled train patients whose labels are used (the
            label-efficiency curve); the rest join the unlabelled pool. A distilled student
            learns from the newest teacher trained on the same fraction.
        equal_steps: a labels-only student with a fraction ``f`` of the labels runs ``1/f`` x
            the epochs and patience (the same optimiser steps as with every label; with 25 %
            of the labels the best validation epoch was the 22nd-24th of 25).
        use_mobile: also train on the patients' own mobile recordings (device noise, 30 s).
        finding_weight: weight of the findings' heads against the triage head.
        encoder_lr_scale: a pretrained encoder's learning rate relative to the new heads' (a
            random-init encoder always trains at the full rate).
        sensitivity: the operating point's sensitivity target for urgent (on validation).
        max_weight_kb: the device budget; a bigger student is flagged in its run.
        teacher_run_id: the teacher run whose targets to learn (None: the newest teacher of
            ``label_fraction``; a labels-only student without one: the newest teacher).
        patience: epochs without a better validation AUC before stopping.
    """

    run: RunSettings = field(
        default_factory=lambda: RunSettings(epochs=25, batch_size=64, lr=1e-3, weight_decay=1e-3)
    )
    data: DataSettings = field(default_factory=DataSettings)
    input_fs: int = 300
    seconds: float = 10.0
    init: str = "align"
    distill: bool = True
    temperature: float = 2.0
    soft_weight: float = 0.7
    embed_weight: float = 0.5
    label_fraction: float = 1.0
    equal_steps: bool = True
    use_mobile: bool = True
    finding_weight: float = 0.5
    encoder_lr_scale: float = 1.0
    gain_jitter: float = 0.1
    sensitivity: float = 0.90
    max_weight_kb: float = 300.0
    teacher_run_id: str | None = None
    patience: int = 8


@dataclass(frozen=True)
class EvaluateSettings:
    """Evaluation of the stage-3 models on a lake's labelled examples.

    Attributes:
        run: only ``seed`` matters (the evaluation trains nothing).
        split: ``test`` (the lake's held-out patients) or ``all`` (an external cohort).
        out: folder for ``predictions.parquet``, ``metrics.json`` and plots (None:
            ``<lake>/_evaluation``).
        teacher_run_id: the teacher run to evaluate (None: the newest finished).
        student_run_id: the distilled student run (None: the newest finished, stage-2 init,
            all labels).
        labels_only_run_id: the labels-only student run (None: likewise).
        curve_fractions: label fractions of the label-efficiency students looked for.
        bootstrap: patient resamples behind each 95 % interval.
    """

    run: RunSettings = field(default_factory=RunSettings)
    split: str = "test"
    out: str | None = None
    teacher_run_id: str | None = None
    student_run_id: str | None = None
    labels_only_run_id: str | None = None
    curve_fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    bootstrap: int = 2000

    def __post_init__(self) -> None:
        if self.split not in ("test", "all", "validation", "train"):
            raise ValueError(f"split must be test, all, validation or train, not {self.split!r}")


@dataclass(frozen=True)
class EmbedSettings:
    """Embedding another lake's recordings with already registered encoders.

    An external test cohort is ingested into its own lake; its echo embeddings (a teacher
    input, served by Feast) must come from the encoders the teacher was trained with.

    Attributes:
        run: only ``seed`` matters.
        encoder_run_id: the run whose registered encoders embed (None: the stage-2 run the
            newest teacher started from).
    """

    run: RunSettings = field(default_factory=RunSettings)
    encoder_run_id: str | None = None


def _build(base: T, values: dict[str, Any], where: str) -> T:
    """``base`` with ``values`` replaced; a nested mapping updates that field's own default.

    Starting from the stage's instance (not the nested class) keeps stage-specific nested
    defaults: overriding ``run.epochs`` of the student keeps the student's learning rate.
    """
    known = {f.name for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{where}: unknown settings {sorted(unknown)}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = getattr(base, name)
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            kwargs[name] = _build(default, value, f"{where}.{name}")
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return dataclasses.replace(base, **kwargs)  # type: ignore[type-var]


def load_settings(cls: type[T], config: Path | None, section: str, **overrides: Any) -> T:
    """A stage's settings from an optional YAML section, with dotted overrides on top.

    Args:
        cls: :class:`PretrainSettings` or :class:`AlignSettings`.
        config: YAML file; its ``section`` (``pretrain``, ``align``) holds nested mappings
            mirroring the dataclasses, e.g. ``pretrain: {run: {epochs: 2}}``.
        section: the file's top-level key for this stage.
        **overrides: ``"run.epochs"``-style keys (use ``__`` for the dot in keyword form);
            ``None`` values are ignored.

    Returns:
        The frozen settings.

    Raises:
        ValueError: when the file or an override names an unknown field.
    """
    values: dict[str, Any] = {}
    if config is not None:
        data = yaml.safe_load(Path(config).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{config}: expected a mapping at the top level")
        values = dict(data.get(section) or {})
    for key, value in overrides.items():
        if value is None:
            continue
        parts = key.replace("__", ".").split(".")
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _build(cls(), values, f"{config or 'settings'}:{section}")


def as_params(settings: object, prefix: str = "") -> dict[str, str]:
    """Flatten a settings dataclass into MLflow params (``run.epochs`` -> ``"8"``)."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            out.update(as_params(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = str(value)
    return out
