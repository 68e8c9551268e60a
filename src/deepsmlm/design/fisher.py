"""Fisher-information mask design: minimise the mean CRLB of x, y, z over the z range.

For one emitter at each of ``z_nm`` (photons N, background b per pixel, the experiment's
camera), the Fisher information of θ = (x, y, z, N, b) is I = Jᵀ diag(1/var) J with J the
Jacobian of the expected image (``evaluation.crlb``). The objective is

    mean_z [ (σ_x + σ_y + σ_z) / 3 ],   σ_i = sqrt((I⁻¹)_ii)   [nm],

differentiable in the mask through the pupil model. Optimised over Zernike coefficients
this is the principle behind the Tetrapod (Shechtman et al., PRL 113, 133902 (2014)).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from deepsmlm.camera import Camera
from deepsmlm.evaluation.crlb import centred_positions, fisher_information, model_and_jacobian
from deepsmlm.optics.psf import PupilPSF


def crlb_xyz_nm(psf: PupilPSF, z_nm: torch.Tensor, photons: float, background_per_px: float,
                camera: Camera | None = None) -> torch.Tensor:
    """σ_x, σ_y, σ_z [nm] (M, 3) for one emitter per z, differentiable in the PSF's mask."""
    xyz = centred_positions(psf, z_nm.detach().cpu().numpy())
    m = len(xyz)
    mu, jac = model_and_jacobian(psf, xyz, torch.full((m,), float(photons)),
                                 torch.full((m,), float(background_per_px)), differentiable=True)
    return bound_sd(mu, jac, camera)[:, :3]


def bound_sd(mu: torch.Tensor, jac: torch.Tensor, camera: Camera | None) -> torch.Tensor:
    """sqrt(diag(I⁻¹)) (M, P) of μ (M, H, W) and ∂μ/∂θ (M, H, W, P), differentiable: a
    tiny ridge keeps the inverse finite where a parameter carries no information."""
    info = fisher_information(mu, jac, camera)
    ridge = 1e-9 * torch.diagonal(info, dim1=1, dim2=2).mean(1)[:, None, None]
    eye = torch.eye(info.shape[-1], dtype=info.dtype, device=info.device)
    cov = torch.linalg.inv(info + ridge * eye)
    return torch.sqrt(torch.diagonal(cov, dim1=1, dim2=2).clamp_min(0.0)).float()


def mean_crlb_nm(psf: PupilPSF, z_nm: torch.Tensor, photons: float, background_per_px: float,
                 camera: Camera | None = None) -> torch.Tensor:
    """The design objective: mean over z of (σ_x + σ_y + σ_z)/3 [nm]."""
    return crlb_xyz_nm(psf, z_nm, photons, background_per_px, camera).mean()


def mean_excess_um(psf: PupilPSF, z_nm: torch.Tensor, radius_nm: float) -> torch.Tensor:
    """The footprint term: mean over z of the photon-weighted distance [µm] beyond
    ``radius_nm`` from the PSF's centroid (``optics.psf_shape.excess_distance_nm``) for one
    emitter per z, differentiable in the mask."""
    from deepsmlm.optics.psf_shape import excess_distance_nm

    dev = next(psf.buffers()).device  # the PSF may live on a GPU (design --device)
    xyz = centred_positions(psf, z_nm.detach().cpu().numpy()).to(dev)
    img, _ = psf.patches(xyz, torch.ones(len(xyz), device=dev))
    return excess_distance_nm(img, psf.pixel_size_nm, radius_nm).mean() / 1000.0


COLOUR_DELTA_NM = 2.0  # λ_k ± δ: the central difference of ∂μ/∂λ


def colour_crlb(triples, z_nm: torch.Tensor, photons: float, background_per_px: float,
                camera: Camera | None = None, delta_nm: float = COLOUR_DELTA_NM
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The CRLB of the emission wavelength: σ_λ [nm] (K, M) and σ_x, σ_y, σ_z [nm] (K, M, 3)
    for one emitter per z of each species k, with θ = (x, y, z, N, b, λ) estimated jointly
    (so what z or brightness can mimic of a colour change is not counted as colour).

    ``triples[k]`` = (PSF at λ_k − δ, at λ_k, at λ_k + δ) (each with its own mask scale);
    ∂μ/∂λ is their central difference, differentiable in the shared mask."""
    sig_l, sig_xyz = [], []
    for lo, mid, hi in triples:
        xyz = centred_positions(mid, z_nm.detach().cpu().numpy())
        m = len(xyz)
        n = torch.full((m,), float(photons))
        mu, jac = model_and_jacobian(mid, xyz, n, torch.full((m,), float(background_per_px)),
                                     differentiable=True)
        d_lambda = (hi.patches(xyz, n)[0] - lo.patches(xyz, n)[0]) / (2.0 * delta_nm)
        sd = bound_sd(mu, torch.cat([jac, d_lambda[..., None]], -1), camera)  # (M, 6)
        sig_l.append(sd[:, 5])
        sig_xyz.append(sd[:, :3])
    return torch.stack(sig_l), torch.stack(sig_xyz)


LATERAL_ALLOWANCE = 1.5  # the colour design may cost at most this factor in lateral CRLB


def mean_colour_bound(triples, spacing_nm: torch.Tensor, z_nm: torch.Tensor, photons: float,
                      background_per_px: float, camera: Camera | None = None,
                      lateral_reference_nm: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The colour design objective and the lateral CRLB (K, M) it was computed with.

    Objective: mean over species and z of σ_λ / Δλ_k (Δλ_k the gap to the nearest other
    species; below about 1/3 the colours are told apart well), plus, when
    ``lateral_reference_nm`` (K, M) is given, the squared excess of the lateral bound
    (σ_x + σ_y)/2 over ``LATERAL_ALLOWANCE`` × that reference: without it the Fisher
    information on λ is maximised by a grating that spreads each emitter over microns, a
    spectrometer no dense sample allows."""
    sig, xyz = colour_crlb(triples, z_nm, photons, background_per_px, camera)
    lateral = 0.5 * (xyz[..., 0] + xyz[..., 1])
    objective = (sig / spacing_nm[:, None]).mean()
    if lateral_reference_nm is not None:
        excess = torch.relu(lateral / (LATERAL_ALLOWANCE * lateral_reference_nm) - 1.0)
        objective = objective + (excess ** 2).mean()
    return objective, lateral


@dataclass
class CrlbDesign:
    history: list[dict] = field(default_factory=list)
    start_nm: float = float("nan")
    best_nm: float = float("nan")
    best_state: dict | None = None


def design_by_crlb(psf: PupilPSF, phase_model: torch.nn.Module, z_nm: torch.Tensor,
                   photons: float, background_per_px: float, camera: Camera | None, *,
                   steps: int, lr: float, max_minutes: float | None = None,
                   regulariser=None, progress: bool = True,
                   objective=None) -> CrlbDesign:
    """Adam on the phase model's parameters; keeps (and loads back) the best state.
    ``objective()`` replaces the mean CRLB of x, y, z (e.g. ``mean_colour_bound``)."""
    from tqdm import tqdm

    psf.set_mask_source(phase_model)
    opt = torch.optim.Adam(phase_model.parameters(), lr=lr)
    out = CrlbDesign()
    best_total = math.inf
    t0 = time.perf_counter()
    for step in tqdm(range(steps + 1), disable=not progress, desc="crlb design", unit="step"):
        obj = objective() if objective is not None else \
            mean_crlb_nm(psf, z_nm, photons, background_per_px, camera)
        loss = obj + (regulariser(phase_model()) if regulariser is not None else 0.0)
        value, total = float(obj.detach()), float(loss.detach())
        if step == 0:
            out.start_nm = value
        # the best state is judged on what is optimised (CRLB + regulariser), so a phase
        # range or smoothness limit holds in the mask that is kept
        if math.isfinite(total) and (out.best_state is None or total < best_total):
            best_total, out.best_nm = total, value
            out.best_state = {k: v.detach().clone() for k, v in phase_model.state_dict().items()}
        out.history.append({"step": step, "mean_crlb_nm": value, "loss": total,
                            "seconds": time.perf_counter() - t0})
        if step == steps or (max_minutes is not None
                             and time.perf_counter() - t0 > 60.0 * max_minutes):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if out.best_state is not None:
        phase_model.load_state_dict(out.best_state)
    return out
