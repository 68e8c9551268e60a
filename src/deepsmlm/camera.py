"""Camera: expected photons at the sample ↔ camera counts (ADU), with noise (DESIGN §4.2).

Forward, per pixel:
    e⁻  = Poisson(QE·photons + c)                      photo-electrons + spurious charge c
    e⁻  ← Gamma(shape = e⁻, scale = G)                 EM register (only when G > 1)
    e⁻  ← e⁻ + Normal(0, σ_read)                       read noise [e⁻]
    ADU = clip(floor(e⁻/(e⁻ per ADU) + baseline), 0, 2^bits − 1)
Mean:      E[e⁻] = G·(QE·s + c)
Variance:  Var[e⁻] = F·G²·(QE·s + c) + σ_read²,  excess factor F = 2 for G > 1, else 1.
Inverse (mean-exact up to the ≤ 1 ADU quantisation): s = ((ADU − b)·(e⁻/ADU)/G − c)/QE.
``sample_differentiable`` replaces the noise by its Gaussian reparameterisation with the
same mean and variance, so gradients flow to the photons (for PSF learning).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Camera:
    qe: float = 1.0
    em_gain: float = 1.0
    read_noise_e: float = 0.0
    spurious_charge: float = 0.0
    e_per_adu: float = 1.0
    baseline_adu: float = 0.0
    bit_depth: int = 16

    @classmethod
    def from_config(cls, cfg) -> Camera:
        return cls(**{k: getattr(cfg, k) for k in cls.__dataclass_fields__})

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def excess_factor(self) -> float:
        """Excess noise factor F: 2 for an EM register (high gain), 1 otherwise."""
        return 2.0 if self.em_gain > 1.0 else 1.0

    @property
    def max_adu(self) -> float:
        return float(2 ** self.bit_depth - 1)

    # -------------------------------------------------------------- moments
    def mean_electrons(self, photons: torch.Tensor) -> torch.Tensor:
        return self.em_gain * (self.qe * photons + self.spurious_charge)

    def var_electrons(self, photons: torch.Tensor) -> torch.Tensor:
        return (self.excess_factor * self.em_gain ** 2 * (self.qe * photons + self.spurious_charge)
                + self.read_noise_e ** 2)

    # -------------------------------------------------------------- forward with noise
    def electrons(self, photons: torch.Tensor, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
        """Noisy electrons after the EM register and read-out (before digitisation)."""
        rate = (self.qe * photons + self.spurious_charge).clamp_min(0.0)
        e = torch.poisson(rate, generator=generator)
        if self.em_gain > 1.0:
            e = _gamma(e, self.em_gain, generator)
        if self.read_noise_e > 0:
            e = e + self.read_noise_e * torch.randn(e.shape, generator=generator,
                                                    device=e.device, dtype=e.dtype)
        return e

    def digitize(self, electrons: torch.Tensor) -> torch.Tensor:
        """Electrons → ADU (float tensor of integers), floor and clip to the bit depth."""
        adu = torch.floor(electrons / self.e_per_adu + self.baseline_adu)
        return adu.clamp(0.0, self.max_adu)

    def forward(self, photons: torch.Tensor, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """Expected photons per pixel → noisy ADU (float tensor holding integers)."""
        return self.digitize(self.electrons(photons, generator))

    __call__ = forward

    # -------------------------------------------------------------- differentiable path
    def sample_differentiable(self, photons: torch.Tensor,
                              generator: torch.Generator | None = None) -> torch.Tensor:
        """Gaussian reparameterisation: ADU = (μ + sqrt(var)·ε)/(e⁻/ADU) + baseline, no floor."""
        eps = torch.randn(photons.shape, generator=generator, device=photons.device,
                          dtype=photons.dtype)
        e = self.mean_electrons(photons) + torch.sqrt(self.var_electrons(photons)) * eps
        return e / self.e_per_adu + self.baseline_adu

    # -------------------------------------------------------------- inverse
    def to_photons(self, adu: torch.Tensor) -> torch.Tensor:
        """ADU → photons at the sample (mean inverse of the forward model)."""
        e = (adu.float() - self.baseline_adu) * self.e_per_adu / self.em_gain
        return (e - self.spurious_charge) / self.qe


def _gamma(shape: torch.Tensor, scale: float, generator: torch.Generator | None) -> torch.Tensor:
    """Gamma(shape, scale) samples with Gamma(0, ·) = 0, using an explicit generator.

    torch's ``_standard_gamma`` takes no generator, so we use Marsaglia–Tsang with our own
    normal and uniform draws (vectorised rejection; a few rounds suffice).
    """
    k = shape.clamp_min(0.0)
    out = torch.zeros_like(k)
    pos = k > 0
    if not bool(pos.any()):
        return out
    a = k[pos]
    # boost shapes below 1: Gamma(a) = Gamma(a + 1)·U^(1/a)
    small = a < 1
    a_eff = torch.where(small, a + 1, a)
    d = a_eff - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    res = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    for _ in range(64):
        idx = todo.nonzero().squeeze(1)
        if len(idx) == 0:
            break
        x = torch.randn(len(idx), generator=generator, device=a.device, dtype=a.dtype)
        u = torch.rand(len(idx), generator=generator, device=a.device, dtype=a.dtype)
        v = (1 + c[idx] * x) ** 3
        ok = (v > 0) & (torch.log(u.clamp_min(1e-30)) < 0.5 * x ** 2 + d[idx]
                        - d[idx] * v + d[idx] * torch.log(v.clamp_min(1e-30)))
        res[idx[ok]] = d[idx[ok]] * v[ok]
        todo[idx[ok]] = False
    if bool(todo.any()):  # vanishingly rare: fall back to the mean
        res[todo] = d[todo]
    if bool(small.any()):
        u = torch.rand(int(small.sum()), generator=generator, device=a.device, dtype=a.dtype)
        res[small] = res[small] * u ** (1.0 / a[small])
    out[pos] = res * scale
    return out
