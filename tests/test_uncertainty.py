"""The density-dependent σ calibration (``deepsmlm.uncertainty``), worked by hand."""

import numpy as np
import pytest
import torch

from deepsmlm.uncertainty import fit_scale_table, local_density_per_um2, scale_factors


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


def test_table_bins_by_density_and_keeps_the_trend():
    rng = np.random.default_rng(0)
    density = rng.uniform(0.0, 1.0, 4000)
    true_scale = 1.0 + density  # errors/σ of std 1 + ρ
    ratios = rng.normal(size=(4000, 2)) * true_scale[:, None]
    ratios[:, 1] = np.nan  # an axis without σ
    t = fit_scale_table(ratios, density, bins=5)
    knots = np.array(t["density_per_um2"])
    assert len(knots) == 5 and np.all(np.diff(knots) > 0)
    assert np.array(t["scale"][0]) == pytest.approx(1.0 + knots, abs=0.06)
    assert t["scale"][1] == pytest.approx([1.0] * 5)
    # too few matches for bins of 40: fewer bins, or none
    assert len(fit_scale_table(ratios[:100], density[:100])["density_per_um2"]) == 2
    assert fit_scale_table(ratios[:39], density[:39]) is None


def test_scale_factors_interpolate_and_hold_at_the_ends():
    table = {"density_per_um2": [0.1, 0.5], "scale": [[1.0, 2.0], [3.0, 3.0]]}
    f = scale_factors(table, np.array([0.0, 0.1, 0.3, 0.5, 2.0]), 3)
    assert f[:, 0] == pytest.approx([1.0, 1.0, 1.5, 2.0, 2.0])
    assert f[:, 1] == pytest.approx([3.0] * 5)
    assert f[:, 2] == pytest.approx([1.0] * 5)  # no z column in the table
    assert scale_factors(None, np.zeros(4), 2).tolist() == [[1.0, 1.0]] * 4


def test_edge_factor_is_fitted_near_the_edge_and_density_away_from_it():
    """Errors of 1σ inside and 2σ within 8 px of the edge: the density table sees only the
    inside (1), the edge table the rest (2, then 1 from 8 px on)."""
    rng = np.random.default_rng(1)
    n = 3000
    edge = rng.uniform(0.0, 32.0, n)
    density = rng.uniform(0.0, 1.0, n)
    ratios = rng.normal(size=(n, 1)) * np.where(edge < 8.0, 2.0, 1.0)[:, None]
    t = fit_scale_table(ratios, density, edge)
    assert np.array(t["scale"][0]) == pytest.approx(1.0, abs=0.08)
    assert t["edge_px"][-1] == 8.0 and len(t["edge_px"]) == 5
    assert np.array(t["edge_scale"][0][:-1]) == pytest.approx(2.0, abs=0.2)
    f = scale_factors(t, np.full(3, 0.5), 1, edge_px=np.array([0.5, 8.0, 20.0]))[:, 0]
    assert f[0] == pytest.approx(2.0, abs=0.2) and f[1:] == pytest.approx(1.0, abs=0.08)
    # without distances (or without an edge table) the edge factor is 1
    assert scale_factors(t, np.full(2, 0.5), 1)[:, 0] == pytest.approx(1.0, abs=0.08)
    # without distances the density table is fitted on every localization
    assert np.all(np.array(fit_scale_table(ratios, density)["scale"][0]) > 1.2)
