"""The stage-2 model: the two pretrained encoders tied together beat by beat.

* Temporal contrastive (InfoNCE): the embedding of an R-peak-centred ECG beat is pulled toward
  the embedding of the echo window that starts at that beat's end-diastole (ED ... ES); every
  other beat of the batch — other patients and the same patient's other beats — is a negative.
* Joint masked modelling: some ECG leads and some echo frames are hidden; ECG tokens attend to
  echo tokens to predict the hidden leads, and echo tokens attend to ECG tokens to predict the
  hidden frames, so each modality learns what the other says about the same heartbeat.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.encoders import (
    EcgEncoder,
    EcgReconstruction,
    EchoEncoder,
    FrameReconstruction,
    Projection,
    frame_targets,
    info_nce,
)
from training.settings import AlignSettings
from training.transforms import N_LEADS


class CrossAttention(nn.Module):
    """Pre-norm cross-attention block: queries from one modality, keys/values from the other."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(),
                                 nn.Linear(2 * dim, dim))  # fmt: skip

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        kv_n = self.norm_kv(kv)
        q = q + self.attn(self.norm_q(q), kv_n, kv_n, need_weights=False)[0]
        return q + self.mlp(q)


@dataclass(frozen=True)
class AlignOutput:
    """Losses and the beat/keyframe embeddings of one batch."""

    loss: torch.Tensor
    contrastive: torch.Tensor
    ecg_recon: torch.Tensor
    echo_recon: torch.Tensor
    z_ecg: torch.Tensor
    z_echo: torch.Tensor


class Aligner(nn.Module):
    """Both encoders, projections into one space, cross-attention and reconstruction heads."""

    def __init__(self, ecg: EcgEncoder, echo: EchoEncoder, settings: AlignSettings) -> None:
        super().__init__()
        self.settings = settings
        self.ecg = ecg
        self.echo = echo
        dim = settings.attention_dim
        self.z_ecg = Projection(ecg.cfg.embedding_dim, dim)
        self.z_echo = Projection(echo.cfg.embedding_dim, dim)
        self.ecg_tokens = nn.Linear(ecg.width, dim)
        self.echo_tokens = nn.Linear(echo.width, dim)
        self.ecg_pos = nn.Parameter(torch.zeros(1, 64, dim))
        self.echo_pos = nn.Parameter(torch.zeros(1, 64, dim))
        self.ecg_from_echo = CrossAttention(dim, settings.heads)
        self.echo_from_ecg = CrossAttention(dim, settings.heads)
        self.ecg_recon = EcgReconstruction(dim)
        self.echo_recon = FrameReconstruction(dim, echo.cfg.recon_size)

    def embed(self, ecg: torch.Tensor, lead_mask: torch.Tensor, keyframes: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Unit-norm beat and keyframe embeddings in the shared space (retrieval, fusion)."""
        return self.z_ecg(self.ecg(ecg, lead_mask)), self.z_echo(self.echo(keyframes))

    def forward(
        self,
        ecg: torch.Tensor,
        lead_mask: torch.Tensor,
        keyframes: torch.Tensor,
        gen: torch.Generator | None = None,
    ) -> AlignOutput:
        """Losses of one batch of beats: (B, 12, T) ECG, (B, 12) mask, (B, F, S, S) frames."""
        s = self.settings
        b, _, t = ecg.shape
        # hide some present leads (keep at least one) and some frames
        scores = torch.rand(lead_mask.shape, generator=gen) + (1 - lead_mask) * 2
        order = scores.argsort(dim=1)
        n_present = lead_mask.sum(1, keepdim=True)
        n_hide = torch.clamp(
            torch.minimum(torch.full_like(n_present, s.mask_leads), n_present - 1), min=0
        )
        rank = order.argsort(dim=1).float()
        hide_leads = (rank < n_hide) & (lead_mask > 0)
        visible = lead_mask * (~hide_leads).float()
        f = keyframes.shape[1]
        hide_frames = torch.rand(b, f, generator=gen).argsort(1) < s.mask_frames
        frames = keyframes.float() / 255.0 if keyframes.dtype == torch.uint8 else keyframes
        masked_frames = frames.masked_fill(hide_frames[:, :, None, None], 0.0)

        ecg_feats = self.ecg.features(ecg, visible)
        echo_feats = self.echo.features(masked_frames)
        # contrastive on the unmasked views' embeddings would double the cost; masked views
        # are a stronger augmentation and keep one forward pass per modality
        z_ecg = self.z_ecg(self.ecg.embed(ecg_feats))
        z_echo = self.z_echo(self.echo.embed(echo_feats))
        contrastive = info_nce(z_ecg, z_echo, s.temperature)

        e_tok = self.ecg_tokens(ecg_feats.transpose(1, 2))
        e_tok = e_tok + self.ecg_pos[:, : e_tok.shape[1]]
        v_tok = self.echo_tokens(echo_feats.mean(dim=(3, 4)).transpose(1, 2))
        v_tok = v_tok + self.echo_pos[:, : v_tok.shape[1]]
        e_out = self.ecg_from_echo(e_tok, v_tok)
        v_out = self.echo_from_ecg(v_tok, e_tok)
        ecg_pred = self.ecg_recon(e_out.transpose(1, 2), t).float()
        target_leads = hide_leads[:, :, None].expand(b, N_LEADS, t).float()
        ecg_recon = (((ecg_pred - ecg) ** 2) * target_leads).sum() / target_leads.sum().clamp(min=1)
        echo_pred = self.echo_recon(v_out.transpose(1, 2)).float()
        target = frame_targets(keyframes, self.echo.cfg.recon_size)
        per_frame = ((echo_pred - target) ** 2).mean(dim=(2, 3))
        echo_recon = (per_frame * hide_frames).sum() / hide_frames.sum().clamp(min=1)
        loss = contrastive + s.recon_weight * (ecg_recon + echo_recon)
        return AlignOutput(loss, contrastive, ecg_recon, echo_recon, z_ecg, z_echo)


def retrieval_top1(
    z_ecg: torch.Tensor, z_echo: torch.Tensor, patients: torch.Tensor, *, candidates: int,
    gen: torch.Generator,
) -> tuple[float, int]:  # fmt: skip
    """Top-1 accuracy of picking a beat's own keyframe among ``candidates`` from other patients.

    Args:
        z_ecg: (N, D) unit-norm beat embeddings.
        z_echo: (N, D) unit-norm keyframe embeddings (row i belongs to beat i).
        patients: (N,) patient ids; distractors come only from other patients.
        candidates: own keyframe + ``candidates - 1`` distractors (chance is 1 / candidates).
        gen: draws the distractors.

    Returns:
        (accuracy, queries scored); queries without enough other-patient beats are skipped.
    """
    n = len(z_ecg)
    hits, scored = 0, 0
    for i in range(n):
        others = torch.nonzero(patients != patients[i]).flatten()
        if len(others) < candidates - 1:
            continue
        pick = others[torch.randperm(len(others), generator=gen)[: candidates - 1]]
        pool = torch.cat([torch.tensor([i]), pick])
        sims = z_echo[pool] @ z_ecg[i]
        hits += int(torch.argmax(sims).item() == 0)
        scored += 1
    return (hits / scored if scored else float("nan")), scored


def fuse(z_ecg: torch.Tensor, z_echo: torch.Tensor) -> torch.Tensor:
    """One fused vector per beat: both unit-norm embeddings side by side."""
    return torch.cat([F.normalize(z_ecg, dim=-1), F.normalize(z_echo, dim=-1)], dim=-1)
