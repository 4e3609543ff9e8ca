"""The teacher ensemble scores as the mean of its members (training environment)."""

from __future__ import annotations

import pickle

import numpy as np
import torch

from training.encoders import EcgEncoder
from training.settings import EcgEncoderSettings, TeacherSettings
from training.tabular import TabularSpec
from training.teacher import Teacher, TeacherEnsemble

ECHO_DIM = 16


def _teacher(seed: int, spec: TabularSpec) -> Teacher:
    torch.manual_seed(seed)
    return Teacher(EcgEncoder(EcgEncoderSettings()), ECHO_DIM, spec, TeacherSettings()).eval()


def _inputs(spec: TabularSpec, n: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(n, 12)
    mask[0, 6:] = 0  # a patient with limb leads only
    return {
        "ecg": torch.randn(n, 12, 400, generator=g) * mask[:, :, None], "lead_mask": mask,
        "echo": torch.randn(n, ECHO_DIM, generator=g),
        "echo_present": torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]),
        "tab": torch.randn(n, spec.width, generator=g),
        "tab_present": (torch.rand(n, spec.width, generator=g) > 0.3).float(),
    }  # fmt: skip


def test_ensemble_logits_and_embedding_are_the_members_mean() -> None:
    spec = TabularSpec(("a", "b", "c"), (False, False, True), (0.0, 1.0, 2.0), (1.0, 2.0, 1.0))
    members = [_teacher(seed, spec) for seed in (0, 1, 2)]
    ensemble = TeacherEnsemble(members).eval()
    batch = _inputs(spec)
    with torch.no_grad():
        outs = [m(**batch) for m in members]
        logits, z = ensemble(**batch)
    assert not torch.allclose(outs[0][0], outs[1][0])  # the members really differ
    torch.testing.assert_close(logits, torch.stack([lg for lg, _ in outs]).mean(0))
    torch.testing.assert_close(z, torch.stack([e for _, e in outs]).mean(0))
    # what evaluation and registration read of a teacher, an ensemble has too
    assert int(ensemble.echo[0].normalized_shape[0]) == ECHO_DIM
    assert ensemble.targets == members[0].targets
    # registered with mlflow.pytorch's pickle format: a round trip scores the same
    again = pickle.loads(pickle.dumps(ensemble))
    with torch.no_grad():
        np.testing.assert_allclose(again(**batch)[0].numpy(), logits.numpy(), rtol=1e-6)


def test_an_ensemble_of_one_is_its_teacher() -> None:
    spec = TabularSpec(("a",), (False,), (0.0,), (1.0,))
    teacher = _teacher(0, spec)
    batch = _inputs(spec)
    with torch.no_grad():
        torch.testing.assert_close(TeacherEnsemble([teacher]).eval()(**batch), teacher(**batch))
