"""Pairs of points of the same frame within a distance, for every frame at once.

Matching to the truth (``evaluation.matching``) and the suppression of duplicate
detections (``postprocess.suppress_close``) both need, in each frame, the pairs of points
closer than a radius. Finding them frame by frame in Python costs more than everything
else they do on thousands of small frames, so this finds them in one vectorised pass: the
points are put in square cells as wide as the radius, keyed by (frame, row, column), and a
point's partners lie in its own cell or one of the eight around it.

>>> import numpy as np
>>> f = np.array([0, 0, 1]); xy = np.array([[0., 0.], [3., 4.], [0., 0.]])
>>> a, b, d = pairs_within(f, xy, f, xy, 5.0)
>>> sorted(zip(a.tolist(), b.tolist(), d.tolist()))
[(0, 0, 0.0), (0, 1, 5.0), (1, 0, 5.0), (1, 1, 0.0), (2, 2, 0.0)]
"""

from __future__ import annotations

import numpy as np


def pairs_within(frame_a: np.ndarray, xy_a: np.ndarray, frame_b: np.ndarray,
                 xy_b: np.ndarray, radius: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i, j) of a point i of ``a`` and a point j of ``b`` in the same frame with
    distance ≤ ``radius`` (the ends included), and that distance (``np.hypot`` of the
    differences, exactly as a loop over the pairs computes it). A point with a non-finite
    coordinate is in no pair. ``radius`` must be finite and ≥ 0."""
    if not (np.isfinite(radius) and radius >= 0):
        raise ValueError(f"radius must be finite and ≥ 0, got {radius}")
    frame_a, frame_b = np.asarray(frame_a), np.asarray(frame_b)
    xy_a, xy_b = np.asarray(xy_a, float), np.asarray(xy_b, float)
    a_ok = np.nonzero(np.isfinite(xy_a).all(1))[0]
    b_ok = np.nonzero(np.isfinite(xy_b).all(1))[0]
    if len(a_ok) == 0 or len(b_ok) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    lo = np.minimum(xy_a[a_ok].min(0), xy_b[b_ok].min(0))
    hi = np.maximum(xy_a[a_ok].max(0), xy_b[b_ok].max(0))
    # cells no narrower than the radius (so the 3×3 around a point hold its partners) and
    # at most 2¹⁶ to a side, so that the keys fit in 64 bits
    cell = max(float(radius), float((hi - lo).max()) / 2**16, 1e-12)
    # (column, row) of each point's cell, from 1 so that every neighbouring cell is ≥ 0
    c_a = np.floor((xy_a[a_ok] - lo) / cell).astype(np.int64) + 1
    c_b = np.floor((xy_b[b_ok] - lo) / cell).astype(np.int64) + 1
    n_x, n_y = (np.maximum(c_a.max(0), c_b.max(0)) + 2).tolist()
    # frames numbered 0, 1, … in the order of their numbers
    _, f = np.unique(np.concatenate([frame_a[a_ok], frame_b[b_ok]]), return_inverse=True)
    f_a, f_b = f[:len(a_ok)].astype(np.int64), f[len(a_ok):].astype(np.int64)

    def key(frame, c):
        return (frame * n_y + c[:, 1]) * n_x + c[:, 0]

    k_b = key(f_b, c_b)
    order_b = np.argsort(k_b, kind="stable")
    k_b = k_b[order_b]
    ia, ib = [], []
    for dy in (-1, 0, 1):  # the three cells of a row have consecutive keys
        k = key(f_a, c_a + np.array([0, dy]))
        start = np.searchsorted(k_b, k - 1, "left")
        count = np.searchsorted(k_b, k + 1, "right") - start
        where = np.repeat(start - np.cumsum(count) + count, count) + np.arange(count.sum())
        ia.append(np.repeat(a_ok, count))
        ib.append(b_ok[order_b[where]])
    ia, ib = np.concatenate(ia), np.concatenate(ib)
    d = np.hypot(xy_a[ia, 0] - xy_b[ib, 0], xy_a[ia, 1] - xy_b[ib, 1])
    ok = d <= radius
    return ia[ok], ib[ok], d[ok]
