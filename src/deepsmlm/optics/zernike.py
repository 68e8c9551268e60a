"""Zernike polynomials on the unit disk, Noll-indexed and RMS-normalised.

Z_j(ρ, θ) = sqrt(n+1)·R_n^0(ρ)                 (m = 0)
          = sqrt(2(n+1))·R_n^|m|(ρ)·cos(|m|θ)   (m ≠ 0, j even)
          = sqrt(2(n+1))·R_n^|m|(ρ)·sin(|m|θ)   (m ≠ 0, j odd)
so that the mean of Z_j² over the unit disk is 1: a coefficient is a phase in rad RMS.
Noll 1966, J. Opt. Soc. Am. 66, 207.

>>> noll_to_nm(4), noll_to_nm(5), noll_to_nm(6), noll_to_nm(11)
((2, 0), (2, -2), (2, 2), (4, 0))
"""

from __future__ import annotations

import math

import torch


def noll_to_nm(j: int) -> tuple[int, int]:
    """Noll index j ≥ 1 → (n, m); m < 0 denotes the sine term."""
    if j < 1:
        raise ValueError(f"Noll index must be >= 1, got {j}")
    n = 0
    while (n + 1) * (n + 2) // 2 < j:
        n += 1
    p = j - n * (n + 1) // 2 - 1  # position within radial order n
    m_abs = 2 * ((p + 1) // 2) if n % 2 == 0 else 2 * (p // 2) + 1
    if m_abs == 0:
        return n, 0
    return n, (m_abs if j % 2 == 0 else -m_abs)


def radial(n: int, m_abs: int, rho: torch.Tensor) -> torch.Tensor:
    """Radial polynomial R_n^|m|(ρ)."""
    out = torch.zeros_like(rho)
    for s in range((n - m_abs) // 2 + 1):
        c = (-1) ** s * math.factorial(n - s) / (
            math.factorial(s)
            * math.factorial((n + m_abs) // 2 - s)
            * math.factorial((n - m_abs) // 2 - s)
        )
        out = out + c * rho ** (n - 2 * s)
    return out


def zernike(j: int, rho: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """RMS-normalised Zernike polynomial of Noll index j at (ρ, θ); zero outside ρ ≤ 1."""
    n, m = noll_to_nm(j)
    r = radial(n, abs(m), rho)
    if m == 0:
        z = math.sqrt(n + 1) * r
    elif m > 0:
        z = math.sqrt(2 * (n + 1)) * r * torch.cos(m * theta)
    else:
        z = math.sqrt(2 * (n + 1)) * r * torch.sin(-m * theta)
    return torch.where(rho <= 1.0, z, torch.zeros_like(z))


def zernike_basis(indices: list[int], rho: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Stack of Zernike polynomials, shape (K, *rho.shape)."""
    return torch.stack([zernike(j, rho, theta) for j in indices])


def zernike_phase(noll: dict[int, float], rho: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Σ_j a_j·Z_j(ρ, θ) [rad] for amplitudes a_j in rad RMS."""
    phase = torch.zeros_like(rho)
    for j, a in noll.items():
        if a != 0.0:
            phase = phase + float(a) * zernike(int(j), rho, theta)
    return phase
