"""Deep-STORM (Nehme et al., Optica 5, 458 (2018)): frame → super-resolved image.

The frame (B, 1, H, W) is upsampled ×U by nearest neighbour, then an encoder–decoder of
conv3×3–BN–ReLU blocks with channels 32, 64, 128, 512 (2×2 max-pooling between them) and
128, 64, 32 (×2 nearest upsampling before each), and a linear 1×1 output, gives the
super-resolved image (B, 1, U·H, U·W) on a grid of pixel_size/U. With the published
channels it has 1,366,208 trainable weights (convolutions without bias, as published, plus
BatchNorm scales and shifts). U·H and U·W must be multiples of 8; ``pad_to_multiple`` pads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deepsmlm.models.blocks import conv_bn_relu

PUBLISHED_CHANNELS = (32, 64, 128, 512)


class DeepSTORM(nn.Module):
    def __init__(self, upsampling: int = 8, channels: tuple[int, int, int, int] =
                 PUBLISHED_CHANNELS):
        super().__init__()
        if upsampling < 1 or upsampling & (upsampling - 1):
            raise ValueError(f"upsampling must be a power of two, got {upsampling}")
        c1, c2, c3, c4 = channels
        self.upsampling = int(upsampling)
        self.channels = tuple(int(c) for c in channels)
        self.enc1 = conv_bn_relu(1, c1)
        self.enc2 = conv_bn_relu(c1, c2)
        self.enc3 = conv_bn_relu(c2, c3)
        self.bottleneck = conv_bn_relu(c3, c4)
        self.dec3 = conv_bn_relu(c4, c3)
        self.dec2 = conv_bn_relu(c3, c2)
        self.dec1 = conv_bn_relu(c2, c1)
        self.out = nn.Conv2d(c1, 1, 1, bias=False)
        for m in self.modules():  # orthogonal init, as published
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight)

    @property
    def multiple(self) -> int:
        """Frame sides must be multiples of this (so that U·side divides by 8)."""
        return max(1, 8 // self.upsampling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.upsampling
        if x.shape[-2] * u % 8 or x.shape[-1] * u % 8:
            raise ValueError(f"frame {tuple(x.shape[-2:])} × {u} is not a multiple of 8; "
                             "pad it (pad_to_multiple)")
        x = F.interpolate(x, scale_factor=u, mode="nearest") if u > 1 else x
        x = F.max_pool2d(self.enc1(x), 2)
        x = F.max_pool2d(self.enc2(x), 2)
        x = F.max_pool2d(self.enc3(x), 2)
        x = self.bottleneck(x)
        x = self.dec3(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = self.dec2(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = self.dec1(F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.out(x)


def pad_to_multiple(frames: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (…, H, W) at the bottom/right by edge replication to multiples; returns (H, W)."""
    h, w = frames.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        frames = F.pad(frames, (0, pw, 0, ph), mode="replicate")
    return frames, (h, w)


def count_weights(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops_per_frame(model: DeepSTORM, height: int, width: int) -> float:
    """Multiply–adds ×2 of the convolutions for one H×W frame (BN, ReLU, pooling ignored)."""
    u, (c1, c2, c3, c4) = model.upsampling, model.channels
    area = height * width * u * u
    layers = [(1, c1, area), (c1, c2, area / 4), (c2, c3, area / 16), (c3, c4, area / 64),
              (c4, c3, area / 16), (c3, c2, area / 4), (c2, c1, area)]
    return 2.0 * (sum(ci * co * 9 * a for ci, co, a in layers) + c1 * area)
