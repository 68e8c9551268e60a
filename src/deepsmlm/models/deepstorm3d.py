"""DeepSTORM3D (Nehme et al., Nat. Methods 17, 734 (2020)): 2D frame → 3D occupancy grid.

The frame (B, 1, H, W) goes through a stem and a chain of dilated conv3×3–BN–ReLU blocks;
every block sees the features and the input frame concatenated and adds its output to the
features (residual). Dilations grow to cover the large lateral extent of engineered PSFs
such as the Tetrapod and shrink again. Nearest ×2 upsampling steps (each followed by a
block that again sees the upsampled input) give lateral upsampling s; a head maps the
features to D depth planes, bounded to [0, scale]. Output (B, D, s·H, s·W).
No pooling, so any frame size works.

The bound: the published hard tanh clips to [0, scale] and passes no gradient outside, so
voxels die at zero early in training; a softplus keeps a gradient but cannot reach the
target scale in a CPU-scale budget (our first 45-minute run stayed below 2 % of it). We
clip in the forward pass and let the gradient through wherever it points back into the
range (``bounded``): a voxel below 0 can rise, but is not pushed further down.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deepsmlm.models.blocks import conv_bn_relu

DEFAULT_DILATIONS = (1, 2, 4, 8, 16, 8, 4, 2, 1)


class _OneSidedClip(torch.autograd.Function):
    """clamp(h, 0, hi) whose gradient passes wherever descent moves h into the range."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, hi: float) -> torch.Tensor:
        ctx.save_for_backward(h)
        ctx.hi = hi
        return h.clamp(0.0, hi)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (h,) = ctx.saved_tensors
        # descent moves h by −grad: below 0 keep grad < 0 only, above hi keep grad > 0 only
        keep = ((h >= 0) & (h <= ctx.hi)) | ((h < 0) & (grad < 0)) | ((h > ctx.hi) & (grad > 0))
        return grad * keep, None


def bounded(h: torch.Tensor, hi: float) -> torch.Tensor:
    """Values clipped to [0, hi]; see the module docstring for the gradient."""
    return _OneSidedClip.apply(h, hi)


class DeepSTORM3D(nn.Module):
    def __init__(self, depth_planes: int, upsampling: int = 2, width: int = 32,
                 dilations: tuple[int, ...] = DEFAULT_DILATIONS, scale: float = 800.0):
        super().__init__()
        if upsampling < 1 or upsampling & (upsampling - 1):
            raise ValueError(f"upsampling must be a power of two, got {upsampling}")
        self.depth_planes, self.upsampling, self.width = depth_planes, upsampling, width
        self.dilations, self.scale = tuple(dilations), float(scale)
        self.stem = conv_bn_relu(1, width)
        self.blocks = nn.ModuleList(conv_bn_relu(width + 1, width, dilation=d)
                                    for d in self.dilations)
        self.ups = nn.ModuleList(conv_bn_relu(width + 1, width)
                                 for _ in range(upsampling.bit_length() - 1))
        self.head = nn.Sequential(conv_bn_relu(width, depth_planes),
                                  nn.Conv2d(depth_planes, depth_planes, 3, padding=1))
        self.multiple = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stem(x)
        for block in self.blocks:
            f = f + block(torch.cat([f, x], dim=1))
        for up in self.ups:
            f = F.interpolate(f, scale_factor=2, mode="nearest")
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            f = up(torch.cat([f, x], dim=1))
        return bounded(self.head(f), self.scale)

    def flops_per_frame(self, height: int, width: int) -> float:
        """Multiply–adds ×2 of the convolutions for one H×W frame."""
        w, a = self.width, height * width
        total = 9 * w * a + len(self.dilations) * 9 * (w + 1) * w * a
        for _ in self.ups:
            a *= 4
            total += 9 * (w + 1) * w * a
        total += 9 * w * self.depth_planes * a + 9 * self.depth_planes ** 2 * a
        return 2.0 * total
