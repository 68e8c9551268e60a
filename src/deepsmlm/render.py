"""Super-resolution images from localizations: histograms and Gaussian renderings.

Positions follow DESIGN §3 (nm, origin at the top-left corner); the rendered image has
pixels of ``pixel_nm`` covering [0, width_nm) × [0, height_nm). Localizations outside are
dropped (histogram) or contribute only their part inside (Gaussian).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from deepsmlm.optics.psf import integrated_gaussian_patches, place_patches
from deepsmlm.plotting import SPECIES_COLOURS  # one colour per species (Okabe–Ito)


def image_shape(field_nm: tuple[float, float], pixel_nm: float) -> tuple[int, int]:
    """(rows, cols) of a rendering of a (width, height) field."""
    w, h = field_nm
    return int(math.ceil(h / pixel_nm - 1e-9)), int(math.ceil(w / pixel_nm - 1e-9))


def render_histogram(xy_nm: np.ndarray, pixel_nm: float, field_nm: tuple[float, float],
                     weights: np.ndarray | None = None) -> np.ndarray:
    """Counts (or summed weights) of localizations per pixel, float32 (rows, cols)."""
    rows, cols = image_shape(field_nm, pixel_nm)
    xy = np.asarray(xy_nm, float).reshape(-1, 2)
    img, _, _ = np.histogram2d(xy[:, 1], xy[:, 0], bins=(rows, cols),
                               range=((0, rows * pixel_nm), (0, cols * pixel_nm)),
                               weights=weights)
    return img.astype(np.float32)


def render_gaussian(xy_nm: np.ndarray, pixel_nm: float, field_nm: tuple[float, float],
                    sigma_nm: float | np.ndarray, weights: np.ndarray | None = None,
                    max_sigma_px: float = 25.0, chunk: int = 200_000) -> np.ndarray:
    """Sum of pixel-integrated Gaussians, one per localization, each of total weight 1 (or
    ``weights``). float32 (rows, cols).

    ``sigma_nm``: a scalar or (N,) (isotropic, fixed or per localization, e.g. its
    precision), or (N, 2) σx, σy per localization (an axis-aligned anisotropic Gaussian).
    """
    rows, cols = image_shape(field_nm, pixel_nm)
    xy = torch.as_tensor(np.asarray(xy_nm, np.float64).reshape(-1, 2))
    n = len(xy)
    s = np.asarray(sigma_nm, np.float64)
    if s.ndim == 2:
        if s.shape != (n, 2):
            raise ValueError(f"sigma_nm must be a scalar, (N,) or (N, 2) with N = {n}, "
                             f"got {s.shape}")
        sx, sy = s[:, 0], s[:, 1]
    else:
        sx = sy = np.broadcast_to(s, (n,))
    if not (np.isfinite(sx).all() and np.isfinite(sy).all()):
        raise ValueError("sigma_nm holds NaN or inf")
    lo, hi = 1e-3 * pixel_nm, max_sigma_px * pixel_nm
    sigma_x = torch.as_tensor(sx.copy()).clamp(lo, hi)
    sigma_y = torch.as_tensor(sy.copy()).clamp(lo, hi)
    w = torch.ones(n, dtype=torch.float64) if weights is None else torch.as_tensor(
        np.asarray(weights, np.float64))
    out = torch.zeros(1, rows, cols, dtype=torch.float64)
    if n == 0:
        return out[0].float().numpy()
    smax = max(float(sigma_x.max()), float(sigma_y.max()))
    patch = 2 * int(math.ceil(4 * smax / pixel_nm)) + 1
    for i in range(0, n, chunk):
        vals, origin = integrated_gaussian_patches(xy[i:i + chunk], sigma_x[i:i + chunk],
                                                   sigma_y[i:i + chunk], w[i:i + chunk],
                                                   pixel_nm, patch)
        out += place_patches(vals, origin, torch.zeros(len(vals), dtype=torch.long),
                             (1, rows, cols))
    return out[0].float().numpy()


def render_species(xy_nm: np.ndarray, species: np.ndarray, n_species: int, pixel_nm: float,
                   field_nm: tuple[float, float], sigma_nm: float | np.ndarray | None = None
                   ) -> np.ndarray:
    """One rendering per species: (K, rows, cols) float32, plane k from the localizations
    whose ``species`` is k (−1, unknown, is in none). ``sigma_nm`` None: histograms
    (``render_histogram``); else Gaussians (``render_gaussian``: a scalar, (N,) or (N, 2)
    per localization)."""
    xy = np.asarray(xy_nm, float).reshape(-1, 2)
    species = np.asarray(species).reshape(-1)
    if len(species) != len(xy):
        raise ValueError(f"species must be (N,) with N = {len(xy)}, got {species.shape}")
    s = None if sigma_nm is None else np.asarray(sigma_nm, np.float64)
    planes = []
    for k in range(int(n_species)):
        sel = species == k
        if s is None:
            planes.append(render_histogram(xy[sel], pixel_nm, field_nm))
        else:
            planes.append(render_gaussian(xy[sel], pixel_nm, field_nm,
                                          s if s.ndim == 0 else s[sel]))
    if not planes:
        return np.zeros((0, *image_shape(field_nm, pixel_nm)), np.float32)
    return np.stack(planes).astype(np.float32)


def species_rgb(planes: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """Per-species images (K ≤ 8, rows, cols) → an RGB image (rows, cols, 3), float32 in
    [0, 1]: each plane normalised to its own ``percentile`` of its non-zero pixels (so a
    sparse species is as visible as a dense one) and clipped to 1, times its colour
    (``SPECIES_COLOURS[k]``), summed (additive compositing), clipped to 1."""
    planes = np.asarray(planes, np.float32)
    if planes.ndim != 3:
        raise ValueError(f"planes must be (K, rows, cols), got {planes.shape}")
    if len(planes) > len(SPECIES_COLOURS):
        raise ValueError(f"at most {len(SPECIES_COLOURS)} species have a colour, got "
                         f"{len(planes)}")
    rgb = np.zeros((*planes.shape[1:], 3), np.float32)
    for plane, colour in zip(planes, SPECIES_COLOURS):
        pos = plane[plane > 0]
        if not pos.size:
            continue
        top = float(np.percentile(pos, percentile))
        rgb += np.clip(plane / top, 0, 1)[..., None] * colour
    return np.clip(rgb, 0, 1)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images on the same grid."""
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape} vs {b.shape}")
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")
