"""Transforms, settings, encoders and metrics of the training package (training environment)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from training.aligner import retrieval_top1
from training.embed import EcgEmbedder
from training.encoders import EcgEncoder, EchoEncoder, info_nce
from training.pretrain import ecg_views
from training.settings import (
    AlignSettings,
    EcgEncoderSettings,
    EchoEncoderSettings,
    PretrainSettings,
    StudentSettings,
    TeacherSettings,
    as_params,
    load_settings,
)
from training.transforms import BeatShape, beat_rows, crop, frames_at, resample


def test_resample_keeps_duration_and_a_sine() -> None:
    t = np.arange(5000) / 500.0
    x = np.sin(2 * np.pi * 5 * t)[None, :]
    y = resample(x, 500.0, 100)
    assert y.shape == (1, 1000)
    t100 = np.arange(1000) / 100.0
    assert np.max(np.abs(y[0, 50:-50] - np.sin(2 * np.pi * 5 * t100[50:-50]))) < 0.02


def test_crop_pads_short_and_cuts_long() -> None:
    x = np.arange(10, dtype=np.float32)[None, :]
    assert crop(x, 4, None).tolist() == [[0, 1, 2, 3]]
    padded = crop(x, 12, None)
    assert padded.shape == (1, 12) and padded[0, 10:].tolist() == [0, 0]
    assert crop(x, 4, np.random.default_rng(0)).flags["C_CONTIGUOUS"]


def test_frames_at_picks_the_nearest_frame() -> None:
    frames = np.arange(5, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8)
    times = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    got = frames_at(frames, times, np.array([0.04, 0.06, 0.26, 0.9]))[:, 0, 0]
    assert got.tolist() == [0, 1, 3, 4]


def test_beat_rows_cut_the_ecg_at_the_r_peak_and_the_echo_at_end_diastole() -> None:
    fs, n = 500, 5000
    lead = np.zeros(n, np.float32)
    lead[2500] = 1.0  # one spike at 5.0 s
    frames = np.arange(90, dtype=np.uint8)[:, None, None] * np.ones((1, 8, 8), np.uint8)
    row = {
        "example_key": "k", "patient_key": "p", "r_peaks_s": [5.0, 9.95], "ed_s": [5.06, 10.0],
        "clip_start_s": 4.0, "fs": fs, "n_samples": n, "frames": frames.tobytes(),
        "n_frames": 90, "size": 8, "fps": 30.0, "frame_times_s": (np.arange(90) / 30).tolist(),
        **{f"lead_{x}": (lead if x == "I" else None) for x in
           ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")},
    }  # fmt: skip
    shape = BeatShape(fs=100, ecg_before_s=0.3, ecg_after_s=0.5, size=8, frames=4,
                      key_before_s=0.1, key_after_s=0.5, beats=0)  # fmt: skip
    out = beat_rows(pd.DataFrame([row]), shape)
    assert len(out) == 1  # the second beat's ECG window runs past the recording's end
    beat = out.iloc[0]
    assert beat["ecg"].shape == (12, 80)
    assert int(np.argmax(beat["ecg"][0])) == 30  # the R peak sits 0.3 s into the window
    assert beat["lead_mask"].tolist() == [1.0] + [0.0] * 11
    # ED at 5.06 s on the ECG axis is 1.06 s into the clip; the window spans -0.1 .. +0.5 s
    assert beat["keyframes"][:, 0, 0].tolist() == [29, 35, 41, 47]


def test_settings_load_yaml_and_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_text("pretrain:\n  run: {epochs: 3}\n  data: {echo_size: 112}\n  modalities: [ecg]\n")
    s = load_settings(PretrainSettings, cfg, "pretrain", **{"run.batch_size": 8})
    assert (s.run.epochs, s.run.batch_size, s.data.echo_size, s.modalities) == (3, 8, 112, ("ecg",))
    assert as_params(s)["run.epochs"] == "3"
    with pytest.raises(ValueError, match="unknown settings"):
        load_settings(AlignSettings, None, "align", **{"run.epoch": 2})


def test_ecg_encoder_takes_any_lead_subset_and_any_length() -> None:
    enc = EcgEncoder(EcgEncoderSettings()).eval()
    dim = enc.cfg.embedding_dim
    x = torch.randn(3, 12, 700)
    for leads in ([0], [0, 1], list(range(6)), list(range(12))):
        mask = torch.zeros(3, 12)
        mask[:, leads] = 1
        assert enc(x, mask).shape == (3, dim)
    assert enc(torch.randn(2, 12, 3000), torch.ones(2, 12)).shape == (2, dim)
    # absent leads do not leak: changing a masked lead changes nothing
    mask = torch.zeros(1, 12)
    mask[:, 0] = 1
    a, b = x[:1].clone(), x[:1].clone()
    b[:, 5] += 10
    assert torch.allclose(enc(a, mask), enc(b, mask))


def test_embedder_reads_nan_leads_as_absent() -> None:
    enc = EcgEncoder(EcgEncoderSettings()).eval()
    x = torch.randn(2, 12, 500)
    mask = torch.ones(2, 12)
    mask[:, 6:] = 0
    with_nan = x.clone()
    with_nan[:, 6:] = float("nan")
    with torch.no_grad():
        assert torch.allclose(
            EcgEmbedder(enc)(with_nan), enc(x * mask[:, :, None], mask), atol=1e-5
        )


def test_echo_encoder_shapes() -> None:
    enc = EchoEncoder(EchoEncoderSettings())
    clips = torch.randint(0, 255, (2, 16, 64, 64), dtype=torch.uint8)
    assert enc(clips).shape == (2, 128)
    assert enc.features(clips).shape == (2, 64, 16, 4, 4)


def test_ecg_views_keep_a_lead_and_mark_what_to_reconstruct() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 12, 1000)
    mask = torch.zeros(16, 12)
    mask[:, 0] = 1  # one-lead recordings
    view, keep, clean, target = ecg_views(x, mask, samples=800, fs=100, lead_dropout=0.9,
                                          mask_fraction=0.5, gen=gen)  # fmt: skip
    assert view.shape == clean.shape == (16, 12, 800)
    assert torch.all(keep[:, 0] == 1) and torch.all(keep[:, 1:] == 0)
    assert not target[:, 1:].any()  # absent leads are never targets
    assert target[:, 0].any()


def test_info_nce_prefers_matching_rows_and_retrieval_is_perfect_on_copies() -> None:
    z = torch.nn.functional.normalize(torch.randn(64, 16), dim=1)
    assert info_nce(z, z, 0.1) < info_nce(z, z.roll(1, 0), 0.1)
    patients = torch.arange(64)
    top1, n = retrieval_top1(z, z, patients, candidates=32, gen=torch.Generator().manual_seed(0))
    assert n == 64 and top1 == 1.0
    shuffled, _ = retrieval_top1(z, z[torch.randperm(64)], patients, candidates=32,
                                 gen=torch.Generator().manual_seed(0))  # fmt: skip
    assert shuffled < 0.3


def test_bf16_autocast_and_gradient_checkpointing_train_the_same_step() -> None:
    from dataclasses import replace

    from training.pretrain import build_models, ecg_step, echo_step

    base = PretrainSettings()
    batch = {"ecg": torch.randn(4, 12, 1000), "lead_mask": torch.ones(4, 12)}
    clips = {"clips": torch.randint(0, 255, (4, 2, 16, 64, 64), dtype=torch.uint8)}
    for run in (replace(base.run, bf16=True), replace(base.run, grad_checkpointing=True)):
        settings = replace(base, run=run)
        torch.manual_seed(0)
        ecg, echo = build_models(settings)
        assert ecg.encoder.grad_checkpointing == run.grad_checkpointing
        gen = torch.Generator().manual_seed(0)
        for model, step, data in ((ecg, ecg_step, batch), (echo, echo_step, clips)):
            loss, _ = step(model, data, settings, gen)
            loss.backward()
            grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
            assert torch.isfinite(loss) and grads and all(torch.isfinite(g).all() for g in grads)


def test_overriding_one_run_field_keeps_the_stage_defaults() -> None:
    student = load_settings(StudentSettings, None, "student", **{"run.epochs": 3})
    assert student.run.epochs == 3
    # the student's own learning rate and weight decay, not RunSettings' class defaults
    assert (student.run.lr, student.run.weight_decay) == (1e-3, 1e-3)
    teacher = load_settings(TeacherSettings, None, "teacher", **{"run.seed": 4})
    assert (teacher.run.seed, teacher.run.epochs, teacher.run.batch_size) == (4, 30, 32)
