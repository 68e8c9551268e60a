"""Detection and localization metrics over matched pairs (SMLM Challenge 2016, DESIGN §6).

    Jaccard JI = 100·TP/(TP + FP + FN)                      [%]
    RMSE_xy   = sqrt(mean(dx² + dy²)),  RMSE_z = sqrt(mean(dz²))   over matched pairs [nm]
    E         = 100 − sqrt((100 − JI)² + α²·RMSE²),  α = 1 nm⁻¹ lateral, 0.5 nm⁻¹ axial

>>> round(efficiency(80.0, 30.0, 1.0), 3)   # 100 − sqrt(20² + 30²)
63.944
"""

from __future__ import annotations

import math

import numpy as np

from deepsmlm.evaluation.matching import Matching, match

ALPHA_XY_PER_NM = 1.0
ALPHA_Z_PER_NM = 0.5
# The matches on which reported uncertainties are fitted and judged: the SMLM-Challenge
# greedy 250 nm lateral / 500 nm axial. A tighter match (DeepSTORM3D's 100 nm sphere) cuts
# the tails of the error distribution off, so σ fitted to it come out too small.
UNCERTAINTY_MATCH = {"tol_xy_nm": 250.0, "tol_z_nm": 500.0, "method": "greedy"}


def efficiency(jaccard_pct: float, rmse_nm: float, alpha_per_nm: float) -> float:
    """E = 100 − sqrt((100 − JI)² + α²·RMSE²)."""
    return 100.0 - math.sqrt((100.0 - jaccard_pct) ** 2 + (alpha_per_nm * rmse_nm) ** 2)


def _safe_div(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def counts_and_errors(tp: int, fp: int, fn: int, d: np.ndarray) -> dict:
    """Metrics from counts and the matched differences d = pred − gt (TP, 3) in nm."""
    jac = 100.0 * _safe_div(tp, tp + fp + fn) if tp + fp + fn > 0 else float("nan")
    if len(d):
        rmse_xy = float(np.sqrt(np.mean(d[:, 0] ** 2 + d[:, 1] ** 2)))
        rmse_z = float(np.sqrt(np.mean(d[:, 2] ** 2)))
        bias = d.mean(axis=0)
    else:
        rmse_xy = rmse_z = float("nan")
        bias = np.full(3, np.nan)
    out = dict(tp=tp, fp=fp, fn=fn, recall=_safe_div(tp, tp + fn),
               precision=_safe_div(tp, tp + fp), jaccard=jac,
               rmse_xy_nm=rmse_xy, rmse_z_nm=rmse_z, rmse_3d_nm=math.hypot(rmse_xy, rmse_z),
               bias_x_nm=float(bias[0]), bias_y_nm=float(bias[1]), bias_z_nm=float(bias[2]))
    ok = not (math.isnan(jac) or math.isnan(rmse_xy))
    out["efficiency_xy"] = efficiency(jac, rmse_xy, ALPHA_XY_PER_NM) if ok else float("nan")
    out["efficiency_z"] = efficiency(jac, rmse_z, ALPHA_Z_PER_NM) if ok else float("nan")
    return out


def summarize(m: Matching, gt_xyz_nm: np.ndarray, pred_xyz_nm: np.ndarray) -> dict:
    """Overall metrics of a matching."""
    d = np.asarray(pred_xyz_nm, float)[m.pred_index] - np.asarray(gt_xyz_nm, float)[m.gt_index]
    out = counts_and_errors(m.tp, m.n_pred - m.tp, m.n_gt - m.tp, d)
    out.update(n_gt=m.n_gt, n_pred=m.n_pred)
    return out


def _binned(gt_key: np.ndarray, pred_key: np.ndarray | None, edges: np.ndarray, m: Matching,
            d_all: np.ndarray) -> list[dict]:
    """Metrics per bin of a ground-truth quantity; FPs binned by ``pred_key`` when given."""
    rows = []
    tp_bin = np.digitize(gt_key[m.gt_index], edges) - 1
    fn_bin = np.digitize(gt_key[m.fn_index], edges) - 1
    fp_bin = None if pred_key is None else np.digitize(pred_key[m.fp_index], edges) - 1
    for b in range(len(edges) - 1):
        sel = tp_bin == b
        tp, fn = int(sel.sum()), int((fn_bin == b).sum())
        fp = 0 if fp_bin is None else int((fp_bin == b).sum())
        if tp + fn + fp == 0:
            continue
        r = counts_and_errors(tp, fp, fn, d_all[sel])
        if fp_bin is None:  # FPs cannot be attributed: keep recall and errors only
            for k in ("fp", "precision", "jaccard", "efficiency_xy", "efficiency_z"):
                r[k] = None
        rows.append(dict(lo=float(edges[b]), hi=float(edges[b + 1]), **r))
    return rows


def edge_distance_nm(xyz_nm: np.ndarray, field_nm: tuple[float, float]) -> np.ndarray:
    """Lateral distance of each row to the nearest edge of a (width, height) field."""
    x, y = xyz_nm[:, 0], xyz_nm[:, 1]
    w, h = field_nm
    return np.minimum(np.minimum(x, w - x), np.minimum(y, h - y))


def evaluate(gt_frame, gt_xyz_nm, pred_frame, pred_xyz_nm, *, gt_photons=None,
             tol_xy_nm: float = 250.0, tol_z_nm: float = 500.0, method: str = "greedy",
             field_nm: tuple[float, float] | None = None, border_nm: float = 0.0,
             density_edges=(0, 0.5, 1, 2, 4, 6, 8, 12, 1e9), z_step_nm: float = 250.0,
             photon_bins: int = 5, tol_3d_nm: float | None = None,
             edge_edges_nm=(0, 550, 1100, 2200, 1e9), gt_species=None, pred_species=None,
             n_species: int | None = None) -> dict:
    """Match and compute every metric: flat overall keys plus ``by_density``, ``by_z``,
    ``by_edge``, ``by_photons`` breakdowns (lists of bins). Density is ground-truth emitters
    per µm² in each frame, and ``by_edge`` bins by the distance to the nearest edge of the
    field (x, y in [0, width] × [0, height]); both need ``field_nm``.

    With ``gt_species`` and ``pred_species`` (integer indices, −1 = unknown) the multicolor
    metrics of ``species_metrics`` are added (matching itself ignores species)."""
    gt_frame, pred_frame = np.asarray(gt_frame), np.asarray(pred_frame)
    gt_xyz, pr_xyz = np.asarray(gt_xyz_nm, float), np.asarray(pred_xyz_nm, float)
    m = match(gt_frame, gt_xyz, pred_frame, pr_xyz, tol_xy_nm, tol_z_nm, method, field_nm,
              border_nm, tol_3d_nm)
    out = summarize(m, gt_xyz, pr_xyz)
    out.update(tol_xy_nm=tol_xy_nm, tol_z_nm=tol_z_nm, tol_3d_nm=tol_3d_nm, method=method,
               border_nm=border_nm)
    d_all = pr_xyz[m.pred_index] - gt_xyz[m.gt_index]
    if field_nm is not None and len(gt_frame):
        area_um2 = field_nm[0] * field_nm[1] * 1e-6
        frames = np.unique(np.r_[gt_frame, pred_frame])
        n_per = {int(t): 0 for t in frames}
        for t, c in zip(*np.unique(gt_frame[m.gt_used], return_counts=True), strict=False):
            n_per[int(t)] = int(c)
        dens = np.array([n_per[int(t)] / area_um2 for t in gt_frame])
        pdens = np.array([n_per[int(t)] / area_um2 for t in pred_frame])
        out["by_density"] = _binned(dens, pdens, np.asarray(density_edges, float), m, d_all)
        out["by_edge"] = _binned(edge_distance_nm(gt_xyz, field_nm),
                                 edge_distance_nm(pr_xyz, field_nm),
                                 np.asarray(edge_edges_nm, float), m, d_all)
    z = gt_xyz[:, 2]
    if len(z) and np.ptp(z) > 0:
        edges = np.arange(np.floor(z.min() / z_step_nm) * z_step_nm,
                          z.max() + z_step_nm, z_step_nm)
        out["by_z"] = _binned(z, pr_xyz[:, 2], edges, m, d_all)
    if gt_photons is not None and len(gt_photons) > photon_bins:
        ph = np.asarray(gt_photons, float)
        edges = np.unique(np.quantile(ph, np.linspace(0, 1, photon_bins + 1)))
        edges[-1] = np.nextafter(edges[-1], np.inf)
        out["by_photons"] = _binned(ph, None, edges, m, d_all)
    if (gt_species is None) != (pred_species is None):
        raise ValueError("species metrics need both gt_species and pred_species")
    if gt_species is not None:
        out.update(species_metrics(m, gt_xyz, pr_xyz, gt_species, pred_species, n_species))
    return out


def species_metrics(m: Matching, gt_xyz_nm: np.ndarray, pred_xyz_nm: np.ndarray,
                    gt_species, pred_species, n_species: int | None = None) -> dict:
    """Multicolor metrics of a matching (positions matched colour-blind, then species).

    ``gt_species`` (N_gt,), ``pred_species`` (N_pred,): species indices 0 … K−1, −1 =
    unknown; ``n_species`` K (default: the largest index + 1). Only emitters inside the
    evaluated region (``m.gt_used``, ``m.pred_used``) count. Returns

    - ``species_accuracy``: over matched pairs whose truth is known, the fraction whose
      predicted species equals the truth (a prediction of −1 counts as wrong); NaN without
      such pairs. ``species_pairs``: that number of pairs.
    - ``species_confusion``: K × K counts of matched pairs, rows the true species, columns
      the predicted one (pairs with −1 on either side are left out and counted in
      ``species_unknown_truth`` / ``species_unknown_pred``).
    - ``species_jaccard`` (%): the multicolor Jaccard, a localization found only when
      matched AND classified right: TP_s/(N_pred + N_gt − TP_s), TP_s = correct pairs.
    - ``by_species``: one row per species k with the metrics of ``counts_and_errors``
      (``tp, fp, fn, recall, precision, jaccard`` (%), RMSEs, biases, efficiencies) where
      an emitter of species k counts as found only if it is matched AND its prediction is
      classified k: TP_k = matched pairs with truth k and prediction k; FN_k = true
      emitters of species k − TP_k (missed, or matched but classified otherwise); FP_k =
      predictions classified k − TP_k (unmatched, or matched to an emitter of another
      species); RMSE and bias over the TP_k pairs. Also ``n_gt``, ``n_pred`` (emitters of
      species k in truth and prediction) and ``detection_recall``: the colour-blind recall
      of species k (its true emitters matched by any prediction, whatever its species).

    >>> m = Matching(np.array([0, 1]), np.array([0, 1]), np.ones(2, bool), np.ones(2, bool))
    >>> xyz = np.zeros((2, 3))
    >>> r = species_metrics(m, xyz, xyz, [0, 1], [0, 0])
    >>> r["species_accuracy"], r["species_confusion"]
    (0.5, [[1, 0], [1, 0]])
    """
    gs = np.asarray(gt_species, np.int64).reshape(-1)
    ps = np.asarray(pred_species, np.int64).reshape(-1)
    if len(gs) != len(m.gt_used) or len(ps) != len(m.pred_used):
        raise ValueError(f"species: {len(gs)} truths and {len(ps)} predictions for a "
                         f"matching of {len(m.gt_used)} and {len(m.pred_used)}")
    if (gs < -1).any() or (ps < -1).any():
        raise ValueError("species indices must be >= -1 (-1 = unknown)")
    top = max(int(gs.max(initial=-1)), int(ps.max(initial=-1))) + 1
    k_all = top if n_species is None else int(n_species)
    if k_all < top:
        raise ValueError(f"n_species {k_all} but a species index {top - 1} occurs")
    g_pair, p_pair = gs[m.gt_index], ps[m.pred_index]
    known = g_pair >= 0
    right = known & (g_pair == p_pair)
    both = known & (p_pair >= 0)
    confusion = np.zeros((k_all, k_all), np.int64)
    np.add.at(confusion, (g_pair[both], p_pair[both]), 1)
    d_all = (np.asarray(pred_xyz_nm, float)[m.pred_index]
             - np.asarray(gt_xyz_nm, float)[m.gt_index])
    g_in, p_in = gs[m.gt_used], ps[m.pred_used]
    rows = []
    for k in range(k_all):
        tp = int((right & (g_pair == k)).sum())
        n_gt, n_pred = int((g_in == k).sum()), int((p_in == k).sum())
        r = counts_and_errors(tp, n_pred - tp, n_gt - tp, d_all[right & (g_pair == k)])
        r.update(species=k, n_gt=n_gt, n_pred=n_pred,
                 detection_recall=_safe_div(int((g_pair == k).sum()), n_gt))
        rows.append(r)
    tp_s = int(right.sum())
    union = m.n_gt + m.n_pred - tp_s
    return {"species_accuracy": _safe_div(tp_s, int(known.sum())),
            "species_pairs": int(known.sum()),
            "species_confusion": confusion.tolist(),
            "species_unknown_truth": int((~known).sum()),
            "species_unknown_pred": int((known & (p_pair < 0)).sum()),
            "species_jaccard": 100.0 * _safe_div(tp_s, union),
            "n_species": k_all, "by_species": rows}


def uncertainty_calibration(errors_nm: np.ndarray, sigma_nm: np.ndarray,
                            photons: np.ndarray | None = None, quantiles: int = 4) -> dict:
    """How well predicted uncertainties describe the errors of matched localizations.

    ``errors_nm`` (M, D) estimate − truth, ``sigma_nm`` (M, D) the predicted σ of each
    estimate. For calibrated σ the normalised errors e/σ have standard deviation 1 on every
    axis. Returns ``std`` (D,) overall, ``rmse_nm`` and ``mean_sigma_nm`` (D,), and with
    ``photons`` (M,) the same ``std`` in each of ``quantiles`` photon quantiles
    (``by_photons``: list of {lo, hi, n, std}). A localization whose σ is NaN (unknown) on
    an axis is left out of that axis (``n_known`` (D,) counts the rest); an axis with no
    σ at all gives NaN.

    >>> e = np.array([[1.0, -2.0], [-1.0, 2.0]]); s = np.array([[1.0, 2.0], [1.0, 2.0]])
    >>> uncertainty_calibration(e, s)["std"].tolist()
    [1.0, 1.0]
    """
    e, s = np.asarray(errors_nm, float), np.asarray(sigma_nm, float)
    z = e / s
    known = np.isfinite(z)

    def std(rows):
        n = known[rows].sum(0)
        dev = np.where(known[rows], z[rows], 0.0)
        mean = dev.sum(0) / np.maximum(n, 1)
        var = (np.where(known[rows], dev - mean, 0.0) ** 2).sum(0) / np.maximum(n, 1)
        return np.where(n > 0, np.sqrt(var), np.nan)

    every = np.ones(len(e), bool)
    n_known = known.sum(0)
    mean_sigma = np.where(known, s, 0.0).sum(0) / np.maximum(n_known, 1)
    out = {"n": len(e), "n_known": n_known, "std": std(every),
           "rmse_nm": np.sqrt(np.mean(e ** 2, axis=0)),
           "mean_sigma_nm": np.where(n_known > 0, mean_sigma, np.nan)}
    if photons is not None and len(e):
        edges = np.quantile(photons, np.linspace(0, 1, quantiles + 1))
        bins = []
        for i in range(quantiles):
            lo, hi = edges[i], edges[i + 1]
            rows = (photons >= lo) & ((photons < hi) if i < quantiles - 1 else (photons <= hi))
            bins.append({"lo": float(lo), "hi": float(hi), "n": int(rows.sum()),
                         "std": std(rows)})
        out["by_photons"] = bins
    return out
