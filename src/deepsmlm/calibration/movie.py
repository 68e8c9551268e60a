"""Measure a raw movie so a user can set up training for it without guessing.

From the frames alone: the ADU per photo-electron (×excess factor) and the baseline from
the photon-transfer relation var = a·(mean − baseline) + r² over pixel blocks, the
background level, the photons of the spots and the PSF width (second moments of isolated
spots). Camera values given by the user replace the estimated ones.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def photon_transfer(frames: np.ndarray, block: int = 4) -> tuple[float, float]:
    """(slope a, intercept c) of var = a·mean + c over block×block pixel groups per frame,
    using the darker half of the blocks (background-dominated)."""
    t, h, w = frames.shape
    hb, wb = h // block, w // block
    blocks = frames[:, : hb * block, : wb * block].reshape(t, hb, block, wb, block)
    # temporal differences of consecutive frames cancel the fixed pattern
    diff = blocks[1:] - blocks[:-1]
    # per block, medians over frame pairs: robust to the emitters that blink through it
    mean = np.median(0.5 * (blocks[1:] + blocks[:-1]).mean(axis=(2, 4)), axis=0).ravel()
    var = np.median(diff.var(axis=(2, 4)) / 2, axis=0).ravel()
    keep = mean <= np.quantile(mean, 0.5)
    a, c = np.polyfit(mean[keep], var[keep], 1)
    return float(a), float(c)


def estimate_movie(frames_adu: np.ndarray, pixel_size_nm: float | None = None,
                   baseline_adu: float | None = None, adu_per_photon: float | None = None,
                   excess_factor: float = 2.0) -> dict:
    """Baseline, background photons/px, spot photons and PSF σ of frames (T, H, W) in ADU.

    ``adu_per_photon`` = QE·gain/(e⁻ per ADU); estimated from the photon transfer slope
    a = F·adu_per_photon (F = ``excess_factor``, 2 for an EMCCD, 1 for sCMOS) when not given.
    """
    f = np.asarray(frames_adu, dtype=np.float64)
    a, c = photon_transfer(f) if len(f) > 1 else (np.nan, np.nan)
    k = adu_per_photon if adu_per_photon else a / excess_factor
    base = baseline_adu if baseline_adu is not None else (-c / a if a > 0 else np.nan)
    photons = (f - base) / k
    smooth = ndimage.uniform_filter(photons, size=(1, 3, 3))
    bg = np.median(photons, axis=(1, 2))  # per frame
    noise = 1.4826 * np.median(np.abs(photons - bg[:, None, None]))
    peaks = (smooth == ndimage.maximum_filter(smooth, size=(1, 7, 7))) & \
        (smooth - bg[:, None, None] > 4 * noise / 3)
    t_i, r_i, c_i = np.nonzero(peaks)
    h, w = f.shape[1:]
    ok = (r_i >= 4) & (r_i < h - 4) & (c_i >= 4) & (c_i < w - 4)
    t_i, r_i, c_i = t_i[ok], r_i[ok], c_i[ok]
    spot_photons, sigmas = [], []
    yy, xx = np.mgrid[-3:4, -3:4]
    for t, r, cc in zip(t_i, r_i, c_i):
        win = photons[t, r - 3:r + 4, cc - 3:cc + 4] - bg[t]
        total = win.sum()
        if total <= 0:
            continue
        spot_photons.append(total)
        # isolated: no other peak in the 9×9 neighbourhood
        near = (t_i == t) & (np.abs(r_i - r) <= 4) & (np.abs(c_i - cc) <= 4)
        if near.sum() == 1:
            wpos = np.clip(win, 0, None)
            s = wpos.sum()
            mx, my = (wpos * xx).sum() / s, (wpos * yy).sum() / s
            var = 0.5 * ((wpos * ((xx - mx) ** 2 + (yy - my) ** 2)).sum() / s)
            sigmas.append(np.sqrt(max(var - 1 / 12, 1e-6)))
    sp = np.array(spot_photons)
    sg = np.array(sigmas)
    return {
        "frames": int(len(f)),
        "adu_per_photon": float(k), "photon_transfer_slope": a, "baseline_adu": float(base),
        "background_photons_per_px": [float(np.percentile(bg, 5)), float(np.percentile(bg, 95))],
        "spots": int(len(sp)),
        "spot_photons": [float(np.percentile(sp, 10)), float(np.percentile(sp, 90))]
        if len(sp) else [np.nan, np.nan],
        "psf_sigma_px": float(np.median(sg)) if len(sg) else np.nan,
        "psf_sigma_nm": float(np.median(sg) * pixel_size_nm) if len(sg) and pixel_size_nm
        else np.nan,
        "spots_per_frame": float(len(sp) / len(f)),
    }


def experiment_skeleton(est: dict, height: int, width: int, pixel_size_nm: float | None,
                        camera: dict) -> str:
    """An experiment YAML to start from, filled with the measured values."""
    px = pixel_size_nm or 100.0
    sigma = est["psf_sigma_nm"] if np.isfinite(est["psf_sigma_nm"]) else 1.1 * px
    lo, hi = est["spot_photons"]
    blo, bhi = est["background_photons_per_px"]
    cam = "\n".join(f"  {k}: {v:.6g}" for k, v in camera.items())
    return f"""# measured by `deepsmlm estimate` on {est['frames']} frames — check every value
optics:
  pixel_size_nm: {px:.6g}
  psf: gaussian
  gaussian_sigma_nm: {sigma:.1f}
camera:
  preset: null
{cam}
frame:
  height_px: {height}
  width_px: {width}
emitters:
  structure: uniform
  density_per_um2: {max(0.1, est['spots_per_frame'] / (height * width * (px / 1000) ** 2)):.2f}
  photons: {{distribution: uniform, lo: {max(lo, 1):.0f}, hi: {max(hi, lo + 1):.0f}}}
background:
  kind: constant
  photons_per_px: [{max(blo, 0):.1f}, {max(bhi, blo, 0):.1f}]
"""
