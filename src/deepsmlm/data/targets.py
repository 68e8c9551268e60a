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
               fine_pixel_nm: float, z_range_nm: tuple[float, float],
               trilinear: bool = False) -> torch.Tensor:
    """Occupancy (T, D, Hf, Wf) of emitters; emitters outside the grid are dropped.

    Plane k covers z ∈ [z_lo + k·Δz, z_lo + (k+1)·Δz), Δz = (z_hi − z_lo)/D; z_hi itself
    falls in the last plane. ``trilinear=False``: +1 in the voxel of each emitter (the
    published target: positions quantised to the voxel). ``trilinear=True``: the emitter's
    unit mass is shared between the 8 voxel centres around it with trilinear weights, so
    the centre of gravity of its 2×2×2 neighbourhood is its exact position (the sub-voxel
    part survives the encoding); mass that would fall beyond the edge of the grid stays in
    the edge voxel.
    """
    t, d, h, w = shape
    z_lo, z_hi = z_range_nm
    dz = (z_hi - z_lo) / d if z_hi > z_lo else 1.0
    out = torch.zeros(t * d * h * w, dtype=torch.float32, device=xyz_nm.device)
    if not len(xyz_nm):
        return out.view(t, d, h, w)
    u = torch.stack([(xyz_nm[:, 2] - z_lo) / dz, xyz_nm[:, 1] / fine_pixel_nm,
                     xyz_nm[:, 0] / fine_pixel_nm], 1)  # (N, 3) plane, row, col in voxels
    size = torch.tensor([d, h, w], device=xyz_nm.device)
    cell = torch.floor(u).long()
    cell[:, 0] = torch.where(xyz_nm[:, 2] == z_hi, d - 1, cell[:, 0])
    ok = ((cell >= 0) & (cell < size)).all(1)
    frame = frame_idx.long()[ok]
    if not trilinear:
        p, r, c = cell[ok].unbind(1)
        out.index_add_(0, ((frame * d + p) * h + r) * w + c,
                       torch.ones(len(frame), device=xyz_nm.device))
        return out.view(t, d, h, w)
    centred = u[ok] - 0.5  # in units where voxel centres are integers
    lo = torch.floor(centred)
    frac = centred - lo
    lo = lo.long()
    for corner in range(8):
        bits = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1],
                            device=xyz_nm.device)
        weight = torch.where(bits.bool(), frac, 1.0 - frac).prod(1)
        p, r, c = torch.minimum(torch.clamp_min(lo + bits, 0), size - 1).unbind(1)
        out.index_add_(0, ((frame * d + p) * h + r) * w + c, weight)
    return out.view(t, d, h, w)
