"""Fourier ring correlation (FRC) resolution of a localization data set.

Nieuwenhuizen et al., Nat. Methods 10, 557 (2013): split the localizations into two halves
by blocks of frames (so blinks of one fluorophore mostly stay together), render both as
histograms on a fine grid, and correlate their Fourier transforms ring by ring:

    FRC(q) = Σ_ring Re(F₁·F₂*) / sqrt(Σ_ring |F₁|² · Σ_ring |F₂|²)

The resolution is 1/q at the first crossing of the 1/7 threshold (curve lightly smoothed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepsmlm.render import render_histogram

THRESHOLD = 1.0 / 7.0


@dataclass
class FRCResult:
    q_per_nm: np.ndarray  # ring centres, cycles/nm
    frc: np.ndarray  # smoothed curve
    frc_raw: np.ndarray
    resolution_nm: float  # NaN when the curve never crosses the threshold


def frc_curve(img1: np.ndarray, img2: np.ndarray, pixel_nm: float, smooth_rings: int = 5
              ) -> FRCResult:
    """FRC of two images of the same square-padded field (Tukey-windowed edges)."""
    if img1.shape != img2.shape:
        raise ValueError("the two halves must be rendered on the same grid")
    n = max(img1.shape)
    win = _tukey2d(img1.shape)
    pad = [(0, n - img1.shape[0]), (0, n - img1.shape[1])]
    f1 = np.fft.fftshift(np.fft.fft2(np.pad(img1 * win, pad)))
    f2 = np.fft.fftshift(np.fft.fft2(np.pad(img2 * win, pad)))
    yy, xx = np.indices((n, n)) - n // 2
    ring = np.hypot(xx, yy).round().astype(int).ravel()
    n_rings = n // 2
    keep = ring < n_rings
    ring = ring[keep]
    num = np.bincount(ring, (f1 * f2.conj()).real.ravel()[keep], n_rings)
    p1 = np.bincount(ring, (np.abs(f1) ** 2).ravel()[keep], n_rings)
    p2 = np.bincount(ring, (np.abs(f2) ** 2).ravel()[keep], n_rings)
    raw = num / np.sqrt(np.maximum(p1 * p2, 1e-30))
    q = np.arange(n_rings) / (n * pixel_nm)
    k = max(1, smooth_rings)
    smooth = np.convolve(np.pad(raw, (k // 2, k - 1 - k // 2), mode="edge"),
                         np.ones(k) / k, mode="valid")
    below = np.nonzero((smooth[1:] < THRESHOLD) & (q[1:] > 0))[0]
    if len(below) == 0:
        return FRCResult(q, smooth, raw, float("nan"))
    i = below[0] + 1  # first ring under the threshold; interpolate from the one before
    q0, q1, s0, s1 = q[i - 1], q[i], smooth[i - 1], smooth[i]
    q_cross = q0 + (s0 - THRESHOLD) * (q1 - q0) / (s0 - s1) if s0 != s1 else q1
    return FRCResult(q, smooth, raw, float(1.0 / q_cross) if q_cross > 0 else float("nan"))


def frc_resolution(xy_nm: np.ndarray, frame: np.ndarray, pixel_nm: float = 5.0,
                   field_nm: tuple[float, float] | None = None, block_frames: int | None = None,
                   smooth_rings: int = 5) -> FRCResult:
    """FRC resolution of localizations (x, y in nm, 0-based frames).

    The halves are alternate blocks of ``block_frames`` frames (default: 1/20 of the frames,
    at least 1). ``field_nm`` defaults to the localizations' extent.
    """
    xy = np.asarray(xy_nm, float).reshape(-1, 2)
    frame = np.asarray(frame)
    if len(xy) < 10:
        raise ValueError(f"FRC needs localizations; got {len(xy)}")
    if field_nm is None:
        field_nm = (float(xy[:, 0].max()) + pixel_nm, float(xy[:, 1].max()) + pixel_nm)
    n_frames = int(frame.max()) + 1
    block = block_frames or max(1, n_frames // 20)
    half = (frame // block) % 2 == 0
    a = render_histogram(xy[half], pixel_nm, field_nm)
    b = render_histogram(xy[~half], pixel_nm, field_nm)
    return frc_curve(a, b, pixel_nm, smooth_rings)


def _tukey2d(shape: tuple[int, int], alpha: float = 0.125) -> np.ndarray:
    from scipy.signal.windows import tukey

    return np.outer(tukey(shape[0], alpha), tukey(shape[1], alpha))
