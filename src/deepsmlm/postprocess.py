"""Network output → localizations: threshold, local maxima, centre of gravity.

For a super-resolved image (T, 1, H, W) on fine pixels of ``fine_pixel_nm``: a pixel is a
detection when it exceeds ``threshold`` and is the maximum of its 3×3 neighbourhood;
its position is the centre of gravity of the (non-negative) 3×3 window around it, in nm
with the pixel-centre convention of DESIGN §3. The window sum divided by the target
scale is the detection's "confidence" (≈ 1 for one emitter).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepsmlm.emitters import EmitterSet


def local_maxima(img: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices (K, 4) [t, c, row, col] of 3×3 local maxima above ``threshold``.

    Plateaus give one maximum: a pixel must be strictly greater than its neighbours that
    come before it in raster order and at least equal to those after it.
    """
    h, w = img.shape[-2:]
    pad = F.pad(img, (1, 1, 1, 1), value=float("-inf"))
    keep = img > threshold
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == 0 and dc == 0:
                continue
            nb = pad[..., 1 + dr:1 + dr + h, 1 + dc:1 + dc + w]
            before = dr < 0 or (dr == 0 and dc < 0)
            keep &= (img > nb) if before else (img >= nb)
    return keep.nonzero()


def decode(img: torch.Tensor, fine_pixel_nm: float, threshold: float, scale: float = 1.0,
           frame_offset: int = 0, return_peaks: bool = False):
    """Localizations from SR images (T, 1, H, W). ``photons`` holds the confidence.

    With ``return_peaks`` also the peak value of each detection (to re-threshold cheaply:
    the maxima do not depend on the threshold)."""
    img = img.detach()
    idx = local_maxima(img, threshold)
    if len(idx) == 0:
        return (EmitterSet.empty(), torch.zeros(0)) if return_peaks else EmitterSet.empty()
    pos = img.clamp_min(0.0)
    padded = F.pad(pos, (1, 1, 1, 1))
    t, r, c = idx[:, 0], idx[:, 2], idx[:, 3]
    d = torch.arange(-1, 2, device=img.device)
    rows = (r[:, None] + 1 + d)[:, :, None]  # (K, 3, 1) in padded coordinates
    cols = (c[:, None] + 1 + d)[:, None, :]  # (K, 1, 3)
    win = padded[t[:, None, None], 0, rows, cols]  # (K, 3, 3)
    total = win.sum(dim=(1, 2)).clamp_min(1e-12)
    dy = (win.sum(2) * d).sum(1) / total
    dx = (win.sum(1) * d).sum(1) / total
    x = (c.float() + 0.5 + dx) * fine_pixel_nm
    y = (r.float() + 0.5 + dy) * fine_pixel_nm
    xyz = torch.stack([x, y, torch.zeros_like(x)], dim=1).cpu()
    em = EmitterSet(xyz, (total / scale).cpu(), (t + frame_offset).cpu())
    return (em, img[t, 0, r, c].cpu()) if return_peaks else em


def local_maxima_3d(vol: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices (K, 4) [t, plane, row, col] of 3×3×3 local maxima above ``threshold``
    (plateau-safe like ``local_maxima``)."""
    d, h, w = vol.shape[-3:]
    pad = F.pad(vol, (1, 1, 1, 1, 1, 1), value=float("-inf"))
    keep = vol > threshold
    for dz in (-1, 0, 1):
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                if dz == dr == dc == 0:
                    continue
                nb = pad[..., 1 + dz:1 + dz + d, 1 + dr:1 + dr + h, 1 + dc:1 + dc + w]
                before = (dz, dr, dc) < (0, 0, 0)
                keep &= (vol > nb) if before else (vol >= nb)
    return keep.nonzero()


def decode_3d(vol: torch.Tensor, fine_pixel_nm: float, z_range_nm: tuple[float, float],
              threshold: float, scale: float = 1.0, frame_offset: int = 0,
              return_peaks: bool = False, score: str = "peak"):
    """Localizations (x, y, z) from occupancy volumes (T, D, H, W): 3D NMS, then the centre
    of gravity of the 3×3×3 neighbourhood; plane k is centred at z_lo + (k + ½)·Δz.

    ``score``: what ``threshold`` (and ``return_peaks``) applies to — ``peak``, the value of
    the maximum voxel (for one-voxel targets), or ``mass``, the sum of its 3×3×3 window
    (for trilinear targets, whose peak varies from ⅛ to 1 of the emitter's mass with its
    sub-voxel position while the window sum does not)."""
    if score not in ("peak", "mass"):
        raise ValueError(f"score must be 'peak' or 'mass', got {score!r}")
    vol = vol.detach()
    # a window sum above the threshold needs a voxel above threshold/27
    idx = local_maxima_3d(vol, threshold if score == "peak" else threshold / 27.0)
    if len(idx) == 0:
        return (EmitterSet.empty(), torch.zeros(0)) if return_peaks else EmitterSet.empty()
    d_planes = vol.shape[1]
    z_lo, z_hi = z_range_nm
    dz_nm = (z_hi - z_lo) / d_planes if z_hi > z_lo else 1.0
    padded = F.pad(vol.clamp_min(0.0), (1, 1, 1, 1, 1, 1))
    t, p, r, c = idx.unbind(1)
    o = torch.arange(-1, 2, device=vol.device)
    win = padded[t[:, None, None, None], (p[:, None] + 1 + o)[:, :, None, None],
                 (r[:, None] + 1 + o)[:, None, :, None], (c[:, None] + 1 + o)[:, None, None, :]]
    total = win.sum(dim=(1, 2, 3)).clamp_min(1e-12)
    if score == "mass":
        keep = total > threshold
        t, p, r, c, win, total = t[keep], p[keep], r[keep], c[keep], win[keep], total[keep]
    op = (win.sum(dim=(2, 3)) * o).sum(1) / total
    orow = (win.sum(dim=(1, 3)) * o).sum(1) / total
    ocol = (win.sum(dim=(1, 2)) * o).sum(1) / total
    x = (c.float() + 0.5 + ocol) * fine_pixel_nm
    y = (r.float() + 0.5 + orow) * fine_pixel_nm
    z = z_lo + (p.float() + 0.5 + op) * dz_nm
    em = EmitterSet(torch.stack([x, y, z], 1).cpu(), (total / scale).cpu(),
                    (t + frame_offset).cpu())
    if not return_peaks:
        return em
    return em, (vol[t, p, r, c] if score == "peak" else total).cpu()


def pixel_detections(p: torch.Tensor, threshold: float, certain: float = 0.6
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Detections in per-pixel probability maps ``p`` (T, H, W) at camera resolution.

    One emitter's probability often spreads over two or three pixels, so a pixel is a
    candidate when it is the maximum of its 3×3 neighbourhood, and its score is the
    probability summed over that neighbourhood (at most 1); a pixel with p ≥ ``certain`` is
    a detection in any case (two bright emitters in adjacent pixels), scored by its own p.
    Returns indices (K, 3) [t, row, col] of candidates with score > ``threshold``, and their
    scores (K,).
    """
    t, h, w = p.shape
    box = F.avg_pool2d(p[:, None], 3, stride=1, padding=1, count_include_pad=True)[:, 0] * 9
    maxima = torch.zeros_like(p, dtype=torch.bool)
    idx = local_maxima(p[:, None], -1.0)
    maxima[idx[:, 0], idx[:, 2], idx[:, 3]] = True
    score = torch.where(maxima, box.clamp(max=1.0), torch.where(p >= certain, p, 0.0))
    keep = (score > threshold).nonzero()
    return keep, score[keep[:, 0], keep[:, 1], keep[:, 2]]


def claim_mass(p: torch.Tensor, frame: torch.Tensor, row: torch.Tensor, col: torch.Tensor,
               score: torch.Tensor, radius_px: int) -> torch.Tensor:
    """Scores (K,) of detections at pixels (``frame``, ``row``, ``col``) of the probability
    maps ``p`` (T, H, W) after probability-mass accounting.

    A network trained with a count term (fastloc's loss) makes the probability summed over
    a region the expected number of emitters in it, so the probability of one wide
    (defocused) spot spread over two maxima holds one emitter, not two. In each frame, in
    order of ``score``, a detection's score becomes at most the probability left in the
    (2r + 1)² pixels around it, and it takes one emitter's worth of what is left there (all
    of it when less is left). An isolated detection keeps its score (its window holds at
    least its 3×3 score); the second maximum of one spot is left with little, while two
    emitters side by side leave enough for the second. The result does not depend on a
    threshold, so thresholds can be tried by filtering the scores.

    Only a stronger detection whose window overlaps a detection's window changes what it
    finds, so the detections are processed in levels (a detection's level is one more than
    the highest of the stronger ones overlapping it): the windows of one level are disjoint,
    and each level is one vectorised step over all frames — the same result as one
    detection at a time."""
    out = score.detach().to(torch.float64).clone()
    n = len(out)
    if n == 0:
        return out.to(score.dtype)
    k, m = int(radius_px), 2 * int(radius_px)
    frame, row, col = frame.long(), row.long(), col.long()
    t_n, h, w = p.shape
    # strength: position in a stable sort by score, strongest first (ties: the earlier)
    pos = torch.empty(n, dtype=torch.long)
    pos[torch.argsort(out, descending=True, stable=True)] = torch.arange(n)
    # pairs (stronger, weaker) whose windows overlap: at most 2k pixels apart in row and col
    # (flat indices into a map of detection numbers, padded by 2k)
    label = torch.full((t_n * (h + 2 * m) * (w + 2 * m),), -1, dtype=torch.long)
    at = (frame * (h + 2 * m) + row + m) * (w + 2 * m) + col + m
    label[at] = torch.arange(n)
    mine, theirs = [], []
    for dr in range(0, m + 1):  # half of the offsets: each pair once
        for dc in range(-m if dr else 1, m + 1):
            nb = label[at + dr * (w + 2 * m) + dc]
            hit = torch.nonzero(nb >= 0).flatten()
            mine.append(hit)
            theirs.append(nb[hit])
    a, b = torch.cat(mine), torch.cat(theirs)
    a_first = pos[a] < pos[b]
    src, dst = torch.where(a_first, a, b), torch.where(a_first, b, a)
    level = torch.zeros(n, dtype=torch.long)
    while len(src):  # the longest chain of stronger, overlapping neighbours
        new = level.scatter_reduce(0, dst, level[src] + 1, reduce="amax")
        if torch.equal(new, level):
            break
        level = new
    # each window's pixels as flat indices into the probability, padded by k
    left = F.pad(p.detach().to(torch.float64), (k, k, k, k)).reshape(-1)
    span = torch.arange(2 * k + 1)
    offsets = (span[:, None] * (w + 2 * k) + span[None, :]).reshape(-1)
    corner = (frame * (h + 2 * k) + row) * (w + 2 * k) + col  # window's first pixel
    for lv in range(int(level.max()) + 1):
        sel = torch.nonzero(level == lv).flatten()
        pix = corner[sel][:, None] + offsets
        win = left[pix]
        mass = win.sum(1)
        out[sel] = torch.minimum(out[sel], mass)
        left[pix] = win * (1.0 - 1.0 / mass.clamp_min(1e-12)).clamp_min(0.0)[:, None]
    return out.to(score.dtype)


def suppress_close(frame: torch.Tensor, xy: torch.Tensor, score: torch.Tensor,
                   radius: float) -> torch.Tensor:
    """Keep mask (K,) of detections after neighbour-aware suppression: in each frame, a
    detection whose position ``xy`` (K, 2) lies within ``radius`` (same units) of one
    with a higher ``score`` is dropped (the same emitter found twice).

    Taken in order of score (ties: the earlier first), a detection is kept unless a kept
    one lies closer than ``radius``. All frames are decided together, in rounds: a
    detection is kept once every stronger neighbour is dropped, and dropped once a
    stronger neighbour is kept — the result of going through them one by one (tested)."""
    import numpy as np

    from deepsmlm.neighbours import pairs_within

    n = len(score)
    if n == 0:
        return torch.ones(0, dtype=torch.bool)
    rank = np.empty(n, np.int64)
    rank[torch.argsort(score.cpu(), descending=True, stable=True).numpy()] = np.arange(n)
    f = frame.cpu().numpy()
    i, j, d = pairs_within(f, xy.detach().cpu().double().numpy(), f,
                           xy.detach().cpu().double().numpy(), float(radius))
    hi, lo = i[(d < radius) & (rank[i] < rank[j])], j[(d < radius) & (rank[i] < rank[j])]
    undecided, kept, dropped = 0, 1, 2
    state = np.zeros(n, np.int8)
    while (state == undecided).any():
        blocked = np.bincount(lo[state[hi] != dropped], minlength=n) > 0
        state[(state == undecided) & ~blocked] = kept
        beaten = lo[state[hi] == kept]
        state[beaten[state[beaten] == undecided]] = dropped
    return torch.from_numpy(state == kept)
