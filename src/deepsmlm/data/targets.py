"""Spike targets on the fine grid (encode) — the inverse lives in ``postprocess.py``.

An emitter at x nm falls in fine pixel floor(x / (pixel_size/U)) (DESIGN §3 convention);
the target holds the number of emitters per fine pixel.
"""

from __future__ import annotations

import torch


def spike_image(xy_nm: torch.Tensor, frame_idx: torch.Tensor, shape: tuple[int, int, int],
                fine_pixel_nm: float) -> torch.Tensor:
    """Spikes (T, 1, Hf, Wf): +1 at each emitter's fine pixel; emitters outside are dropped."""
    t, h, w = shape
    out = torch.zeros(t * h * w, dtype=torch.float32, device=xy_nm.device)
    if len(xy_nm):
        col = torch.floor(xy_nm[:, 0] / fine_pixel_nm).long()
        row = torch.floor(xy_nm[:, 1] / fine_pixel_nm).long()
        ok = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        idx = (frame_idx.long()[ok] * h + row[ok]) * w + col[ok]
        out.index_add_(0, idx, torch.ones(len(idx), device=xy_nm.device))
    return out.view(t, 1, h, w)


def voxel_grid(xyz_nm: torch.Tensor, frame_idx: torch.Tensor, shape: tuple[int, int, int, int],
               fine_pixel_nm: float, z_range_nm: tuple[float, float]) -> torch.Tensor:
    """Occupancy (T, D, Hf, Wf): +1 in the voxel of each emitter.

    Plane k covers z ∈ [z_lo + k·Δz, z_lo + (k+1)·Δz), Δz = (z_hi − z_lo)/D; z_hi itself
    falls in the last plane. Emitters outside the grid are dropped.
    """
    t, d, h, w = shape
    z_lo, z_hi = z_range_nm
    dz = (z_hi - z_lo) / d if z_hi > z_lo else 1.0
    out = torch.zeros(t * d * h * w, dtype=torch.float32, device=xyz_nm.device)
    if len(xyz_nm):
        col = torch.floor(xyz_nm[:, 0] / fine_pixel_nm).long()
        row = torch.floor(xyz_nm[:, 1] / fine_pixel_nm).long()
        plane = torch.floor((xyz_nm[:, 2] - z_lo) / dz).long()
        plane = torch.where(xyz_nm[:, 2] == z_hi, d - 1, plane)
        ok = (col >= 0) & (col < w) & (row >= 0) & (row < h) & (plane >= 0) & (plane < d)
        idx = ((frame_idx.long()[ok] * d + plane[ok]) * h + row[ok]) * w + col[ok]
        out.index_add_(0, idx, torch.ones(len(idx), device=xyz_nm.device))
    return out.view(t, d, h, w)
