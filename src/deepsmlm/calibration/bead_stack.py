"""A bead z-stack as it comes off a microscope: checks, bad pixels, beads, crops.

Everything a real stack brings is answered here, before any fit: a stack that is not 3D,
a dtype that is not a number, NaN or inf (one clear ``UserError`` each); hot pixels (bright
in nearly every plane against their 3×3 neighbourhood) and saturated pixels (at the
camera's ceiling) are excluded from the fit by a weight of 0, not repaired; a bead too close
to the edge for the crop is skipped with a reason; a stack without a bead is an error.
Arrays are numpy: (T, H, W) planes, photons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from deepsmlm.errors import UserError


@dataclass
class BadPixels:
    """Where the fit must not look: weight (T, H, W) in {0, 1}, and what was found."""

    weight: np.ndarray
    hot_px: list[tuple[int, int]] = field(default_factory=list)
    saturated_planes: list[int] = field(default_factory=list)
    n_saturated_px: int = 0


@dataclass
class Bead:
    """A bead found in the stack: its brightest-projection pixel and its crop."""

    row: int
    col: int
    score: float
    top: int = 0
    left: int = 0


def check_stack(stack: np.ndarray, name: str = "stack") -> np.ndarray:
    """The stack as float64 (T, H, W), or one UserError naming what is wrong with it."""
    arr = np.asarray(stack)
    if arr.ndim == 2:
        raise UserError(f"{name}: a single 2D image ({arr.shape[0]}×{arr.shape[1]}); PSF "
                        "calibration needs a z-stack of planes (T, H, W)")
    if arr.ndim != 3:
        raise UserError(f"{name}: expected a z-stack (planes, rows, columns), got shape "
                        f"{arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)) \
            or arr.dtype == np.bool_:
        raise UserError(f"{name}: pixel type {arr.dtype} is not a camera count (integer or "
                        "float)")
    if arr.shape[0] < 5:
        raise UserError(f"{name}: {arr.shape[0]} planes; a z-stack needs at least 5")
    if min(arr.shape[1:]) < 9:
        raise UserError(f"{name}: planes of {arr.shape[1]}×{arr.shape[2]} px are too small")
    out = arr.astype(np.float64)
    bad = ~np.isfinite(out)
    if bad.any():
        t, r, c = np.argwhere(bad)[0]
        raise UserError(f"{name}: {int(bad.sum())} NaN or inf pixel(s), the first in plane "
                        f"{t} at row {r}, column {c}")
    return out


def find_bad_pixels(stack_adu: np.ndarray, saturation_adu: float | None = None,
                    hot_fraction: float = 0.8, hot_sigma: float = 8.0) -> BadPixels:
    """Hot and saturated pixels of a (T, H, W) stack in ADU.

    Hot: brighter than its 3×3 median by ``hot_sigma`` robust standard deviations in at
    least ``hot_fraction`` of the planes (a bead's light is never that sharp in most planes).
    Saturated: at or above ``saturation_adu`` (default: the dtype's ceiling for an integer
    stack, none for a float stack) — those pixels, and their 4-neighbours (blooming), get
    weight 0 in their plane.
    """
    t = stack_adu.shape[0]
    weight = np.ones(stack_adu.shape, dtype=np.float64)
    med = ndimage.median_filter(stack_adu, size=(1, 3, 3), mode="nearest")
    resid = stack_adu - med
    mad = np.median(np.abs(resid), axis=(1, 2), keepdims=True) * 1.4826
    noise = np.maximum(mad, np.sqrt(np.maximum(med, 1.0)))
    hot_count = (resid > hot_sigma * noise).sum(axis=0)
    hot = hot_count >= hot_fraction * t
    weight[:, hot] = 0.0
    hot_px = [(int(r), int(c)) for r, c in np.argwhere(hot)]
    sat_planes: list[int] = []
    n_sat = 0
    if saturation_adu is not None:
        sat = stack_adu >= saturation_adu
        if sat.any():
            grown = ndimage.binary_dilation(sat, structure=np.array(  # in-plane cross
                [[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool))
            weight[grown] = 0.0
            n_sat = int(sat.sum())
            sat_planes = [int(i) for i in np.flatnonzero(sat.any(axis=(1, 2)))]
    return BadPixels(weight, hot_px, sat_planes, n_sat)


def default_saturation_adu(stack: np.ndarray) -> float | None:
    """The integer dtype's ceiling (a pixel there clipped), None for floats."""
    arr = np.asarray(stack)
    return float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else None


def find_beads(stack: np.ndarray, weight: np.ndarray, crop_px: int, max_beads: int = 4,
               min_snr: float = 10.0) -> tuple[list[Bead], list[str]]:
    """Beads of a (T, H, W) photon stack: maxima of the mean projection (smoothed, hot and
    saturated pixels filled by their neighbourhood), strongest first.

    A bead is kept when its smoothed peak stands ``min_snr`` robust standard deviations above
    the projection's background and its ``crop_px`` crop, slid inward by at most a quarter
    of its side, lies inside the frame and does not overlap a brighter bead's; the others
    are reported in the second list with the reason.
    Raises UserError when no bead is found.
    """
    t, h, w = stack.shape
    good = weight.mean(axis=0)
    proj = (stack * weight).sum(axis=0) / np.maximum((weight).sum(axis=0), 1.0)
    filled = np.where(good > 0, proj, ndimage.median_filter(proj, size=3, mode="nearest"))
    smooth = ndimage.gaussian_filter(filled, 2.0, mode="nearest")
    bg = np.median(smooth)
    noise = 1.4826 * np.median(np.abs(smooth - bg)) + 1e-12
    peaks = (smooth == ndimage.maximum_filter(smooth, size=max(5, crop_px // 3))) \
        & (smooth > bg + min_snr * noise)
    cand = sorted(((float(smooth[r, c] - bg) / noise, int(r), int(c))
                   for r, c in np.argwhere(peaks)), reverse=True)
    kept: list[Bead] = []
    skipped: list[str] = []
    half = crop_px // 2
    for score, r, c in cand:
        if len(kept) >= max_beads:
            break
        # a bead a little off-centre is fine: the crop slides inward by up to a quarter
        top = min(max(r - half, 0), h - crop_px)
        left = min(max(c - half, 0), w - crop_px)
        if (h < crop_px or w < crop_px or abs(top - (r - half)) > crop_px // 4
                or abs(left - (c - half)) > crop_px // 4):
            skipped.append(f"bead at row {r}, column {c}: its {crop_px}-px crop leaves the "
                           f"{h}×{w} frame (too close to the edge)")
            continue
        if any(abs(top - b.top) < crop_px and abs(left - b.left) < crop_px for b in kept):
            skipped.append(f"bead at row {r}, column {c}: overlaps a brighter bead")
            continue
        kept.append(Bead(r, c, score, top, left))
    if not kept:
        why = "; ".join(skipped) if skipped else (
            f"no spot stands {min_snr:g} noise levels above the background")
        raise UserError(f"no bead to calibrate on: {why}")
    return kept, skipped


def crop(stack: np.ndarray, bead: Bead, crop_px: int) -> np.ndarray:
    """The bead's (T, crop, crop) block."""
    return stack[:, bead.top:bead.top + crop_px, bead.left:bead.left + crop_px]
