"""Training losses.

Deep-STORM: L = mean((G∗ŷ − s·G∗y)²) + λ·mean(|ŷ|), with y the spike image of the true
positions on the fine grid, G a normalised Gaussian of σ fine pixels (7×7 for σ = 1) and
s the target scale. Published values: s = 100, σ = 1, λ = 1 (Nehme et al. 2018 code).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel(sigma_px: float) -> torch.Tensor:
    """Normalised 2D Gaussian, side 2·ceil(3σ)+1, shape (1, 1, K, K)."""
    r = max(1, math.ceil(3 * sigma_px))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (x / sigma_px) ** 2)
    k = g[:, None] * g[None, :]
    return (k / k.sum())[None, None]


def blur(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return F.conv2d(img, kernel.to(img), padding=kernel.shape[-1] // 2)


def deepstorm_loss(pred: torch.Tensor, spikes: torch.Tensor, scale: float = 100.0,
                   sigma_px: float = 1.0, l1_weight: float = 1.0) -> torch.Tensor:
    """MSE of the blurred prediction against the scaled blurred spikes + L1 sparsity."""
    k = gaussian_kernel(sigma_px)
    mse = torch.mean((blur(pred, k) - scale * blur(spikes, k)) ** 2)
    return mse + l1_weight * pred.abs().mean()
