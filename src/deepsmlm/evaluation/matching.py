"""Match predicted localizations to the ground truth, frame by frame.

Two methods (DESIGN §6):
- ``greedy``: the SMLM Challenge 2016 protocol. All candidate pairs within the lateral
  tolerance (and the axial one) are taken nearest-first by lateral distance; a pair is
  accepted when neither member is matched yet. Ties are broken by axial distance, then by
  ground-truth index, then by prediction index, so the result is deterministic.
- ``hungarian``: the one-to-one assignment minimising the summed lateral distance among
  pairs within the tolerances (scipy's ``linear_sum_assignment``), as DeepSTORM3D reports
  with a 100 nm radius.

An optional border band excludes ground truth and predictions near the frame edges before
matching. Inputs are arrays: frame (N,) int, xyz (N, 3) nm.

Greedy matching runs on all frames at once: the candidate pairs come from
``neighbours.pairs_within`` (one pass over every frame), and the pairs are taken in rounds:
a pair is accepted when it comes first among the remaining pairs of both its members, which
is what taking them one by one in order accepts (every pair that goes before it and shares
a member has been decided by then). Hungarian matching solves each connected group of
candidate pairs on its own, which gives each frame its optimum.

>>> import numpy as np
>>> gt = np.array([[100., 100., 0.], [400., 100., 0.]]); f = np.array([0, 0])
>>> pr = np.array([[130., 100., 0.], [900., 900., 0.]])
>>> m = match(f, gt, f, pr)
>>> m.gt_index.tolist(), m.pred_index.tolist(), m.n_gt, m.n_pred
([0], [0], 2, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepsmlm.neighbours import pairs_within


@dataclass(frozen=True)
class Matching:
    """Matched pairs (indices into the original arrays) and what took part in matching."""

    gt_index: np.ndarray  # (TP,)
    pred_index: np.ndarray  # (TP,)
    gt_used: np.ndarray  # (N_gt,) bool: inside the evaluated region
    pred_used: np.ndarray  # (N_pred,) bool

    @property
    def n_gt(self) -> int:
        return int(self.gt_used.sum())

    @property
    def n_pred(self) -> int:
        return int(self.pred_used.sum())

    @property
    def tp(self) -> int:
        return len(self.gt_index)

    @property
    def fn_index(self) -> np.ndarray:
        mask = self.gt_used.copy()
        mask[self.gt_index] = False
        return np.nonzero(mask)[0]

    @property
    def fp_index(self) -> np.ndarray:
        mask = self.pred_used.copy()
        mask[self.pred_index] = False
        return np.nonzero(mask)[0]


def inside_border(xyz_nm: np.ndarray, field_nm: tuple[float, float], border_nm: float
                  ) -> np.ndarray:
    """True where x ∈ [b, W − b] and y ∈ [b, H − b]."""
    w, h = field_nm
    x, y = xyz_nm[:, 0], xyz_nm[:, 1]
    return (x >= border_nm) & (x <= w - border_nm) & (y >= border_nm) & (y <= h - border_nm)


def _pairs(gt: np.ndarray, pr: np.ndarray, tol_xy: float, tol_z: float,
           tol_3d: float | None = None):
    """Distances (lateral, axial) and the admissible pairs; with ``tol_3d`` the "lateral"
    distance returned is the 3D one (the ranking and cost of a spherical tolerance)."""
    d_xy = np.hypot(gt[:, None, 0] - pr[None, :, 0], gt[:, None, 1] - pr[None, :, 1])
    d_z = np.abs(gt[:, None, 2] - pr[None, :, 2])
    ok = (d_xy <= tol_xy) & (d_z <= tol_z)
    if tol_3d is not None:
        d_xy = np.hypot(d_xy, d_z)
        ok &= d_xy <= tol_3d
    return d_xy, d_z, ok


def _greedy_rounds(gi: np.ndarray, pi: np.ndarray, n_gt: int, n_pred: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one choice among pairs (gi[k], pi[k]) already in order of preference:
    the pairs that one-by-one acceptance in that order keeps, found in vectorised rounds."""
    g_done = np.zeros(n_gt, bool)
    p_done = np.zeros(n_pred, bool)
    alive = np.arange(len(gi))
    out = []
    while len(alive):
        g, p = gi[alive], pi[alive]
        first_g = np.zeros(len(alive), bool)
        first_g[np.unique(g, return_index=True)[1]] = True
        first_p = np.zeros(len(alive), bool)
        first_p[np.unique(p, return_index=True)[1]] = True
        take = alive[first_g & first_p]  # never empty: the first alive pair qualifies
        out.append(take)
        g_done[gi[take]] = True
        p_done[pi[take]] = True
        alive = alive[~(g_done[g] | p_done[p])]
    k = np.concatenate(out) if out else np.zeros(0, np.int64)
    return gi[k].astype(np.int64), pi[k].astype(np.int64)


def _greedy(gt, pr, tol_xy, tol_z, tol_3d=None):
    """Greedy matching of one frame, for an infinite lateral tolerance (which has no grid
    of cells); ``_ordered_pairs`` finds the pairs of every frame at once otherwise."""
    d_xy, d_z, ok = _pairs(gt, pr, tol_xy, tol_z, tol_3d)
    gi, pi = np.nonzero(ok)
    order = np.lexsort((pi, gi, d_z[gi, pi], d_xy[gi, pi]))
    return _greedy_rounds(gi[order], pi[order], len(gt), len(pr))


def _candidate_pairs(gt_frame, gt_xyz, pr_frame, pr_xyz, tol_xy, tol_z, tol_3d=None):
    """All admissible (ground truth, prediction) pairs of the same frame, with their
    lateral (or, with ``tol_3d``, 3D) and axial distances, computed as ``_pairs`` does."""
    gi, pi, d_xy = pairs_within(gt_frame, gt_xyz[:, :2], pr_frame, pr_xyz[:, :2], tol_xy)
    d_z = np.abs(gt_xyz[gi, 2] - pr_xyz[pi, 2])
    ok = d_z <= tol_z
    if tol_3d is not None:
        d_xy = np.hypot(d_xy, d_z)
        ok &= d_xy <= tol_3d
    return gi[ok], pi[ok], d_xy[ok], d_z[ok]


def _ordered_pairs(gt_frame, gt_xyz, pr_frame, pr_xyz, tol_xy, tol_z, tol_3d=None):
    """The admissible pairs of every frame (indices into the arrays given) and their
    distance, in the greedy order: nearest first, ties by axial distance, then
    ground-truth, then prediction index.
    Pairs of different frames share no member, so one global order gives each frame the
    result of its own."""
    gi, pi, d_xy, d_z = _candidate_pairs(gt_frame, gt_xyz, pr_frame, pr_xyz, tol_xy, tol_z,
                                         tol_3d)
    order = np.lexsort((pi, gi, d_z, d_xy))
    return gi[order], pi[order], d_xy[order]


def _hungarian(gt, pr, tol_xy, tol_z, tol_3d=None):
    from scipy.optimize import linear_sum_assignment

    d_xy, _, ok = _pairs(gt, pr, tol_xy, tol_z, tol_3d)
    rows = np.nonzero(ok.any(1))[0]
    cols = np.nonzero(ok.any(0))[0]
    if len(rows) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sub_ok = ok[np.ix_(rows, cols)]
    big = 1e6 * (tol_xy + 1.0)
    cost = np.where(sub_ok, d_xy[np.ix_(rows, cols)], big)
    r, c = linear_sum_assignment(cost)
    keep = sub_ok[r, c]
    return rows[r[keep]].astype(np.int64), cols[c[keep]].astype(np.int64)


def _hungarian_components(gi: np.ndarray, pi: np.ndarray, cost: np.ndarray, n_gt: int,
                          n_pred: int) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching over the admissible pairs (gi[k], pi[k]) of every frame at once:
    the most pairs, and among those the least summed ``cost``. The pairs fall apart into
    connected groups (no two frames share one); a group of one pair is matched as it is,
    and each larger group is solved on its own (scipy's ``linear_sum_assignment``) — the
    optimum of a frame is the union of its groups' optima."""
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(gi) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    n = n_gt + n_pred
    graph = coo_matrix((np.ones(len(gi)), (gi, n_gt + pi)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    group = label[gi]
    size = np.bincount(group, minlength=label.max() + 1)
    alone = size[group] == 1  # a group of one pair: its two ends have no other partner
    out_g, out_p = [gi[alone]], [pi[alone]]
    crowded = np.nonzero(~alone)[0]
    order = crowded[np.argsort(group[crowded], kind="stable")]
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    big = 1e6 * (float(cost.max()) + 1.0)  # an inadmissible pair is never worth taking
    for part in np.split(order, bounds) if len(order) else []:
        rows, r_idx = np.unique(gi[part], return_inverse=True)
        cols, c_idx = np.unique(pi[part], return_inverse=True)
        m = np.full((len(rows), len(cols)), big)
        m[r_idx, c_idx] = cost[part]
        ok = np.zeros(m.shape, bool)
        ok[r_idx, c_idx] = True
        r, c = linear_sum_assignment(m)
        keep = ok[r, c]
        out_g.append(rows[r[keep]])
        out_p.append(cols[c[keep]])
    return (np.concatenate(out_g).astype(np.int64), np.concatenate(out_p).astype(np.int64))


def _frame_groups(frame: np.ndarray) -> tuple[np.ndarray, dict[int, slice]]:
    """Indices sorted by frame, and the slice of that order holding each frame."""
    order = np.argsort(frame, kind="stable")
    frames, start = np.unique(frame[order], return_index=True)
    stop = np.r_[start[1:], len(order)]
    return order, {int(t): slice(int(a), int(b)) for t, a, b in zip(frames, start, stop)}


def match(gt_frame: np.ndarray, gt_xyz_nm: np.ndarray, pred_frame: np.ndarray,
          pred_xyz_nm: np.ndarray, tol_xy_nm: float = 250.0, tol_z_nm: float = 500.0,
          method: str = "greedy", field_nm: tuple[float, float] | None = None,
          border_nm: float = 0.0, tol_3d_nm: float | None = None) -> Matching:
    """Match predictions to ground truth per frame (see the module docstring).

    ``tol_3d_nm`` adds a spherical tolerance (3D distance, also used to rank and assign),
    as DeepSTORM3D reports with 100 nm.
    """
    gt_frame, gt_xyz, gt_used, pred_frame, pr_xyz, pr_used = _inputs(
        gt_frame, gt_xyz_nm, pred_frame, pred_xyz_nm, method, field_nm, border_nm)
    if np.isfinite(tol_xy_nm):
        pairs = _pairs_of_all_frames(gt_frame, gt_xyz, gt_used, pred_frame, pr_xyz, pr_used,
                                     method, tol_xy_nm, tol_z_nm, tol_3d_nm)
        return _matching(*_solve(method, *pairs, len(gt_xyz), len(pr_xyz)), gt_used, pr_used)
    solver = _greedy if method == "greedy" else _hungarian
    out_g, out_p = [], []
    g_sorted, g_bounds = _frame_groups(gt_frame)
    p_sorted, p_bounds = _frame_groups(pred_frame)
    for t in set(g_bounds) & set(p_bounds):
        gi = g_sorted[g_bounds[t]]
        pi = p_sorted[p_bounds[t]]
        gi, pi = gi[gt_used[gi]], pi[pr_used[pi]]
        if len(gi) == 0 or len(pi) == 0:
            continue
        a, b = solver(gt_xyz[gi], pr_xyz[pi], tol_xy_nm, tol_z_nm, tol_3d_nm)
        out_g.append(gi[a])
        out_p.append(pi[b])
    g = np.concatenate(out_g) if out_g else np.zeros(0, np.int64)
    p = np.concatenate(out_p) if out_p else np.zeros(0, np.int64)
    return _matching(g, p, gt_used, pr_used)


def match_at_thresholds(gt_frame, gt_xyz_nm, pred_frame, pred_xyz_nm, pred_score,
                        thresholds, tol_xy_nm: float = 250.0, tol_z_nm: float = 500.0,
                        method: str = "greedy", field_nm: tuple[float, float] | None = None,
                        border_nm: float = 0.0, tol_3d_nm: float | None = None
                        ) -> list[Matching]:
    """``match`` of the predictions with ``pred_score > t``, for every t of ``thresholds``
    (indices into the full arrays; the predictions at or below t are not used).

    Greedy: the candidate pairs are found and ordered once, and each threshold only drops
    the pairs of the predictions it removes — the same matchings as calling ``match`` on
    each subset (tested), at a fraction of the cost when a threshold is tuned."""
    gt_frame, gt_xyz, gt_used, pred_frame, pr_xyz, pr_used = _inputs(
        gt_frame, gt_xyz_nm, pred_frame, pred_xyz_nm, method, field_nm, border_nm)
    score = np.asarray(pred_score)  # compared with each threshold in its own dtype
    if len(score) != len(pr_xyz):
        raise ValueError(f"pred_score has {len(score)} values for {len(pr_xyz)} predictions")
    out = []
    if np.isfinite(tol_xy_nm):
        gi, pi, cost = _pairs_of_all_frames(gt_frame, gt_xyz, gt_used, pred_frame, pr_xyz,
                                            pr_used, method, tol_xy_nm, tol_z_nm, tol_3d_nm)
        for t in thresholds:
            keep = score[pi] > t
            out.append(_matching(*_solve(method, gi[keep], pi[keep], cost[keep], len(gt_xyz),
                                         len(pr_xyz)), gt_used, pr_used & (score > t)))
        return out
    for t in thresholds:
        keep = np.nonzero(score > t)[0]
        m = match(gt_frame, gt_xyz, pred_frame[keep], pr_xyz[keep], tol_xy_nm, tol_z_nm,
                  method, field_nm, border_nm, tol_3d_nm)
        used = np.zeros(len(pr_xyz), bool)
        used[keep] = m.pred_used
        out.append(Matching(m.gt_index, keep[m.pred_index], m.gt_used, used))
    return out


def _pairs_of_all_frames(gt_frame, gt_xyz, gt_used, pred_frame, pr_xyz, pr_used, method,
                         tol_xy, tol_z, tol_3d):
    """The admissible pairs among the used points of every frame (indices into the full
    arrays) and their cost — in the greedy order for ``greedy``."""
    gi, pi = np.nonzero(gt_used)[0], np.nonzero(pr_used)[0]
    if method == "greedy":
        a, b, cost = _ordered_pairs(gt_frame[gi], gt_xyz[gi], pred_frame[pi], pr_xyz[pi],
                                    tol_xy, tol_z, tol_3d)
    else:
        a, b, cost, _ = _candidate_pairs(gt_frame[gi], gt_xyz[gi], pred_frame[pi],
                                         pr_xyz[pi], tol_xy, tol_z, tol_3d)
    return gi[a], pi[b], cost


def _solve(method, gi, pi, cost, n_gt, n_pred):
    if method == "greedy":
        return _greedy_rounds(gi, pi, n_gt, n_pred)
    return _hungarian_components(gi, pi, cost, n_gt, n_pred)


def _inputs(gt_frame, gt_xyz_nm, pred_frame, pred_xyz_nm, method, field_nm, border_nm):
    """Arrays, and which of them the border lets take part."""
    if method not in ("greedy", "hungarian"):
        raise ValueError(f"method must be 'greedy' or 'hungarian', got {method!r}")
    gt_frame, pred_frame = np.asarray(gt_frame), np.asarray(pred_frame)
    gt_xyz, pr_xyz = np.asarray(gt_xyz_nm, float), np.asarray(pred_xyz_nm, float)
    gt_used = np.ones(len(gt_xyz), bool)
    pr_used = np.ones(len(pr_xyz), bool)
    if border_nm > 0:
        if field_nm is None:
            raise ValueError("border exclusion needs field_nm = (width, height)")
        gt_used &= inside_border(gt_xyz, field_nm, border_nm)
        pr_used &= inside_border(pr_xyz, field_nm, border_nm)
    return gt_frame, gt_xyz, gt_used, pred_frame, pr_xyz, pr_used


def _matching(g, p, gt_used, pr_used) -> Matching:
    order = np.argsort(g, kind="stable")
    return Matching(g[order], p[order], gt_used, pr_used)
