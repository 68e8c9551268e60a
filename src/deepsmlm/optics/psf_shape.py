"""The shape of a PSF across z: its footprint and its orientation (pure functions).

- ``energy_radius_nm``: the radius of the disc about the PSF's centroid that holds a given
  fraction (80 % by default) of the photons in the image — the PSF's footprint, what sets
  how many emitters per µm² can be told apart.
- ``rms_radius_nm``: sqrt of the photon-weighted mean squared distance from the centroid;
  smooth in the image, so a design can penalise it.
- ``excess_distance_nm``: the photon-weighted mean distance beyond a radius (a softplus
  ramp), smooth and with a gradient even for photons far outside — the footprint term a
  Fisher design minimises.
- ``principal_axis_deg``: the orientation of the PSF's principal axis (the eigenvector of
  the second-moment matrix with the larger eigenvalue), in degrees in (−90, 90], measured
  from +x towards +y; with ``elongation`` (1 − λ_min/λ_max: 0 for a round spot), so that the
  angle of a round PSF, which means nothing, can be told apart.

Images are (..., H, W) photons per pixel with the emitter anywhere in the patch; pixel
centres are at integer indices times ``pixel_nm``.
"""

from __future__ import annotations

import torch


def _moments(img: torch.Tensor, pixel_nm: float):
    """Photon-weighted centroid and coordinates of every pixel relative to it [nm]."""
    h, w = img.shape[-2:]
    y = torch.arange(h, dtype=img.dtype, device=img.device) * pixel_nm
    x = torch.arange(w, dtype=img.dtype, device=img.device) * pixel_nm
    total = img.sum((-2, -1)).clamp_min(1e-30)
    p = img / total[..., None, None]
    cx = (p.sum(-2) * x).sum(-1)
    cy = (p.sum(-1) * y).sum(-1)
    dx = x - cx[..., None, None]
    dy = y[:, None] - cy[..., None, None]
    return p, dx, dy


def rms_radius_nm(img: torch.Tensor, pixel_nm: float) -> torch.Tensor:
    """sqrt(Σ p·r²) about the centroid [nm], (...,); differentiable in ``img``."""
    p, dx, dy = _moments(img, pixel_nm)
    return torch.sqrt((p * (dx ** 2 + dy ** 2)).sum((-2, -1)))


def excess_distance_nm(img: torch.Tensor, pixel_nm: float, radius_nm: float,
                       softness_nm: float = 100.0) -> torch.Tensor:
    """Σ p·s·softplus((r − R)/s) [nm], (...,): ≈ the mean distance of the photons beyond R
    from the centroid (s = ``softness_nm`` rounds the ramp); differentiable in ``img``."""
    p, dx, dy = _moments(img, pixel_nm)
    r = torch.sqrt(dx ** 2 + dy ** 2 + 1e-6)
    ramp = softness_nm * torch.nn.functional.softplus((r - radius_nm) / softness_nm)
    return (p * ramp).sum((-2, -1))


def energy_radius_nm(img: torch.Tensor, pixel_nm: float, fraction: float = 0.8,
                     upsample: int = 4) -> torch.Tensor:
    """The radius [nm] of the disc about the centroid that holds ``fraction`` of the photons
    of the image, (...,). Each pixel is split into upsample² sub-pixels of equal share, so
    that the radius is resolved below one pixel; linear interpolation between the sorted
    sub-pixel distances. Binning and this even spread each add px²/12 to the variance of
    the measured distribution: for a Gaussian of σ the radius is that of
    sqrt(σ² + px²/6) (+2 % at σ = 1.5 px, +0.2 % at 6 px)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    img = img.double()
    lead = img.shape[:-2]
    p, dx, dy = _moments(img, pixel_nm)
    off = (torch.arange(upsample, dtype=img.dtype) + 0.5) / upsample - 0.5
    oy, ox = torch.meshgrid(off * pixel_nm, off * pixel_nm, indexing="ij")
    ox, oy = ox.reshape(-1), oy.reshape(-1)  # (u²,) sub-pixel centres inside a pixel
    r = torch.sqrt((dx[..., None] + ox) ** 2 + (dy[..., None] + oy) ** 2)  # (..., H, W, u²)
    share = (p[..., None] / upsample ** 2).expand_as(r)
    r = r.reshape(*lead, -1)
    share = share.reshape(*lead, -1)
    order = torch.argsort(r, dim=-1)
    r_sorted = torch.gather(r, -1, order)
    cum = torch.cumsum(torch.gather(share, -1, order), -1)
    k = torch.searchsorted(cum.contiguous(), torch.full((*lead, 1), fraction,
                                                        dtype=cum.dtype)).clamp_max(r.shape[-1] - 1)
    k0 = (k - 1).clamp_min(0)
    c0, c1 = torch.gather(cum, -1, k0), torch.gather(cum, -1, k)
    r0, r1 = torch.gather(r_sorted, -1, k0), torch.gather(r_sorted, -1, k)
    t = ((fraction - c0) / (c1 - c0).clamp_min(1e-30)).clamp(0.0, 1.0)
    t = torch.where(k == 0, torch.ones_like(t), t)
    return (r0 + t * (r1 - r0))[..., 0].float()


def principal_axis_deg(img: torch.Tensor, pixel_nm: float = 1.0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Orientation of the principal axis [deg, (−90, 90]] and elongation 1 − λ_min/λ_max,
    each (...,), from the photon-weighted second moments about the centroid."""
    p, dx, dy = _moments(img.double(), pixel_nm)
    sxx = (p * dx * dx).sum((-2, -1))
    syy = (p * dy * dy).sum((-2, -1))
    sxy = (p * dx * dy).sum((-2, -1))
    angle = 0.5 * torch.atan2(2.0 * sxy, sxx - syy)
    half = torch.sqrt(((sxx - syy) / 2) ** 2 + sxy ** 2)
    mean = (sxx + syy) / 2
    lo, hi = mean - half, mean + half
    angle_deg = torch.rad2deg(angle)
    angle_deg = torch.where(angle_deg <= -90.0, angle_deg + 180.0, angle_deg)
    return angle_deg.float(), (1.0 - lo / hi.clamp_min(1e-30)).float()


def unwrap_deg(angle_deg, period: float = 180.0):
    """An axis orientation series made continuous (steps of ±period removed), so that the
    rotation over z reads as one curve; numpy in, numpy out."""
    import numpy as np

    a = np.asarray(angle_deg, dtype=float)
    return np.rad2deg(np.unwrap(np.deg2rad(a) * (360.0 / period))) * (period / 360.0)
