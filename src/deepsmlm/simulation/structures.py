"""Where fluorophores sit: uniform volumes, microtubule-like filaments, ellipsoid surfaces.

A structure is drawn once from a generator and then samples positions on itself:
``structure.sample(n, generator) -> (n, 3)`` in nm (x along columns, y along rows, z depth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


@dataclass
class UniformVolume:
    """Uniform in [0, width] × [0, height] × [z_lo, z_hi] nm."""

    width_nm: float
    height_nm: float
    z_range_nm: tuple[float, float]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.stack([
            _uniform(n, 0.0, self.width_nm, generator),
            _uniform(n, 0.0, self.height_nm, generator),
            _uniform(n, *self.z_range_nm, generator),
        ], dim=1).float()


@dataclass
class Filaments:
    """Smooth random curves (2D worm-like chains) with z varying slowly along each curve.

    ``vertices`` (V, 3) are points every ``step_nm`` along the curves, inside the field;
    samples are spread uniformly along arc length with a Gaussian tube jitter (σ = 10 nm,
    about the radius of an antibody-labelled microtubule).
    """

    vertices: torch.Tensor
    tangents: torch.Tensor
    step_nm: float
    tube_sigma_nm: float = 10.0
    flat: bool = False  # no axial jitter when the z range is a single plane

    @classmethod
    def random(cls, n_filaments: int, width_nm: float, height_nm: float,
               z_range_nm: tuple[float, float], persistence_nm: float,
               generator: torch.Generator | None = None, step_nm: float = 20.0) -> Filaments:
        length = 2.0 * math.hypot(width_nm, height_nm)
        n_steps = int(length / step_nm)
        start = torch.stack([_uniform(n_filaments, 0, width_nm, generator),
                             _uniform(n_filaments, 0, height_nm, generator)], dim=1)
        angle0 = _uniform(n_filaments, 0, 2 * math.pi, generator)
        # angle random walk: variance step/persistence per step (2D worm-like chain)
        dtheta = torch.randn(n_filaments, n_steps, generator=generator, dtype=torch.float64)
        theta = angle0[:, None] + torch.cumsum(dtheta * math.sqrt(step_nm / persistence_nm), 1)
        steps = step_nm * torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)
        # walk both ways from the start point so the curve crosses the field
        path = torch.cumsum(steps, dim=1) - steps[:, : n_steps // 2].sum(1, keepdim=True)
        xy = start[:, None, :] + path  # (F, S, 2)
        z_lo, z_hi = z_range_nm
        s = torch.arange(n_steps, dtype=torch.float64) * step_nm
        period = _uniform(n_filaments, 2000.0, 8000.0, generator)[:, None]
        phase = _uniform(n_filaments, 0, 2 * math.pi, generator)[:, None]
        z = z_lo + (z_hi - z_lo) * (0.5 + 0.5 * torch.sin(2 * math.pi * s / period + phase))
        pts = torch.cat([xy, z[..., None]], dim=-1)
        tang = torch.cat([steps / step_nm, torch.zeros_like(z[..., None])], dim=-1)
        inside = ((xy[..., 0] >= 0) & (xy[..., 0] < width_nm)
                  & (xy[..., 1] >= 0) & (xy[..., 1] < height_nm))
        if not bool(inside.any()):  # pathological draw: fall back to a straight diagonal
            t = torch.linspace(0, 1, n_steps, dtype=torch.float64)
            pts = torch.stack([t * width_nm, t * height_nm,
                               torch.full_like(t, 0.5 * (z_lo + z_hi))], 1)[None]
            tang = torch.zeros_like(pts)
            inside = torch.ones(1, n_steps, dtype=torch.bool)
        return cls(pts[inside].float(), tang[inside].float(), step_nm, flat=z_hi == z_lo)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        idx = torch.randint(len(self.vertices), (n,), generator=generator)
        along = (torch.rand(n, generator=generator) - 0.5) * self.step_nm
        jitter = torch.randn(n, 3, generator=generator) * self.tube_sigma_nm
        if self.flat:
            jitter[:, 2] = 0.0
        return self.vertices[idx] + along[:, None] * self.tangents[idx] + jitter


@dataclass
class EllipsoidSurface:
    """Surface of an ellipsoid (a cell or a nucleus), centred in the field.

    Directions are drawn uniformly on the sphere and scaled by the semi-axes
    (uniform in area for a sphere, approximately so for a mild ellipsoid).
    """

    centre_nm: tuple[float, float, float]
    semi_axes_nm: tuple[float, float, float]

    @classmethod
    def fitting(cls, width_nm: float, height_nm: float, z_range_nm: tuple[float, float]
                ) -> EllipsoidSurface:
        z_lo, z_hi = z_range_nm
        c = (width_nm / 2, height_nm / 2, (z_lo + z_hi) / 2)
        return cls(c, (0.4 * width_nm, 0.4 * height_nm, max((z_hi - z_lo) / 2, 1.0)))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        d = torch.randn(n, 3, generator=generator)
        d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return torch.tensor(self.centre_nm) + d * torch.tensor(self.semi_axes_nm)
