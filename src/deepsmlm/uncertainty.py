"""Reported uncertainties scaled to the errors they describe, by local emitter density,
distance to the frame edge and brightness.

A network's σ head is trained by likelihood on its own simulated frames; what it misses
(the tails of the error distribution, overlaps it cannot resolve, light cut off at the
edge) grows with density and near the edge, and its σ follow the photon count less steeply
than the errors do. After training, the errors of the validation localizations are divided
by their σ, and the standard deviation of that ratio is measured in bins of one feature at
a time, each after dividing out the factors already fitted:

1. local density (emitters per µm² in a ``DENSITY_BOX_PX`` square around the detection,
   from the network's own detection probabilities), on the detections at least ``EDGE_PX``
   from the frame edge: a straight line through the bins;
2. distance to the edge, on the detections within ``EDGE_PX`` of it (1 from there on);
3. log photons (the detection's own estimate), on all: a straight line through the bins
   (only where the photons span a factor ``MIN_PHOTON_SPAN``).

The reported σ is multiplied by the product of the terms, each interpolated linearly over
the range the validation frames covered and held beyond it, so that std(error/σ) ≈ 1
there.

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
# the photon term is fitted only where the validation photons span this factor (1st to 99th
# percentile): over a narrower range σ hardly changes, and the estimated photons of close
# pairs (biased up) make the fitted slope noise
MIN_PHOTON_SPAN = 1.5
# the features of a table, in the order they are fitted
FEATURES = ("density_per_um2", "edge_px", "log_photons")


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


def local_density_at(p: torch.Tensor, t: torch.Tensor, r: torch.Tensor, c: torch.Tensor,
                     pixel_size_nm: float, box_px: int = DENSITY_BOX_PX) -> torch.Tensor:
    """``local_density_per_um2(p, pixel_size_nm, box_px)[t, r, c]`` without the maps: the
    box sums at the K pixels asked for, from one summed-area table (float64)."""
    if box_px % 2 == 0:
        raise ValueError(f"box_px must be odd, got {box_px}")
    pad = box_px // 2
    h, w = p.shape[1:]
    table = F.pad(p.double().cumsum(1).cumsum(2), (1, 0, 1, 0))  # (T, H + 1, W + 1)
    r0, r1 = (r - pad).clamp(min=0), (r + pad + 1).clamp(max=h)
    c0, c1 = (c - pad).clamp(min=0), (c + pad + 1).clamp(max=w)
    total = table[t, r1, c1] - table[t, r0, c1] - table[t, r1, c0] + table[t, r0, c0]
    mean = total / ((r1 - r0) * (c1 - c0)).double()
    return (mean / (pixel_size_nm * 1e-3) ** 2).float()


def fit_scale_table(ratios: np.ndarray, features: dict[str, np.ndarray], bins: int = 5,
                    min_per_bin: int = MIN_PER_BIN) -> dict | None:
    """Calibration table from matched localizations: ``ratios`` (M, D) error/σ per axis
    (NaN where σ is unknown); ``features`` maps names of ``FEATURES`` to (M,) values —
    ``density_per_um2`` is required, ``edge_px`` and ``log_photons`` are used when given.

    Returns ``{"terms": [{"feature", "knots", "scale"}, …]}`` with ``scale`` per axis at
    the knots (1.0 for an axis without finite ratios): for density and photons the ends of
    the fitted line (1st and 99th percentile of the feature), for the edge the bins' median
    distances and then ``EDGE_PX``. The edge term is left out where fewer than
    ``min_per_bin`` lie near the edge, the photon term where the photons span less than
    ``MIN_PHOTON_SPAN``; None when fewer than ``min_per_bin`` localizations matched in all.

    >>> r = np.array([[1.0], [-1.0]] * 20 + [[3.0], [-3.0]] * 20)
    >>> t = fit_scale_table(r, {"density_per_um2": np.r_[np.zeros(40), np.ones(40)]})
    >>> [(u["feature"], u["knots"], np.round(u["scale"], 6).tolist()) for u in t["terms"]]
    [('density_per_um2', [0.0, 1.0], [[1.0, 3.0]])]
    """
    r = np.asarray(ratios, float)
    if len(r) < min_per_bin:
        return None
    f = {k: np.asarray(v, float) for k, v in features.items() if v is not None}
    edge = f.get("edge_px", np.full(len(r), np.inf))
    inner = edge >= EDGE_PX
    if inner.sum() < min_per_bin:  # too few away from the edges: fit density on all
        inner = np.ones(len(r), bool)
    table = {"terms": []}

    def add(name: str, rows: np.ndarray, n_bins: int, straight: bool, tail: float | None):
        x = f[name][rows]
        rest = r[rows] / scale_factors(table, {k: v[rows] for k, v in f.items()}, r.shape[1])
        knots, cols = _binned_std(rest, x, n_bins, min_per_bin)
        if straight:  # the line over the range covered (1st–99th percentile), held beyond
            ends = np.percentile(x, [1.0, 99.0]) if np.ptp(knots) > 0 else knots[:1]
            cols = [_straight(knots, c, ends) for c in cols]
            knots = ends
        if tail is not None:  # the factor returns to 1 at ``tail``
            knots, cols = np.r_[knots, tail], [np.r_[c, 1.0] for c in cols]
        table["terms"].append({"feature": name, "knots": knots.tolist(),
                               "scale": [c.tolist() for c in cols]})

    add("density_per_um2", inner, bins, True, None)
    if "edge_px" in f and (~inner).sum() >= min_per_bin:
        add("edge_px", ~inner, 4, False, EDGE_PX)
    if "log_photons" in f and \
            np.ptp(np.percentile(f["log_photons"], [1.0, 99.0])) >= np.log(MIN_PHOTON_SPAN):
        add("log_photons", np.ones(len(r), bool), 4, True, None)
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


def _straight(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The least-squares line through (``x``, ``y``) evaluated ``at`` (a bin's std
    scatters by several per cent on a few hundred localizations; the trend is what is
    kept), floored at half the smallest ``y``; ``y``'s mean where ``x`` does not vary."""
    if np.ptp(x) <= 0:
        return np.full(len(at), y.mean())
    slope, offset = np.polyfit(x, y, 1)
    return np.maximum(offset + slope * np.asarray(at, float), 0.5 * y.min())


def scale_factors(table: dict | None, features: dict[str, np.ndarray], axes: int
                  ) -> np.ndarray:
    """Factors (N, ``axes``) by which to multiply σ, for detections with ``features``
    (name → (N,)): the product of the table's terms, each interpolated linearly in its
    feature and held at its ends; a term whose feature is not given counts 1, and so does
    everything without a table."""
    n = len(next(iter(features.values())))
    out = np.ones((n, axes))
    for term in (table or {}).get("terms", []):
        x = features.get(term["feature"])
        if x is None:
            continue
        x = np.asarray(x, float).reshape(-1)
        knots = np.asarray(term["knots"], float)
        for a, col in enumerate(term["scale"][:axes]):
            out[:, a] *= np.interp(x, knots, np.asarray(col, float))
    return out
