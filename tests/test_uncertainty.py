"""The σ calibration by density, edge distance and photons (``deepsmlm.uncertainty``),
worked by hand."""

import numpy as np
import pytest
import torch

from deepsmlm.uncertainty import (
    fit_scale_table,
    local_density_at,
    local_density_per_um2,
    scale_factors,
)


def terms(table: dict) -> dict:
    return {t["feature"]: t for t in table["terms"]}


def test_local_density_counts_the_box_and_only_its_part_inside_the_frame():
    p = torch.zeros(1, 9, 9)
    p[0, 4, 4] = 1.0
    # 1 µm pixels, 5×5 box: one emitter in 25 µm² at the centre
    assert float(local_density_per_um2(p, 1000.0, box_px=5)[0, 4, 4]) == pytest.approx(0.04)
    q = torch.zeros(1, 9, 9)
    q[0, 0, 0] = 1.0  # in a corner the box holds 3×3 pixels of the frame
    assert float(local_density_per_um2(q, 1000.0, box_px=5)[0, 0, 0]) == pytest.approx(1 / 9)
    u = torch.full((2, 7, 11), 0.5)  # uniform: the same everywhere, edges included
    d = local_density_per_um2(u, 100.0, box_px=5)
    assert torch.allclose(d, torch.full_like(d, 0.5 / 0.01))
    with pytest.raises(ValueError, match="odd"):
        local_density_per_um2(p, 100.0, box_px=4)


def test_density_term_bins_and_keeps_the_trend():
    rng = np.random.default_rng(0)
    density = rng.uniform(0.0, 1.0, 4000)
    ratios = rng.normal(size=(4000, 2)) * (1.0 + density)[:, None]  # std 1 + ρ
    ratios[:, 1] = np.nan  # an axis without σ
    t = terms(fit_scale_table(ratios, {"density_per_um2": density}))["density_per_um2"]
    knots = np.array(t["knots"])  # the line's ends: 1st and 99th percentile
    assert knots == pytest.approx(np.percentile(density, [1, 99]))
    assert np.array(t["scale"][0]) == pytest.approx(1.0 + knots, abs=0.06)
    assert t["scale"][1] == pytest.approx([1.0] * 2)
    # one bin of 40 (all the same density): its std, a constant
    one = fit_scale_table(ratios[:79], {"density_per_um2": np.zeros(79)})
    assert one["terms"][0]["knots"] == [0.0]
    assert one["terms"][0]["scale"][0] == pytest.approx([np.std(ratios[:79, 0])])
    assert fit_scale_table(ratios[:39], {"density_per_um2": density[:39]}) is None


def test_edge_term_is_fitted_near_the_edge_and_density_away_from_it():
    """Errors of 1σ inside and 2σ within 8 px of the edge: the density term sees only the
    inside (1), the edge term the rest (2, then 1 from 8 px on)."""
    rng = np.random.default_rng(1)
    n = 8000
    f = {"density_per_um2": rng.uniform(0.0, 1.0, n), "edge_px": rng.uniform(0.0, 32.0, n)}
    ratios = rng.normal(size=(n, 1)) * np.where(f["edge_px"] < 8.0, 2.0, 1.0)[:, None]
    t = terms(fit_scale_table(ratios, f))
    assert np.array(t["density_per_um2"]["scale"][0]) == pytest.approx(1.0, abs=0.08)
    assert t["edge_px"]["knots"][-1] == 8.0 and len(t["edge_px"]["knots"]) == 5
    assert np.array(t["edge_px"]["scale"][0][:-1]) == pytest.approx(2.0, abs=0.15)
    table = {"terms": list(t.values())}
    g = scale_factors(table, {"density_per_um2": np.full(3, 0.5),
                              "edge_px": np.array([0.5, 8.0, 20.0])}, 1)[:, 0]
    assert g[0] == pytest.approx(2.0, abs=0.15) and g[1:] == pytest.approx(1.0, abs=0.08)
    # a feature not given counts 1
    assert scale_factors(table, {"density_per_um2": np.full(2, 0.5)}, 1)[:, 0] == \
        pytest.approx(1.0, abs=0.08)
    # without distances the density term is fitted on every localization
    alone = fit_scale_table(ratios, {"density_per_um2": f["density_per_um2"]})
    assert np.all(np.array(alone["terms"][0]["scale"][0]) > 1.2)


def test_photon_term_follows_what_the_density_term_leaves():
    """σ that shrink as 1/√N where the errors shrink as 1/N^0.75: the residual std grows
    ∝ N^−0.25 towards the dim end, and the photon term takes it up."""
    rng = np.random.default_rng(2)
    n = 4000
    photons = rng.uniform(1000.0, 16000.0, n)
    f = {"density_per_um2": rng.uniform(0.0, 1.0, n), "log_photons": np.log(photons)}
    ratios = rng.normal(size=(n, 1)) * (photons / 4000.0)[:, None] ** -0.25
    t = terms(fit_scale_table(ratios, f))
    g = scale_factors({"terms": list(t.values())}, f, 1)[:, 0]
    dim, bright = photons < 2000, photons > 12000
    assert np.std(ratios[dim, 0] / g[dim]) == pytest.approx(1.0, abs=0.12)
    assert np.std(ratios[bright, 0] / g[bright]) == pytest.approx(1.0, abs=0.12)
    assert np.std(ratios[dim, 0]) > 1.25 and np.std(ratios[bright, 0]) < 0.85  # before
    # all photons equal, or within 2000–2500: no photon term
    for narrow in (np.zeros(n), np.log(rng.uniform(2000.0, 2500.0, n))):
        same = fit_scale_table(ratios, {**f, "log_photons": narrow})
        assert [u["feature"] for u in same["terms"]] == ["density_per_um2"]


def test_scale_factors_interpolate_and_hold_at_the_ends():
    table = {"terms": [{"feature": "density_per_um2", "knots": [0.1, 0.5],
                        "scale": [[1.0, 2.0], [3.0, 3.0]]}]}
    f = scale_factors(table, {"density_per_um2": np.array([0.0, 0.1, 0.3, 0.5, 2.0])}, 3)
    assert f[:, 0] == pytest.approx([1.0, 1.0, 1.5, 2.0, 2.0])
    assert f[:, 1] == pytest.approx([3.0] * 5)
    assert f[:, 2] == pytest.approx([1.0] * 5)  # no z column in the table
    assert scale_factors(None, {"density_per_um2": np.zeros(4)}, 2).tolist() == [[1.0] * 2] * 4


def test_local_density_at_pixels_equals_the_density_maps():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(3, 9, 7, generator=g)
    t, r, c = torch.meshgrid(torch.arange(3), torch.arange(9), torch.arange(7), indexing="ij")
    t, r, c = t.flatten(), r.flatten(), c.flatten()
    for box in (3, 5):  # edges and corners, where the box is cut by the frame
        want = local_density_per_um2(p, 100.0, box)[t, r, c]
        got = local_density_at(p, t, r, c, 100.0, box)
        assert torch.allclose(got, want, rtol=1e-5)
