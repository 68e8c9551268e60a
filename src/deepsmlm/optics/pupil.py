"""The pupil plane: spatial-frequency grid, aperture and the defocus phase.

Conventions (DESIGN §4.1). Spatial frequencies k are in cycles/nm. The pupil grid has
``n_px`` samples across the diameter 2·NA_eff/λ, so dk = 2·NA_eff/(λ·n_px). The field of an
emitter at depth z above the coverslip, seen by an objective focused at ``focus_nm``:

    P(k) = A(k)·exp(i·φ(k))·exp(i·kz_sample(k)·z − i·kz_immersion(k)·focus),
    kz_n(k) = 2π·sqrt((n/λ)² − |k|²).

The image is the forward Fourier transform of P; the lateral position enters as the ramp
exp(+i2π k·(x, y)), which moves the image to +(x, y) (see ``psf.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PupilGrid:
    """Sampling of the pupil: ``n_px`` samples across the diameter 2·NA_eff/λ."""

    n_px: int
    wavelength_nm: float
    na_eff: float

    @property
    def k_max(self) -> float:
        """Pupil radius in cycles/nm."""
        return self.na_eff / self.wavelength_nm

    @property
    def dk(self) -> float:
        """Sample spacing in cycles/nm."""
        return 2.0 * self.k_max / self.n_px

    @property
    def period_nm(self) -> float:
        """Image-plane period of the sampled pupil's transform (1/dk): patches must be smaller."""
        return 1.0 / self.dk

    def k_1d(self, dtype=torch.float64) -> torch.Tensor:
        """Sample positions along one axis, cycles/nm, centred on 0. Shape (n_px,)."""
        return (torch.arange(self.n_px, dtype=dtype) - (self.n_px - 1) / 2.0) * self.dk

    def polar(self, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised radius ρ = |k|/k_max and angle θ (x along columns), shape (n_px, n_px)."""
        k = self.k_1d(dtype)
        ky, kx = torch.meshgrid(k, k, indexing="ij")
        return torch.hypot(kx, ky) / self.k_max, torch.atan2(ky, kx)

    def aperture(self, dtype=torch.float64) -> torch.Tensor:
        """1 inside |k| ≤ NA_eff/λ, 0 outside. Shape (n_px, n_px)."""
        rho, _ = self.polar(dtype)
        return (rho <= 1.0).to(dtype)


def kz(grid: PupilGrid, n_medium: float) -> torch.Tensor:
    """Axial wavenumber kz_n(k) = 2π·sqrt((n/λ)² − |k|²) [rad/nm], complex (n_px, n_px).

    Imaginary where |k| > n/λ (evanescent: exp(i·kz·z) decays with z).
    """
    rho, _ = grid.polar(torch.float64)
    k2 = (rho * grid.k_max) ** 2
    arg = (n_medium / grid.wavelength_nm) ** 2 - k2
    return 2.0 * math.pi * torch.sqrt(arg.to(torch.complex128))


def defocus_phase_terms(grid: PupilGrid, n_sample: float, n_immersion: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The two axial wavenumbers (kz_sample, kz_immersion), complex64 (n_px, n_px).

    The pupil factor for depth z and focus f is exp(i·kz_sample·z − i·kz_immersion·f).
    """
    return kz(grid, n_sample).to(torch.complex64), kz(grid, n_immersion).to(torch.complex64)
