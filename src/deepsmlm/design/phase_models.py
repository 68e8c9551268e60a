"""Learnable phase masks on the pupil grid, and their regularisers.

A phase model is an ``nn.Module`` whose ``forward()`` returns the mask phase [rad] on the
pupil grid, shape (n_px, n_px). ``PupilPSF.set_mask_source`` makes the PSF use it, so the
gradient of anything rendered reaches the model's parameters.

- ``PixelPhase``: one free phase per pupil pixel (the paper's choice); pixels outside the
  aperture carry no light, are held at 0 and get no gradient.
- ``ZernikePhase``: a fixed start + Σ c_j Z_j over a range of Noll indices (smooth, few
  parameters; the coefficients are rad RMS).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from deepsmlm.optics.masks import zernike_mask
from deepsmlm.optics.pupil import PupilGrid


class PixelPhase(nn.Module):
    def __init__(self, grid: PupilGrid, start: torch.Tensor | None = None):
        super().__init__()
        aperture = grid.aperture(torch.float32)
        self.register_buffer("aperture", aperture, persistent=False)
        start = torch.zeros(grid.n_px, grid.n_px) if start is None else start.float()
        self.phase = nn.Parameter(start.detach().clone() * aperture)

    def forward(self) -> torch.Tensor:
        return self.phase * self.aperture


class ZernikePhase(nn.Module):
    """offset + Σ c_j Z_j: learnable coefficients on top of a fixed phase map (zero, or a
    starting mask that Zernike modes cannot represent, such as a wrapped Tetrapod)."""

    def __init__(self, grid: PupilGrid, noll: tuple[int, ...],
                 start: torch.Tensor | None = None, offset: torch.Tensor | None = None):
        super().__init__()
        self.noll = tuple(int(j) for j in noll)
        aperture = grid.aperture(torch.float32)
        basis = torch.stack([zernike_mask(grid, {j: 1.0}) for j in self.noll]) * aperture
        self.register_buffer("basis", basis, persistent=False)  # (J, n, n)
        offset = torch.zeros(grid.n_px, grid.n_px) if offset is None else offset.float()
        self.register_buffer("offset", offset.detach().clone() * aperture, persistent=False)
        start = torch.zeros(len(self.noll)) if start is None else start.float()
        self.coefficients = nn.Parameter(start.detach().clone())

    def forward(self) -> torch.Tensor:
        return self.offset + torch.einsum("j,jkl->kl", self.coefficients, self.basis)


def smoothness_penalty(phase: torch.Tensor, aperture: torch.Tensor) -> torch.Tensor:
    """Mean squared phase step [rad²] between neighbouring pixels inside the aperture.

    Steps are taken on exp(iφ), |Δe^{iφ}|² = 2 − 2cos Δφ, so a 2π wrap costs nothing (an SLM
    or a fabricated mask wraps the phase anyway)."""
    def step(d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return ((2.0 - 2.0 * torch.cos(d)) * m).sum() / m.sum().clamp_min(1.0)

    mx = aperture[:, 1:] * aperture[:, :-1]
    my = aperture[1:, :] * aperture[:-1, :]
    return 0.5 * (step(phase[:, 1:] - phase[:, :-1], mx) + step(phase[1:, :] - phase[:-1, :], my))


def range_penalty(phase: torch.Tensor, aperture: torch.Tensor, max_range_rad: float
                  ) -> torch.Tensor:
    """How far the peak-to-valley phase inside the aperture exceeds ``max_range_rad``, squared
    (for a fabricated, unwrapped mask of limited etch depth)."""
    inside = phase[aperture > 0]
    return torch.relu(inside.max() - inside.min() - max_range_rad) ** 2


def quantisation_penalty(phase: torch.Tensor, aperture: torch.Tensor, levels: int
                         ) -> torch.Tensor:
    """Mean over the aperture of sin²(L·φ/2): zero at the L phases 2πk/L a mask printed with
    L etch depths can take (and at their 2π wraps), 1 half-way between two of them."""
    inside = aperture > 0
    return (torch.sin(0.5 * levels * phase[inside]) ** 2).mean()


def quantise(phase: torch.Tensor, levels: int) -> torch.Tensor:
    """The phase wrapped to [0, 2π) and rounded to the nearest of L levels 2πk/L (a level
    that rounds to 2π is level 0)."""
    step = 2.0 * math.pi / levels
    k = torch.round(torch.remainder(phase, 2.0 * math.pi) / step) % levels
    return k * step
