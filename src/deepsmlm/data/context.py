"""Temporal context: each frame given to the network together with its neighbours.

A fluorophore that is on in one frame is often on in the next (it stays on a geometric
number of frames, mean ``emitters.blinking.mean_on_frames``), and noise is independent from
frame to frame: the neighbours tell a dim emitter from a noise peak. With ``k`` context
frames on each side the network reads ``2k + 1`` channels, the frame in the middle
(``windows``); training simulates the same windows (``window_emitters``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from deepsmlm.emitters import EmitterSet


def windows(frames: torch.Tensor, k: int, before: torch.Tensor | None = None,
            after: torch.Tensor | None = None) -> torch.Tensor:
    """(T, H, W) frames → (T, 2k + 1, H, W): frame t with frames t − k … t + k, in time order.

    ``before`` / ``after``: the frames just before / after the block (at most k each, e.g.
    from the neighbouring chunk of a streamed movie). Where there are fewer than k (the
    movie's ends), the first / last frame available is repeated."""
    if k == 0:
        return frames[:, None]
    parts = [frames[:0] if before is None else before[-k:], frames,
             frames[:0] if after is None else after[:k]]
    lead, trail = len(parts[0]), len(parts[2])
    ext = torch.cat(parts)
    ext = torch.cat([ext[:1].expand(k - lead, *ext.shape[1:]), ext,
                     ext[-1:].expand(k - trail, *ext.shape[1:])])
    return ext.unfold(0, 2 * k + 1, 1).permute(0, 3, 1, 2)[: len(frames)]


def stay_probability(mean_on_frames: float | None) -> float:
    """Probability that an emitter on in a frame is on in the next: 1 − 1/mean_on_frames
    (geometric on-times, ``simulation.emission.BlinkingStream``); 0.5 when the experiment
    states no blinking."""
    return 0.5 if mean_on_frames is None else 1.0 - 1.0 / float(mean_on_frames)


def window_emitters(draw: Callable[[int, torch.Generator], EmitterSet], n: int, k: int,
                    p_stay: float, generator: torch.Generator) -> tuple[EmitterSet, torch.Tensor]:
    """The emitters of n windows of 2k + 1 frames (frame index ``w·(2k + 1) + j``, the
    centre at j = k) and a mask of those in the centre frames.

    The centre frames' emitters are ``draw(n)``. Going out from the centre, each emitter on
    at offset d − 1 is on at offset d with probability ``p_stay`` (same position and
    photons), and emitters that switch on are ``draw(n)`` thinned by 1 − p_stay, so each
    frame of a window has about the density of the centre frame (when ``draw`` picks a
    random density per frame, a neighbour's mixes the centre's and that of a new draw)."""
    f = 2 * k + 1
    centre = draw(n, generator)
    parts = [(centre, k)]
    for side in (-1, 1):
        on = centre
        for d in range(1, k + 1):
            keep = torch.rand(len(on), generator=generator) < p_stay
            fresh = draw(n, generator)
            fresh = fresh.subset(torch.rand(len(fresh), generator=generator) >= p_stay)
            on = EmitterSet.cat([on.subset(keep), fresh])
            parts.append((on, k + side * d))
    out, is_centre = [], []
    for em, j in parts:
        em = em.subset(torch.ones(len(em), dtype=torch.bool))  # a copy
        em.frame = em.frame * f + j
        out.append(em)
        is_centre.append(torch.full((len(em),), j == k))
    return EmitterSet.cat(out), torch.cat(is_centre)


def stack_windows(frames: np.ndarray, index: np.ndarray, k: int,
                  region: tuple[slice, slice] = (slice(None), slice(None))) -> np.ndarray:
    """Windows of a stack (T, H, W) at the frames ``index``: (N, 2k + 1, h, w) of the
    ``region`` (rows, columns; the whole frame by default), the stack's end frames repeated
    where the window runs past them. Only the region is read."""
    t = np.clip(np.asarray(index)[:, None] + np.arange(-k, k + 1)[None], 0, len(frames) - 1)
    return np.stack([frames[(row, *region)] for row in t])
