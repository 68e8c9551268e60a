"""Phase retrieval: fit the pupil of our differentiable PSF model to a bead z-stack.

The model of plane t of bead b (photons per pixel, crop coordinates):

    μ_bt = s_bt · G_σ ∗ PSF(x_b, y_b, z_bt; φ, A) + β_bt,   z_bt = d_b + dir·t·Δz

where PSF is the pupil model (scalar or vectorial) with the pupil phase
φ = φ_design + Σ_j a_j Z_j (Noll j ≥ 5: piston is invisible, tilt is the bead's x/y,
defocus is its z) [+ a pixel map δφ], the amplitude A = exp(Σ_j b_j Z_j), and G_σ a
Gaussian blur for the bead's size and residual model mismatch. z_bt is the bead's height
above the focal plane: d_b the offset (the focus offset of the stack), dir = ±1 the
direction of the scan, Δz the stage step. The bead is taken to touch the coverslip, so the
calibration PSF has no index mismatch (the light of a bead on glass never crosses water)
and keeps the full NA.

Fitted by maximising the Poisson likelihood (the deviance is minimised) with Adam, coarse
to fine: a few starts over the focus offset and scan direction with the low orders, then
the Zernike orders grow stage by stage, then (optionally) the pixel map with a smoothness
penalty. Bad pixels carry weight 0. Arrays in and out are numpy; the PSF is a
``PupilPSF`` (or subclass) built for the calibration geometry.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepsmlm.optics.psf import PupilPSF, place_patches
from deepsmlm.optics.zernike import zernike_basis


@dataclass
class FitSettings:
    """How the fit proceeds; the defaults suit a 50-plane, 100 nm-step stack on a CPU."""

    z_step_nm: float
    direction: int = 1                    # +1: the bead's z grows with the plane index
    zernike_stages: tuple[int, ...] = (15, 28, 45)  # highest Noll index of each stage
    steps_per_stage: int = 150
    n_starts: int = 5                     # focus offsets tried per direction
    start_steps: int = 40
    random_starts: int = 0                # extra starts from random low-order phases
    start_rms_rad: float = 1.5            # their RMS per mode
    seed: int = 0
    pixel_steps: int = 0                  # > 0: a pixel-map stage after the Zernike stages
    pixel_smoothness: float = 10.0
    amplitude_modes: tuple[int, ...] = (2, 3, 4, 11)
    fit_blur: bool = True
    blur_sigma_nm: float = 50.0           # start (or fixed) value; 0 = no blur
    learning_rate: float = 0.05


@dataclass
class PupilFit:
    """The result: the pupil, the beads and how well the model matches every plane."""

    noll: dict[int, float]                # fitted Zernike coefficients [rad RMS]
    amplitude_noll: dict[int, float]      # log-amplitude coefficients
    phase: np.ndarray                     # total pupil phase φ [rad] (n, n), 0 outside
    fitted_phase: np.ndarray              # Σ a_j Z_j + δφ [rad] (without the design mask)
    amplitude: np.ndarray                 # A (n, n), 1 = uniform
    xy_px: np.ndarray                     # (B, 2) bead x, y in crop pixels
    offset_nm: np.ndarray                 # (B,) d_b: bead height above focus at plane 0
    direction: int
    photons: np.ndarray                   # (B, T)
    background: np.ndarray                # (B, T) photons per pixel
    blur_sigma_nm: float
    correlation: np.ndarray               # (B, T) Pearson, model vs measured plane
    residual: np.ndarray                  # (B, T) RMS residual / RMS signal
    model: np.ndarray                     # (B, T, P, P) expected photons
    deviance: float
    seconds: float
    history: list[tuple[str, int, float]] = field(default_factory=list)

    def z_nm(self, n_planes: int, z_step_nm: float) -> np.ndarray:
        """(B, T) height of each bead above the focal plane in each plane."""
        t = np.arange(n_planes)
        return self.offset_nm[:, None] + self.direction * t[None] * z_step_nm

    def focus_plane(self, z_step_nm: float) -> np.ndarray:
        """(B,) the (fractional) plane index where each bead is in focus (z = 0)."""
        return -self.offset_nm / (self.direction * z_step_nm)


class StackModel(nn.Module):
    """The differentiable model of B bead crops × T planes (see the module docstring)."""

    def __init__(self, psf: PupilPSF, base_phase: torch.Tensor, data: torch.Tensor,
                 weight: torch.Tensor, settings: FitSettings, direction: int,
                 offset_nm: float):
        super().__init__()
        self.psf = psf
        self.settings = settings
        self.direction = int(direction)
        b, t, p, _ = data.shape
        self.shape = (b, t, p)
        grid = psf.grid
        rho, theta = grid.polar(torch.float64)
        top = max(settings.zernike_stages)
        self.modes = list(range(5, top + 1))
        self.register_buffer("basis", zernike_basis(self.modes, rho, theta).float())
        self.register_buffer("amp_basis",
                             zernike_basis(list(settings.amplitude_modes), rho, theta).float())
        self.register_buffer("base_phase", base_phase.float())
        self.register_buffer("active", torch.zeros(len(self.modes)))
        self.coef = nn.Parameter(torch.zeros(len(self.modes)))
        self.amp_coef = nn.Parameter(torch.zeros(len(settings.amplitude_modes)))
        self.pixel_map = nn.Parameter(torch.zeros(grid.n_px, grid.n_px))
        self.use_pixel_map = False
        # starting values from the data
        w = weight
        border = torch.cat([data[..., 0, :], data[..., -1, :], data[..., :, 0],
                            data[..., :, -1]], dim=-1)
        bg0 = border.median(dim=-1).values.clamp_min(1e-3)  # (B, T)
        signal = ((data - bg0[..., None, None]).clamp_min(0) * w).sum((-2, -1))
        self.log_photons = nn.Parameter(torch.log(signal.clamp_min(10.0)))
        self.bg_raw = nn.Parameter(_softplus_inv(bg0))
        proj = ((data - bg0[..., None, None]).clamp_min(0) * w).sum(1)  # (B, P, P)
        ar = torch.arange(p, dtype=data.dtype) + 0.5
        tot = proj.sum((-2, -1)).clamp_min(1e-9)
        cx = (proj.sum(-2) * ar).sum(-1) / tot
        cy = (proj.sum(-1) * ar).sum(-1) / tot
        self.xy_px = nn.Parameter(torch.stack([cx, cy], dim=-1).float())
        self.offset_hnm = nn.Parameter(torch.full((b,), offset_nm / 100.0))  # in 100 nm
        self.blur_raw = nn.Parameter(_softplus_inv(
            torch.tensor(max(settings.blur_sigma_nm / psf.pixel_size_nm - 1e-3, 1e-4))))
        self.blur_raw.requires_grad_(settings.fit_blur)

    # ------------------------------------------------------------- parameters → pupil
    def fitted_phase(self) -> torch.Tensor:
        phase = torch.einsum("k,kij->ij", self.coef * self.active, self.basis)
        if self.use_pixel_map:
            phase = phase + self.pixel_map * self.psf.aperture
        return phase

    def phase(self) -> torch.Tensor:
        return self.base_phase + self.fitted_phase()

    def amplitude(self) -> torch.Tensor:
        return torch.exp(torch.einsum("k,kij->ij", self.amp_coef, self.amp_basis))

    def blur_sigma_px(self) -> torch.Tensor:
        return F.softplus(self.blur_raw) + 1e-3

    def z_nm(self) -> torch.Tensor:
        b, t, _ = self.shape
        steps = torch.arange(t, dtype=torch.float32) * self.settings.z_step_nm
        return self.offset_hnm[:, None] * 100.0 + self.direction * steps[None]

    def forward(self) -> torch.Tensor:
        """Expected photons (B, T, P, P)."""
        b, t, p = self.shape
        px = self.psf.pixel_size_nm
        xy = (self.xy_px * px)[:, None].expand(b, t, 2)
        xyz = torch.cat([xy, self.z_nm()[..., None]], dim=-1).reshape(-1, 3)
        ones = torch.ones(b * t)
        vals, origin = self.psf.patches(xyz, ones, mask_phase=self.phase(),
                                        amplitude=self.amplitude())
        vals = gaussian_blur(vals, self.blur_sigma_px())
        img = place_patches(vals, origin, torch.arange(b * t), (b * t, p, p)).view(b, t, p, p)
        photons = torch.exp(self.log_photons)[..., None, None]
        bg = (F.softplus(self.bg_raw) + 1e-6)[..., None, None]
        return photons * img + bg


def gaussian_blur(images: torch.Tensor, sigma_px: torch.Tensor) -> torch.Tensor:
    """Images (N, P, P) convolved with a normalised Gaussian of σ ``sigma_px`` (zero padding),
    cut at 4σ (at least 4 px)."""
    radius = max(4, math.ceil(4.0 * float(sigma_px.detach())))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    k = torch.exp(-0.5 * (x / sigma_px) ** 2)
    k = k / k.sum()
    img = images[:, None]
    img = F.conv2d(img, k.view(1, 1, 1, -1), padding=(0, radius))
    img = F.conv2d(img, k.view(1, 1, -1, 1), padding=(radius, 0))
    return img[:, 0]


def poisson_deviance(mu: torch.Tensor, data: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean Poisson deviance over weighted pixels: 2·(μ − d + d·log(d/μ)), ≈ 1 at a fit
    limited by shot noise."""
    d = data.clamp_min(0.0)
    term = mu - d + torch.where(d > 0, d * torch.log(d.clamp_min(1e-12) / mu), torch.zeros_like(d))
    return 2.0 * (term * weight).sum() / weight.sum().clamp_min(1.0)


def smoothness(pixel_map: torch.Tensor, aperture: torch.Tensor) -> torch.Tensor:
    """Mean squared finite difference of the pixel map inside the aperture [rad²]."""
    m = pixel_map * aperture
    inside_x = aperture[:, 1:] * aperture[:, :-1]
    inside_y = aperture[1:] * aperture[:-1]
    gx = ((m[:, 1:] - m[:, :-1]) ** 2 * inside_x).sum() / inside_x.sum()
    gy = ((m[1:] - m[:-1]) ** 2 * inside_y).sum() / inside_y.sum()
    return gx + gy


def _softplus_inv(y: torch.Tensor) -> torch.Tensor:
    y = torch.as_tensor(y, dtype=torch.float32)
    return torch.where(y > 20, y, torch.log(torch.expm1(y.clamp_min(1e-6))))


def _run(model: StackModel, data, weight, steps: int, lr: float, stage: str,
         history: list, progress: Callable[[str, int, int, float], None] | None,
         pixel: bool = False) -> float:
    groups = [
        {"params": [model.coef], "lr": lr},
        {"params": [model.amp_coef], "lr": lr * 0.4},
        {"params": [model.xy_px], "lr": lr},
        {"params": [model.offset_hnm], "lr": lr},
        {"params": [model.log_photons, model.bg_raw], "lr": lr * 0.5},
    ]
    if model.blur_raw.requires_grad:
        groups.append({"params": [model.blur_raw], "lr": lr * 0.5})
    if pixel:
        groups.append({"params": [model.pixel_map], "lr": lr * 0.5})
    opt = torch.optim.Adam(groups)
    base = [g["lr"] for g in opt.param_groups]
    loss_value = math.inf
    for step in range(steps):
        frac = step / max(steps - 1, 1)
        for g, lr0 in zip(opt.param_groups, base, strict=True):  # cosine to 10 %
            g["lr"] = lr0 * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))
        opt.zero_grad(set_to_none=True)
        dev = poisson_deviance(model(), data, weight)
        loss = dev
        if pixel:
            loss = loss + model.settings.pixel_smoothness * smoothness(model.pixel_map,
                                                                       model.psf.aperture)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"PSF calibration diverged in stage {stage} at step {step}")
        loss.backward()
        opt.step()
        loss_value = float(dev.detach())
        if step % 10 == 0 or step == steps - 1:
            history.append((stage, step, loss_value))
            if progress is not None:
                progress(stage, step, steps, loss_value)
    return loss_value


def fit_pupil(psf: PupilPSF, crops: np.ndarray, weights: np.ndarray, settings: FitSettings,
              base_phase: torch.Tensor | None = None,
              progress: Callable[[str, int, int, float], None] | None = None) -> PupilFit:
    """Fit the pupil (and beads, photons, background, blur) to bead crops (B, T, P, P) in
    photons with weights (B, T, P, P) in {0, 1}.

    ``psf`` is built for the calibration geometry (no index mismatch, focus 0, full NA, a
    patch at least the crop); ``base_phase`` the design mask on its grid (zeros: a clear
    pupil).
    """
    t0 = time.perf_counter()
    data = torch.as_tensor(crops, dtype=torch.float32)
    weight = torch.as_tensor(weights, dtype=torch.float32)
    if data.ndim != 4:
        raise ValueError(f"crops must be (beads, planes, P, P), got {tuple(data.shape)}")
    base = torch.zeros(psf.grid.n_px, psf.grid.n_px) if base_phase is None else base_phase
    n_planes = data.shape[1]
    history: list[tuple[str, int, float]] = []
    direction = 1 if settings.direction >= 0 else -1
    first = settings.zernike_stages[0]
    gen = torch.Generator().manual_seed(settings.seed)
    # 1. starts: the in-focus plane at fractions of the scan (the design phase, or clear),
    # then random low-order phases at the best of those offsets; the lowest deviance wins
    best: tuple[float, StackModel] | None = None
    fractions = np.linspace(0.2, 0.8, settings.n_starts) if settings.n_starts > 1 else [0.5]
    starts = [(float(f), None) for f in fractions] + [(None, i)
                                                       for i in range(settings.random_starts)]
    for frac, rnd in starts:
        if frac is not None:
            offset = -direction * frac * (n_planes - 1) * settings.z_step_nm
            label = f"start: focus at {frac:.0%} of the scan"
        else:
            offset = float(best[1].offset_hnm.detach().mean()) * 100.0
            label = f"start: random phase {rnd + 1}"
        model = StackModel(psf, base, data, weight, settings, direction, offset)
        model.active[: first - 4] = 1.0
        if rnd is not None:
            with torch.no_grad():
                model.coef[: first - 4] = settings.start_rms_rad * torch.randn(
                    first - 4, generator=gen)
        loss = _run(model, data, weight, settings.start_steps, settings.learning_rate,
                    label, history, progress)
        if best is None or loss < best[0]:
            best = (loss, model)
    assert best is not None
    model = best[1]
    # 2. Zernike stages of growing order
    for top in settings.zernike_stages:
        model.active[: top - 4] = 1.0
        _run(model, data, weight, settings.steps_per_stage, settings.learning_rate,
             f"zernike ≤ {top}", history, progress)
    # 3. pixel map
    if settings.pixel_steps > 0:
        model.use_pixel_map = True
        _run(model, data, weight, settings.pixel_steps, settings.learning_rate * 0.5,
             "pixel map", history, progress, pixel=True)
    with torch.no_grad():
        mu = model()
        dev = float(poisson_deviance(mu, data, weight))
        corr, resid = plane_agreement(mu.numpy(), data.numpy(), weight.numpy())
        aperture = psf.aperture
        return PupilFit(
            noll={j: float(a) for j, a, on in zip(model.modes, model.coef, model.active,
                                                   strict=True) if on > 0},
            amplitude_noll={j: float(b) for j, b in zip(settings.amplitude_modes,
                                                        model.amp_coef, strict=True)},
            phase=(model.phase() * aperture).numpy(),
            fitted_phase=(model.fitted_phase() * aperture).numpy(),
            amplitude=model.amplitude().numpy(),
            xy_px=model.xy_px.numpy().copy(),
            offset_nm=(model.offset_hnm * 100.0).numpy().copy(),
            direction=model.direction,
            photons=torch.exp(model.log_photons).numpy().copy(),
            background=(F.softplus(model.bg_raw) + 1e-6).numpy().copy(),
            blur_sigma_nm=float(model.blur_sigma_px()) * psf.pixel_size_nm,
            correlation=corr, residual=resid, model=mu.numpy(), deviance=dev,
            seconds=time.perf_counter() - t0, history=history)


def plane_agreement(model: np.ndarray, data: np.ndarray, weight: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per plane (…, P, P → …): the weighted Pearson correlation of model and data, and the
    RMS residual relative to the RMS of the data's signal (background removed)."""
    w = weight
    n = w.sum((-2, -1)).clip(min=1)
    mm = (model * w).sum((-2, -1)) / n
    md = (data * w).sum((-2, -1)) / n
    a = (model - mm[..., None, None]) * w
    b = (data - md[..., None, None]) * w
    corr = (a * b).sum((-2, -1)) / np.sqrt((a * a).sum((-2, -1)) * (b * b).sum((-2, -1))
                                           + 1e-30)
    resid = np.sqrt((((model - data) * w) ** 2).sum((-2, -1)) / ((b ** 2).sum((-2, -1))
                                                                 + 1e-30))
    return corr, resid
