"""Cramér–Rao lower bound of single-emitter localization through our own PSF models.

Model for one emitter in its patch (pixels k), θ = (x, y, z [nm], N [photons], b [photons/px]):
    μ_k(θ) = N·h_k(x, y, z) + b                              expected photons at the sample
Camera noise as an equivalent variance in photon units (DESIGN §4.2):
    v_k = (F·(QE·μ_k + c) + σ_read²/G²) / QE²
(F excess factor, 2 for an EMCCD; read noise enters as an added Poisson-like term, as is
usual for sCMOS). Fisher information and bound:
    I_ij = Σ_k ∂μ_k/∂θ_i · ∂μ_k/∂θ_j / v_k,     CRLB_i = sqrt((I⁻¹)_ii)
∂h/∂(x, y, z) come from forward-mode automatic differentiation through the PSF model, so
the bound holds for any model we render (pupil, Gaussian, astigmatic, any mask).
Parameters about which the model carries no information (z for a 2D Gaussian) are dropped
and reported as NaN.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from deepsmlm.camera import Camera
from deepsmlm.optics.psf import PSF

PARAMS = ("x", "y", "z", "photons", "background")


def centred_positions(psf: PSF, z_nm, offset_px: tuple[float, float] = (0.5, 0.5)
                      ) -> torch.Tensor:
    """Emitters in the central pixel of their patch (at ``offset_px`` inside it), (M, 3) nm."""
    z = torch.as_tensor(np.asarray(z_nm, dtype=np.float32)).reshape(-1)
    c = psf.patch_px // 2
    x = (c + offset_px[0]) * psf.pixel_size_nm
    y = (c + offset_px[1]) * psf.pixel_size_nm
    return torch.stack([torch.full_like(z, x), torch.full_like(z, y), z], dim=1)


def model_and_jacobian(psf: PSF, xyz_nm: torch.Tensor, photons: torch.Tensor,
                       background: torch.Tensor, differentiable: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """μ (M, P, P) and ∂μ/∂θ (M, P, P, 5) for θ = (x, y, z, N, b), patches of ``psf``.

    ``differentiable``: keep the autograd graph, so that both can be back-propagated into
    the PSF's parameters (a learnable phase mask); forward-mode AD gives ∂/∂(x, y, z).
    """
    xyz_nm = xyz_nm.detach().float()
    unit = torch.ones_like(photons)
    grads = []
    with torch.set_grad_enabled(differentiable):
        h, _ = psf.patches(xyz_nm, unit)
        for axis in range(3):
            tangent = torch.zeros_like(xyz_nm)
            tangent[:, axis] = 1.0
            with fwAD.dual_level():
                _, dh = fwAD.unpack_dual(psf.patches(fwAD.make_dual(xyz_nm, tangent), unit)[0])
            grads.append(torch.zeros_like(h) if dh is None else dh)
    n = photons[:, None, None]
    mu = n * h + background[:, None, None]
    jac = torch.stack([n * grads[0], n * grads[1], n * grads[2], h, torch.ones_like(h)], -1)
    return mu, jac


def pixel_variance(mu: torch.Tensor, camera: Camera | None) -> torch.Tensor:
    """Noise variance per pixel in photon units (Poisson when ``camera`` is None)."""
    if camera is None:
        return mu
    e = camera.excess_factor * (camera.qe * mu + camera.spurious_charge)
    return (e + (camera.read_noise_e / camera.em_gain) ** 2) / camera.qe ** 2


def fisher_information(mu: torch.Tensor, jac: torch.Tensor, camera: Camera | None = None
                       ) -> torch.Tensor:
    """I (M, Q, Q) from μ (M, P, P) and ∂μ/∂θ (M, P, P, Q) (Q = 5: x, y, z, N, b)."""
    v = pixel_variance(mu.double(), camera).clamp_min(1e-12)
    j = jac.double().flatten(1, 2)  # (M, K, Q)
    return torch.einsum("mki,mkj->mij", j / v.flatten(1)[..., None], j)


def bound_from_fisher(info: torch.Tensor, rel_tol: float = 1e-9) -> torch.Tensor:
    """sqrt(diag(I⁻¹)) (M, 5); parameters with no information give NaN."""
    out = torch.full(info.shape[:2], float("nan"), dtype=info.dtype)
    for m in range(info.shape[0]):
        d = torch.diagonal(info[m])
        free = d > rel_tol * d.max()
        sub = info[m][free][:, free]
        try:
            out[m, free] = torch.sqrt(torch.diagonal(torch.linalg.inv(sub)))
        except torch.linalg.LinAlgError:  # degenerate (e.g. two emitters on one spot): NaN
            pass
    return out


def crlb(psf: PSF, z_nm, photons: float, background_per_px: float,
         camera: Camera | None = None, offset_px: tuple[float, float] = (0.5, 0.5)) -> dict:
    """CRLB of x, y, z [nm], photons and background for one emitter per z.

    Returns a dict of numpy arrays keyed ``z_nm`` and ``crlb_<param>`` (nm for x, y, z).
    """
    xyz = centred_positions(psf, z_nm, offset_px)
    m = len(xyz)
    mu, jac = model_and_jacobian(psf, xyz, torch.full((m,), float(photons)),
                                 torch.full((m,), float(background_per_px)))
    bounds = bound_from_fisher(fisher_information(mu, jac, camera)).numpy()
    out = {"z_nm": xyz[:, 2].numpy().astype(float)}
    for i, name in enumerate(PARAMS):
        out[f"crlb_{name}"] = bounds[:, i]
    return out


def mortensen_mle_sigma_nm(sigma_nm: float, pixel_nm: float, photons: float,
                           background_per_px: float, excess_factor: float = 1.0) -> float:
    """Closed-form MLE precision of a pixelated 2D Gaussian (Mortensen et al. 2010, eq. 6).

    σ_a² = σ² + a²/12;  Var = F·σ_a²/N · [1 + ∫₀¹ ln t / (1 + t/τ) dt]⁻¹,  τ = 2π σ_a² b/(N a²).
    """
    from scipy.integrate import quad

    sa2 = sigma_nm ** 2 + pixel_nm ** 2 / 12.0
    tau = 2 * math.pi * sa2 * background_per_px / (photons * pixel_nm ** 2)
    if tau == 0:
        integral = 0.0
    else:
        integral, _ = quad(lambda t: math.log(t) / (1 + t / tau), 0.0, 1.0, limit=200)
    return math.sqrt(excess_factor * sa2 / photons / (1 + integral))
