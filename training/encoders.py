"""The modality encoders and their self-supervised heads (stage 1).

* :class:`EcgEncoder` — a 1-D ResNet over the 12 leads. Absent leads are zero and a lead mask
  rides along as 12 more input channels, so one encoder takes any lead subset (a 1-lead patch,
  a 6-lead limb device, a 12-lead cart) and knows which leads are really there.
* :class:`EchoEncoder` — a (2+1)-D CNN: a spatial 3x3 convolution then a temporal 3-tap one
  per stage, halving height and width and keeping every frame (masked-frame modelling needs
  a feature per frame).

Both return an embedding (global average of the last stage, then a linear layer) and expose
their feature maps for the reconstruction and cross-attention heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from training.settings import EcgEncoderSettings, EchoEncoderSettings
from training.transforms import N_LEADS


class ResBlock1d(nn.Module):
    """Two convolutions with a (strided) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int = 7) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv1d(cin, cout, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv2 = nn.Conv1d(cout, cout, kernel, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv1d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm1d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class EcgEncoder(nn.Module):
    """1-D ResNet: (signal x lead mask, lead mask) -> embedding; time shrinks 16-fold."""

    #: time is downsampled by this factor between input and feature map
    stride = 16

    def __init__(self, cfg: EcgEncoderSettings) -> None:
        super().__init__()
        self.cfg = cfg
        widths = cfg.widths
        self.stem = nn.Sequential(
            nn.Conv1d(2 * N_LEADS, widths[0], 9, stride=2, padding=4, bias=False),
            nn.BatchNorm1d(widths[0]),
            nn.ReLU(),
        )
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(ResBlock1d(cin, w, stride=1 if i == 0 else 2, kernel=7 if i < 2 else 5))
            cin = w
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(widths[-1], cfg.embedding_dim)
        self.grad_checkpointing = False

    @property
    def width(self) -> int:
        """Channels of the feature map."""
        return int(self.cfg.widths[-1])

    def features(self, ecg: torch.Tensor, lead_mask: torch.Tensor) -> torch.Tensor:
        """(B, 12, T) mV and (B, 12) mask -> (B, C, ceil(T/16)) feature map."""
        m = lead_mask[:, :, None].to(ecg.dtype)
        x = self.stem(torch.cat([ecg * m, m.expand_as(ecg)], dim=1))
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        """Feature map -> embedding."""
        return self.head(feats.mean(dim=-1))

    def forward(self, ecg: torch.Tensor, lead_mask: torch.Tensor) -> torch.Tensor:
        """(B, 12, T), (B, 12) -> (B, embedding_dim)."""
        return self.embed(self.features(ecg, lead_mask))


class Conv2Plus1d(nn.Module):
    """A spatial 1x3x3 convolution (strided) then a temporal 3x1x1 one, each with BN + ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = max(cout, cin)
        self.spatial = nn.Conv3d(cin, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.temporal = nn.Conv3d(mid, cout, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn2 = nn.BatchNorm3d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.spatial(x)))
        return F.relu(self.bn2(self.temporal(x)))


class EchoEncoder(nn.Module):
    """(2+1)-D CNN: clips (B, T, H, W) uint8 or float in [0, 1] -> embedding."""

    def __init__(self, cfg: EchoEncoderSettings) -> None:
        super().__init__()
        self.cfg = cfg
        blocks, cin = [], 1
        for w in cfg.widths:
            blocks.append(Conv2Plus1d(cin, w, stride=2))
            cin = w
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(cfg.widths[-1], cfg.embedding_dim)
        self.grad_checkpointing = False

    @property
    def width(self) -> int:
        """Channels of the feature map."""
        return int(self.cfg.widths[-1])

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W) -> (B, C, T, H/16, W/16)."""
        x = clips.float()
        if clips.dtype == torch.uint8:
            x = x / 255.0
        x = (x - 0.25).unsqueeze(1)  # phantoms are mostly dark: centre roughly
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        """Feature map -> embedding."""
        return self.head(feats.mean(dim=(2, 3, 4)))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W) -> (B, embedding_dim)."""
        return self.embed(self.features(clips))


class Projection(nn.Module):
    """The contrastive projection head (an MLP; discarded after pretraining)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim_in, dim_in), nn.ReLU(), nn.Linear(dim_in, dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)


class EcgReconstruction(nn.Module):
    """Predicts every lead's samples from the feature map (masked-segment reconstruction)."""

    def __init__(self, width: int, stride: int = EcgEncoder.stride) -> None:
        super().__init__()
        self.stride = stride
        self.net = nn.Conv1d(width, N_LEADS * stride, 3, padding=1)

    def forward(self, feats: torch.Tensor, samples: int) -> torch.Tensor:
        b, _, t = feats.shape
        y = self.net(feats).view(b, N_LEADS, self.stride, t).permute(0, 1, 3, 2)
        return y.reshape(b, N_LEADS, t * self.stride)[..., :samples]


class FrameReconstruction(nn.Module):
    """Predicts each frame at ``size`` x ``size`` from the per-frame features."""

    def __init__(self, width: int, size: int) -> None:
        super().__init__()
        self.size = size
        self.temporal = nn.Conv1d(width, width, 3, padding=1)
        self.out = nn.Linear(width, size * size)

    def forward(self, per_frame: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, T, size, size) in [0, 1]."""
        x = F.relu(self.temporal(per_frame)).transpose(1, 2)
        b, t, _ = x.shape
        return torch.sigmoid(self.out(x)).view(b, t, self.size, self.size)


def frame_targets(clips: torch.Tensor, size: int) -> torch.Tensor:
    """Clips (B, T, H, W) as reconstruction targets (B, T, size, size) in [0, 1]."""
    x = clips.float()
    if clips.dtype == torch.uint8:
        x = x / 255.0
    b, t, h, w = x.shape
    return F.adaptive_avg_pool2d(x.view(b * t, 1, h, w), size).view(b, t, size, size)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``a`` matches row i of ``b``; every other row is a negative."""
    logits = a.float() @ b.float().t() / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
