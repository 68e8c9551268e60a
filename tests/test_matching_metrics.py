"""Matching and metrics on cases worked by hand."""

import math

import numpy as np
import pytest

from deepsmlm.evaluation.matching import match, match_at_thresholds
from deepsmlm.evaluation.metrics import efficiency, evaluate


def arr(*rows):
    return np.array(rows, dtype=float).reshape(-1, 3)


def test_nearest_first_not_first_come():
    # gt A at 0, gt B at 200; pred P at 150 is nearer B (50) than A (150); pred Q at 40
    gt = arr([0, 0, 0], [200, 0, 0])
    pr = arr([150, 0, 0], [40, 0, 0])
    m = match([0, 0], gt, [0, 0], pr)
    assert dict(zip(m.gt_index.tolist(), m.pred_index.tolist())) == {0: 1, 1: 0}


def test_greedy_versus_hungarian():
    # greedy takes the closest pair (B–P, 10 nm) and leaves A unmatched (A–P only);
    # Hungarian finds two matches: A–P and B–Q.
    gt = arr([0, 0, 0], [100, 0, 0])
    pr = arr([90, 0, 0], [300, 0, 0])
    g = match([0, 0], gt, [0, 0], pr, tol_xy_nm=220)
    h = match([0, 0], gt, [0, 0], pr, tol_xy_nm=220, method="hungarian")
    assert g.tp == 1 and g.gt_index.tolist() == [1]
    assert h.tp == 2 and dict(zip(h.gt_index.tolist(), h.pred_index.tolist())) == {0: 0, 1: 1}


def test_one_to_one_and_ties():
    gt = arr([0, 0, 0])
    pr = arr([50, 0, 0], [-50, 0, 0], [0, 50, 0])  # three at the same distance
    m = match([0], gt, [0, 0, 0], pr)
    assert m.tp == 1 and m.pred_index.tolist() == [0]  # tie → lowest index
    assert sorted(m.fp_index.tolist()) == [1, 2] and m.fn_index.tolist() == []


def test_tolerance_edges_are_inclusive_and_axial_counts():
    gt = arr([0, 0, 0], [1000, 0, 0], [2000, 0, 0])
    pr = arr([250, 0, 0], [1000 + 250.001, 0, 0], [2000, 0, 501])
    m = match([0, 0, 0], gt, [0, 0, 0], pr)
    assert m.gt_index.tolist() == [0]  # exactly 250 nm matches; 250.001 and dz 501 do not


def test_frames_are_separate_and_empty_frames_work():
    gt = arr([0, 0, 0], [0, 0, 0])
    pr = arr([10, 0, 0])
    m = match([0, 1], gt, [1], pr)
    assert m.gt_index.tolist() == [1]
    empty = match(np.zeros(0), np.zeros((0, 3)), [0], pr)
    assert empty.tp == 0 and empty.fp_index.tolist() == [0]
    none = match([0], gt[:1], np.zeros(0), np.zeros((0, 3)))
    assert none.fn_index.tolist() == [0]


def test_border_exclusion():
    gt = arr([50, 500, 0], [500, 500, 0])
    pr = arr([60, 500, 0], [520, 500, 0], [990, 990, 0])
    m = match([0, 0], gt, [0, 0, 0], pr, field_nm=(1000, 1000), border_nm=100)
    assert m.n_gt == 1 and m.n_pred == 1 and m.tp == 1


def test_metrics_by_hand():
    # 3 gt, 3 pred: two matches with errors (30, 40, 0) and (0, 0, 100); one FP; one FN
    gt = arr([0, 0, 0], [1000, 0, 0], [5000, 5000, 0])
    pr = arr([30, 40, 0], [1000, 0, 100], [3000, 3000, 0])
    r = evaluate([0, 0, 0], gt, [0, 0, 0], pr)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 1, 1)
    assert r["jaccard"] == pytest.approx(50.0)
    assert r["rmse_xy_nm"] == pytest.approx(math.sqrt((50 ** 2 + 0) / 2))
    assert r["rmse_z_nm"] == pytest.approx(math.sqrt(100 ** 2 / 2))
    assert (r["bias_x_nm"], r["bias_y_nm"], r["bias_z_nm"]) == pytest.approx((15, 20, 50))
    assert r["recall"] == pytest.approx(2 / 3) and r["precision"] == pytest.approx(2 / 3)
    assert r["efficiency_xy"] == pytest.approx(100 - math.hypot(50, r["rmse_xy_nm"]))
    assert r["efficiency_z"] == pytest.approx(100 - math.hypot(50, 0.5 * r["rmse_z_nm"]))


def test_efficiency_formula():
    assert efficiency(100.0, 0.0, 1.0) == 100.0
    assert efficiency(70.0, 40.0, 1.0) == pytest.approx(50.0)  # 100 − sqrt(30² + 40²)
    assert efficiency(70.0, 80.0, 0.5) == pytest.approx(50.0)


def test_breakdown_by_density_and_z():
    # frame 0: 1 emitter in a 1 µm² field; frame 1: 3 emitters, one missed
    gt = arr([100, 100, -200], [100, 100, 0], [500, 500, 300], [900, 900, 300])
    pr = arr([100, 100, -200], [100, 100, 0], [500, 500, 300])
    r = evaluate([0, 1, 1, 1], gt, [0, 1, 1], pr, field_nm=(1000, 1000), density_edges=(0, 2, 5),
                 z_step_nm=250)
    dens = {(b["lo"], b["hi"]): b for b in r["by_density"]}
    assert dens[(0, 2)]["jaccard"] == pytest.approx(100.0)
    assert dens[(2, 5)]["jaccard"] == pytest.approx(200 / 3)
    z = r["by_z"]
    assert sum(b["tp"] + b["fn"] for b in z) == 4 and z[-1]["fn"] == 1


def test_breakdown_by_distance_to_the_field_edge():
    # 1 µm field: an emitter 50 nm from the left edge (missed, and a false positive 30 nm
    # from the bottom edge instead), one 300 nm from the top edge (found), one at the centre
    gt = arr([50, 500, 0], [500, 700, 0], [500, 500, 0])
    pr = arr([400, 30, 0], [510, 700, 0], [500, 490, 0])
    r = evaluate([0, 0, 0], gt, [0, 0, 0], pr, field_nm=(1000, 1000),
                 edge_edges_nm=(0, 100, 400, 1e9))
    edge = {(b["lo"], b["hi"]): b for b in r["by_edge"]}
    assert (edge[(0, 100)]["tp"], edge[(0, 100)]["fn"], edge[(0, 100)]["fp"]) == (0, 1, 1)
    assert (edge[(100, 400)]["tp"], edge[(100, 400)]["fn"]) == (1, 0)
    assert edge[(100, 400)]["rmse_xy_nm"] == pytest.approx(10.0)
    assert edge[(400, 1e9)]["recall"] == 1.0 and edge[(400, 1e9)]["precision"] == 1.0


def test_spherical_tolerance():
    gt = arr([0, 0, 0])
    pr = arr([80, 0, 80])  # 80 nm laterally and axially: 113 nm in 3D
    assert match([0], gt, [0], pr, tol_xy_nm=100, tol_z_nm=100).tp == 1
    assert match([0], gt, [0], pr, tol_xy_nm=100, tol_z_nm=100, tol_3d_nm=100).tp == 0
    two = arr([0, 0, 90], [60, 0, 0])  # laterally the first is nearer; in 3D the second
    m = match([0], gt, [0, 0], two, tol_xy_nm=100, tol_z_nm=100, tol_3d_nm=100)
    assert m.pred_index.tolist() == [1]


# ---------------------------------------------------------------- multicolor (issue 14)
def test_species_metrics_by_hand_one_misclassified():
    # truths A (species 0), B (0), C (1); predictions near each, B's classified 1.
    # A: error (30, 0), B: (10, 0), C: (0, 40).
    gt = arr([100, 100, 0], [1000, 100, 0], [2000, 100, 0])
    pr = arr([130, 100, 0], [1010, 100, 0], [2000, 140, 0])
    r = evaluate([0, 0, 0], gt, [0, 0, 0], pr, gt_species=[0, 0, 1], pred_species=[0, 1, 1])
    assert r["tp"] == 3 and r["jaccard"] == pytest.approx(100.0)  # colour-blind: all found
    assert r["species_accuracy"] == pytest.approx(2 / 3)
    assert r["species_confusion"] == [[1, 1], [0, 1]]  # rows truth, columns predicted
    # found = matched AND classified right: 2 of 3 truths, 2 of 3 predictions
    assert r["species_jaccard"] == pytest.approx(100 * 2 / (3 + 3 - 2))
    s0, s1 = r["by_species"]
    # species 0: TP A; FN B (matched but called 1); no prediction of 0 is wrong → FP 0
    assert (s0["tp"], s0["fp"], s0["fn"]) == (1, 0, 1)
    assert s0["jaccard"] == pytest.approx(50.0)
    assert (s0["recall"], s0["precision"]) == pytest.approx((0.5, 1.0))
    assert s0["rmse_xy_nm"] == pytest.approx(30.0)  # only A: B is not a TP of species 0
    assert s0["detection_recall"] == pytest.approx(1.0)  # colour-blind: A and B matched
    # species 1: TP C; FP B's prediction (called 1, truth 0); FN none
    assert (s1["tp"], s1["fp"], s1["fn"]) == (1, 1, 0)
    assert s1["jaccard"] == pytest.approx(50.0)
    assert (s1["recall"], s1["precision"]) == pytest.approx((1.0, 0.5))
    assert s1["rmse_xy_nm"] == pytest.approx(40.0)
    assert (s0["n_gt"], s0["n_pred"], s1["n_gt"], s1["n_pred"]) == (2, 1, 1, 2)


def test_species_metrics_with_misses_unknowns_and_an_empty_species():
    # frame 0: truths A (0), B (1) and D (1, missed); predictions: near A called 0, near B
    # unknown (−1), far away called 1 (a FP). n_species 3: species 2 never occurs.
    gt = arr([100, 100, 0], [1000, 100, 0], [3000, 3000, 0])
    pr = arr([100, 120, 0], [1000, 100, 0], [6000, 6000, 0])
    r = evaluate([0, 0, 0], gt, [0, 0, 0], pr, gt_species=[0, 1, 1],
                 pred_species=[0, -1, 1], n_species=3)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 1, 1)
    assert r["species_pairs"] == 2 and r["species_accuracy"] == pytest.approx(0.5)
    assert r["species_unknown_pred"] == 1 and r["species_unknown_truth"] == 0
    assert r["species_confusion"] == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]  # −1 left out
    s0, s1, s2 = r["by_species"]
    assert (s0["tp"], s0["fp"], s0["fn"]) == (1, 0, 0)
    assert (s1["tp"], s1["fp"], s1["fn"]) == (0, 1, 2)  # B called unknown, D missed
    assert s1["jaccard"] == 0.0 and math.isnan(s1["rmse_xy_nm"])
    assert s1["detection_recall"] == pytest.approx(0.5)  # B matched, D not
    assert (s2["n_gt"], s2["n_pred"], s2["tp"]) == (0, 0, 0) and math.isnan(s2["jaccard"])
    assert r["species_jaccard"] == pytest.approx(100 * 1 / (3 + 3 - 1))


def test_species_metrics_need_both_sides_and_valid_indices():
    gt = arr([0, 0, 0])
    with pytest.raises(ValueError, match="both"):
        evaluate([0], gt, [0], gt, gt_species=[0])
    with pytest.raises(ValueError, match="n_species 1"):
        evaluate([0], gt, [0], gt, gt_species=[0], pred_species=[1], n_species=1)
    r = evaluate([0], gt, [0], gt)
    assert "species_accuracy" not in r and "by_species" not in r


def test_uncertainty_calibration_leaves_out_unknown_sigmas_worked_by_hand():
    """e/σ on x: (1/1, −1/1) and a row whose σ is unknown (NaN) → std 1 over two rows; y:
    (−2/2, 2/2, 7/1) → values −1, 1, 7, mean 7/3, std sqrt(((−10/3)² + (−4/3)² +
    (14/3)²)/3) = sqrt(104/9); z has no σ at all → NaN, with no warning."""
    from deepsmlm.evaluation.metrics import uncertainty_calibration

    e = np.array([[1.0, -2.0, 5.0], [-1.0, 2.0, 1.0], [7.0, 7.0, 7.0]])
    s = np.array([[1.0, 2.0, np.nan], [1.0, 2.0, np.nan], [np.nan, 1.0, np.nan]])
    with np.errstate(all="raise"):
        c = uncertainty_calibration(e, s)
    assert c["n_known"].tolist() == [2, 3, 0]
    assert c["std"][0] == pytest.approx(1.0)
    assert c["std"][1] == pytest.approx(math.sqrt(104 / 9))
    assert math.isnan(c["std"][2]) and math.isnan(c["mean_sigma_nm"][2])
    assert c["mean_sigma_nm"][:2].tolist() == pytest.approx([1.0, 5.0 / 3.0])


def _greedy_one_by_one(gt_frame, gt, pr_frame, pr, tol_xy, tol_z, tol_3d=None):
    """The protocol written out: per frame, every admissible pair nearest-first (ties by
    axial distance, then ground-truth index, then prediction index), taken one at a time."""
    pairs = []
    for g in range(len(gt)):
        for p in range(len(pr)):
            if gt_frame[g] != pr_frame[p]:
                continue
            d_xy = math.hypot(gt[g, 0] - pr[p, 0], gt[g, 1] - pr[p, 1])
            d_z = abs(gt[g, 2] - pr[p, 2])
            if not (d_xy <= tol_xy and d_z <= tol_z):
                continue
            if tol_3d is not None:
                d_xy = math.hypot(d_xy, d_z)
                if d_xy > tol_3d:
                    continue
            pairs.append((d_xy, d_z, g, p))
    g_done, p_done, out = set(), set(), {}
    for _, _, g, p in sorted(pairs):
        if g not in g_done and p not in p_done:
            g_done.add(g)
            p_done.add(p)
            out[g] = p
    return out


@pytest.mark.parametrize("tol_z, tol_3d", [(np.inf, None), (300.0, None), (500.0, 200.0)])
def test_all_frames_at_once_equals_taking_pairs_one_by_one(tol_z, tol_3d):
    # crowded frames on a 50 nm grid, so that many distances tie exactly; frames in any
    # order, some frames without predictions or without truth, and a prediction at NaN
    rng = np.random.default_rng(7)
    n_matched = 0
    for trial in range(20):
        n_gt, n_pr = rng.integers(0, 60, 2)
        gt_f, pr_f = rng.integers(0, 5, n_gt), rng.integers(1, 6, n_pr)
        gt = rng.integers(0, 16, (n_gt, 3)) * 50.0
        pr = rng.integers(0, 16, (n_pr, 3)) * 50.0
        if n_pr:
            pr[0, 0] = np.nan
        m = match(gt_f, gt, pr_f, pr, tol_xy_nm=150.0, tol_z_nm=tol_z, tol_3d_nm=tol_3d)
        want = _greedy_one_by_one(gt_f, gt, pr_f, pr, 150.0, tol_z, tol_3d)
        assert dict(zip(m.gt_index.tolist(), m.pred_index.tolist())) == want, trial
        n_matched += len(want)
    assert n_matched > 50  # the cases are crowded enough to test something


@pytest.mark.parametrize("kw", [dict(tol_z_nm=np.inf),
                                dict(field_nm=(800.0, 800.0), border_nm=100.0),
                                dict(method="hungarian", tol_xy_nm=100.0, tol_z_nm=100.0,
                                     tol_3d_nm=100.0)])
def test_matching_at_many_thresholds_equals_matching_each_subset(kw):
    rng = np.random.default_rng(3)
    gt_f, pr_f = rng.integers(0, 6, 150), rng.integers(0, 6, 200)
    gt = rng.integers(0, 16, (150, 3)) * 50.0
    pr = rng.integers(0, 16, (200, 3)) * 50.0
    score = rng.choice([0.1, 0.2, 0.3, 0.5, 0.9], 200)  # ties at each threshold too
    thresholds = [0.0, 0.2, 0.3, 0.6, 1.0]
    got = match_at_thresholds(gt_f, gt, pr_f, pr, score, thresholds, **kw)
    n_tp = []
    for t, m in zip(thresholds, got, strict=True):
        keep = np.nonzero(score > t)[0]
        want = match(gt_f, gt, pr_f[keep], pr[keep], **kw)
        assert m.gt_index.tolist() == want.gt_index.tolist()
        assert m.pred_index.tolist() == keep[want.pred_index].tolist()
        assert m.n_gt == want.n_gt and m.n_pred == want.n_pred
        n_tp.append(m.tp)
    assert n_tp[0] > 20 and n_tp[-1] == 0  # crowded enough, and 1.0 drops every prediction


def test_hungarian_of_all_frames_at_once_is_each_frames_optimum():
    # against scipy's assignment solved frame by frame: the same pairs where no two
    # distances tie (continuous positions); on a grid, where they tie, the same number of
    # pairs and the same summed distance (an optimum need not be unique)
    from deepsmlm.evaluation import matching

    rng = np.random.default_rng(11)
    for grid in (False, True):
        for trial in range(10):
            n_gt, n_pr = rng.integers(1, 80, 2)
            gt_f, pr_f = rng.integers(0, 4, n_gt), rng.integers(0, 4, n_pr)
            gt = rng.uniform(0, 800, (n_gt, 3))
            pr = rng.uniform(0, 800, (n_pr, 3))
            if grid:
                gt, pr = np.round(gt / 50) * 50, np.round(pr / 50) * 50
            kw = dict(tol_xy_nm=100.0, tol_z_nm=300.0, tol_3d_nm=150.0)
            m = match(gt_f, gt, pr_f, pr, method="hungarian", **kw)
            want_g, want_p = [], []
            for t in range(4):
                gi, pi = np.nonzero(gt_f == t)[0], np.nonzero(pr_f == t)[0]
                if len(gi) and len(pi):
                    a, b = matching._hungarian(gt[gi], pr[pi], 100.0, 300.0, 150.0)
                    want_g += gi[a].tolist()
                    want_p += pi[b].tolist()
            got_cost = np.linalg.norm(gt[m.gt_index] - pr[m.pred_index], axis=1).sum()
            want_cost = np.linalg.norm(gt[want_g] - pr[want_p], axis=1).sum()
            assert m.tp == len(want_g), (grid, trial)
            assert got_cost == pytest.approx(want_cost)
            if not grid:
                assert sorted(zip(m.gt_index.tolist(), m.pred_index.tolist())) == \
                    sorted(zip(want_g, want_p)), trial
