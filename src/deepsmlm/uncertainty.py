"""Reported uncertainties scaled to the errors they describe, as a function of the local
emitter density.

A network's σ head is trained by likelihood on its own simulated frames; what it misses
(the tails of the error distribution, overlaps it cannot resolve) grows with density. After
training, the errors of the validation localizations are divided by their σ, and the
standard deviation of that ratio is measured in bins of local density (emitters per µm² in a
``DENSITY_BOX_PX`` square around each detection, from the network's own detection
probabilities). The reported σ is then multiplied by that table, interpolated, so that
std(error/σ) ≈ 1 at every density the validation frames covered (the ends hold beyond them).

Pure functions; ``methods.fastloc`` applies them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# side of the square [camera px] over which local density is averaged (about 3.6 µm at
# 110 nm pixels: a Tetrapod's footprint, several standard PSFs)
DENSITY_BOX_PX = 33
# a density bin of the calibration table needs this many matched localizations
MIN_PER_BIN = 40


def local_density_per_um2(p: torch.Tensor, pixel_size_nm: float,
                          box_px: int = DENSITY_BOX_PX) -> torch.Tensor:
    """Expected emitters per µm² around each pixel of detection-probability maps ``p``
    (T, H, W): the mean of ``p`` over a ``box_px`` square (the part inside the frame at its
    edges) divided by the pixel area.

    >>> p = torch.zeros(1, 5, 5); p[0, 2, 2] = 1.0
    >>> round(float(local_density_per_um2(p, 1000.0, box_px=5)[0, 2, 2]), 6)  # 1 in 25 µm²
    0.04
    """
    if box_px % 2 == 0:
        raise ValueError(f"box_px must be odd, got {box_px}")
    pad = box_px // 2
    x = p[:, None].float()
    # a box mean with the padding left out of the count is separable into two 1-D means
    x = F.avg_pool2d(x, (1, box_px), stride=1, padding=(0, pad), count_include_pad=False)
    x = F.avg_pool2d(x, (box_px, 1), stride=1, padding=(pad, 0), count_include_pad=False)
    return x[:, 0] / (pixel_size_nm * 1e-3) ** 2


def fit_scale_table(ratios: np.ndarray, density: np.ndarray, bins: int = 5,
                    min_per_bin: int = MIN_PER_BIN) -> dict | None:
    """Calibration table from matched localizations: ``ratios`` (M, D) error/σ per axis
    (NaN where σ is unknown), ``density`` (M,) their local density [emitters/µm²].

    The localizations are split into up to ``bins`` density quantiles of at least
    ``min_per_bin`` each; the table holds each bin's median density and, per axis, the
    standard deviation of the ratios in each bin (1.0 for an axis without finite ratios)
    smoothed by a straight line in density. None when fewer than ``min_per_bin``
    localizations matched.

    >>> r = np.array([[1.0], [-1.0]] * 20 + [[3.0], [-3.0]] * 20)
    >>> t = fit_scale_table(r, np.r_[np.zeros(40), np.ones(40)], min_per_bin=40)
    >>> t["density_per_um2"], np.round(t["scale"], 6).tolist()
    ([0.0, 1.0], [[1.0, 3.0]])
    """
    r, d = np.asarray(ratios, float), np.asarray(density, float)
    if len(r) < min_per_bin:
        return None
    n_bins = int(max(1, min(bins, len(r) // min_per_bin)))
    groups = np.array_split(np.argsort(d, kind="stable"), n_bins)
    knots = np.array([np.median(d[g]) for g in groups])
    scale = []
    for a in range(r.shape[1]):
        std = np.ones(n_bins)
        for i, g in enumerate(groups):
            v = r[g, a][np.isfinite(r[g, a])]
            if len(v) >= 2 and np.std(v) > 0:
                std[i] = np.std(v)
        scale.append(_straight(knots, std).tolist())
    return {"density_per_um2": knots.tolist(), "scale": scale}


def _straight(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``y`` replaced by its least-squares line in ``x`` (a bin's std scatters by several
    per cent on a few hundred localizations; the trend with density is what is kept),
    floored at half the smallest ``y``; ``y``'s mean where ``x`` does not vary."""
    if np.ptp(x) <= 0:
        return np.full_like(y, y.mean())
    slope, offset = np.polyfit(x, y, 1)
    return np.maximum(offset + slope * x, 0.5 * y.min())


def scale_factors(table: dict | None, density: np.ndarray | torch.Tensor,
                  axes: int) -> np.ndarray:
    """Factors (N, ``axes``) by which to multiply σ at local ``density`` (N,): the table
    interpolated linearly in density, held at its ends; ones without a table."""
    d = np.asarray(density, float).reshape(-1)
    out = np.ones((len(d), axes))
    if table is None:
        return out
    knots = np.asarray(table["density_per_um2"], float)
    for a, col in enumerate(table["scale"][:axes]):
        out[:, a] = np.interp(d, knots, np.asarray(col, float))
    return out
