"""Reported uncertainties scaled to the errors they describe, as a function of the local
emitter density.

A network's σ head is trained by likelihood on its own simulated frames; what it misses
(the tails of the error distribution, overlaps it cannot resolve) grows with density. After
training, the errors of the validation localizations are divided by their σ, and the
standard deviation of that ratio is measured in bins of local density (emitters per µm² in a
``DENSITY_BOX_PX`` square around each detection, from the network's own detection
probabilities), away from the frame edges, and in bins of distance to the edge near them.
The reported σ is then multiplied by those tables, interpolated, so that std(error/σ) ≈ 1
at every density the validation frames covered (the ends hold beyond them) and up to the
edge.

Pure functions; ``methods.fastloc`` applies them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# side of the square [camera px] over which local density is averaged (about 3.6 µm at
# 110 nm pixels: a Tetrapod's footprint, several standard PSFs)
DENSITY_BOX_PX = 33
# a bin of the calibration table needs this many matched localizations
MIN_PER_BIN = 40
# detections closer than this to the frame edge [camera px] get an edge factor (training
# patches are small: 44 % of a 64-px patch lies within 8 px of its edge)
EDGE_PX = 8.0


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


def fit_scale_table(ratios: np.ndarray, density: np.ndarray, edge_px: np.ndarray | None = None,
                    bins: int = 5, min_per_bin: int = MIN_PER_BIN) -> dict | None:
    """Calibration table from matched localizations: ``ratios`` (M, D) error/σ per axis
    (NaN where σ is unknown), ``density`` (M,) their local density [emitters/µm²],
    ``edge_px`` (M,) their distance to the nearest frame edge [px].

    Density: the localizations at least ``EDGE_PX`` from an edge are split into up to
    ``bins`` density quantiles of at least ``min_per_bin`` each; the table holds each bin's
    median density and, per axis, the standard deviation of the ratios in each bin (1.0 for
    an axis without finite ratios) smoothed by a straight line in density.

    Edge: the light of an emitter near the edge falls partly off the chip, and its errors
    grow beyond what its σ says. The ratios of the localizations within ``EDGE_PX`` of an
    edge, divided by the density factor, are binned by distance the same way; their stds
    are ``edge_scale`` at ``edge_px`` knots, followed by 1.0 at ``EDGE_PX`` (no edge table
    with fewer than ``min_per_bin`` of them).

    None when fewer than ``min_per_bin`` localizations matched.

    >>> r = np.array([[1.0], [-1.0]] * 20 + [[3.0], [-3.0]] * 20)
    >>> t = fit_scale_table(r, np.r_[np.zeros(40), np.ones(40)], min_per_bin=40)
    >>> t["density_per_um2"], np.round(t["scale"], 6).tolist()
    ([0.0, 1.0], [[1.0, 3.0]])
    """
    r, d = np.asarray(ratios, float), np.asarray(density, float)
    if len(r) < min_per_bin:
        return None
    e = np.full(len(r), np.inf) if edge_px is None else np.asarray(edge_px, float)
    inner = e >= EDGE_PX
    if inner.sum() < min_per_bin:  # too few away from the edges: fit density on all
        inner = np.ones(len(r), bool)
    knots, scale = _binned_std(r[inner], d[inner], bins, min_per_bin)
    table = {"density_per_um2": knots.tolist(),
             "scale": [_straight(knots, col).tolist() for col in scale]}
    near = ~inner
    if near.sum() >= min_per_bin:
        rest = r[near] / scale_factors(table, d[near], r.shape[1])
        e_knots, e_scale = _binned_std(rest, e[near], 4, min_per_bin)
        table["edge_px"] = [*e_knots.tolist(), float(EDGE_PX)]
        table["edge_scale"] = [[*col.tolist(), 1.0] for col in e_scale]
    return table


def _binned_std(r: np.ndarray, x: np.ndarray, bins: int, min_per_bin: int
                ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Up to ``bins`` quantile bins of ``x`` (≥ ``min_per_bin`` each, at least one): their
    median ``x`` and, per column of ``r``, the std of its finite values (1.0 if none)."""
    n_bins = int(max(1, min(bins, len(r) // min_per_bin)))
    groups = np.array_split(np.argsort(x, kind="stable"), n_bins)
    knots = np.array([np.median(x[g]) for g in groups])
    cols = []
    for a in range(r.shape[1]):
        std = np.ones(n_bins)
        for i, g in enumerate(groups):
            v = r[g, a][np.isfinite(r[g, a])]
            if len(v) >= 2 and np.std(v) > 0:
                std[i] = np.std(v)
        cols.append(std)
    return knots, cols


def _straight(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``y`` replaced by its least-squares line in ``x`` (a bin's std scatters by several
    per cent on a few hundred localizations; the trend with density is what is kept),
    floored at half the smallest ``y``; ``y``'s mean where ``x`` does not vary."""
    if np.ptp(x) <= 0:
        return np.full_like(y, y.mean())
    slope, offset = np.polyfit(x, y, 1)
    return np.maximum(offset + slope * x, 0.5 * y.min())


def scale_factors(table: dict | None, density: np.ndarray | torch.Tensor, axes: int,
                  edge_px: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """Factors (N, ``axes``) by which to multiply σ at local ``density`` (N,) and distance
    to the frame edge ``edge_px`` (N,): each table interpolated linearly, held at its ends
    (the edge factor is 1 from ``EDGE_PX`` on); ones without a table."""
    d = np.asarray(density, float).reshape(-1)
    out = np.ones((len(d), axes))
    if table is None:
        return out
    knots = np.asarray(table["density_per_um2"], float)
    for a, col in enumerate(table["scale"][:axes]):
        out[:, a] = np.interp(d, knots, np.asarray(col, float))
    if edge_px is not None and "edge_px" in table:
        e = np.asarray(edge_px, float).reshape(-1)
        e_knots = np.asarray(table["edge_px"], float)
        for a, col in enumerate(table["edge_scale"][:axes]):
            out[:, a] *= np.interp(e, e_knots, np.asarray(col, float))
    return out
