"""CRLB by automatic differentiation against the closed form and against an estimator."""

import numpy as np
import pytest
import torch

from deepsmlm.camera import Camera
from deepsmlm.evaluation.crlb import crlb, model_and_jacobian, mortensen_mle_sigma_nm
from deepsmlm.optics.psf import GaussianPSF

from .conftest import make_experiment


@pytest.mark.parametrize("photons, bg, expected", [(1000, 10, 4.1), (5000, 100, 2.0)])
def test_pixelated_gaussian_matches_mortensen(photons, bg, expected):
    psf = GaussianPSF(100.0, 100.0, patch_px=21)
    ours = crlb(psf, [0.0], photons, bg)["crlb_x"][0]
    closed = mortensen_mle_sigma_nm(100.0, 100.0, photons, bg)
    assert ours == pytest.approx(closed, rel=0.03)
    assert ours == pytest.approx(expected, abs=0.06)


def test_emccd_excess_factor_doubles_the_variance():
    psf = GaussianPSF(100.0, 100.0, patch_px=21)
    emccd = Camera(qe=1.0, em_gain=300.0, e_per_adu=1.0)
    a = crlb(psf, [0.0], 1000, 10)["crlb_x"][0]
    b = crlb(psf, [0.0], 1000, 10, emccd)["crlb_x"][0]
    assert b == pytest.approx(np.sqrt(2) * a, rel=1e-3)


def test_2d_model_has_no_z_information_and_3d_does():
    psf = GaussianPSF(100.0, 100.0, patch_px=15)
    assert np.isnan(crlb(psf, [0.0], 1000, 10)["crlb_z"][0])
    exp = make_experiment(optics={"psf": "pupil", "mask": {"kind": "zernike", "noll": {6: 0.8}},
                                  "n_sample": 1.518, "pupil_grid_px": 32, "patch_px": 21},
                          emitters={"z_range_nm": [-500, 500]})
    from deepsmlm.build import build_psf

    res = crlb(build_psf(exp), [-300.0, 0.0, 300.0], 2000, 20)
    assert np.all(np.isfinite(res["crlb_z"])) and np.all(res["crlb_z"] < 60)
    # astigmatism: x is best where the x focus is, y mirrored
    assert res["crlb_x"][0] == pytest.approx(res["crlb_y"][2], rel=0.02)


def test_bound_is_reached_by_a_maximum_likelihood_fit_on_simulated_data():
    # 2000 isolated emitters, Poisson noise; Fisher-scoring MLE of (x, y, N, b)
    psf = GaussianPSF(110.0, 100.0, patch_px=11)
    gen = torch.Generator().manual_seed(0)
    n, photons, bg = 2000, 1500.0, 15.0
    centre = (11 // 2 + 0.5) * 100.0
    # within ±20 nm of the pixel centre, so the fitted patch never changes pixel
    true = torch.stack([centre + 40 * (torch.rand(n, generator=gen) - 0.5),
                        centre + 40 * (torch.rand(n, generator=gen) - 0.5),
                        torch.zeros(n)], 1)
    mu, _ = model_and_jacobian(psf, true, torch.full((n,), photons), torch.full((n,), bg))
    data = torch.poisson(mu, generator=gen)
    theta = torch.stack([torch.full((n,), centre), torch.full((n,), centre),
                         torch.zeros(n), data.sum((1, 2)) - bg * 121, torch.full((n,), bg)], 1)
    for _ in range(25):
        mu, jac = model_and_jacobian(psf, theta[:, :3], theta[:, 3], theta[:, 4])
        j = jac[..., [0, 1, 3, 4]].flatten(1, 2).double()
        w = (1 / mu.flatten(1)).double()
        score = torch.einsum("mk,mki->mi", data.flatten(1).double() / mu.flatten(1) - 1, j)
        info = torch.einsum("mki,mk,mkj->mij", j, w, j)
        step = torch.linalg.solve(info, score[..., None])[..., 0].float()
        theta[:, [0, 1, 3, 4]] += step
    err = (theta[:, 0] - true[:, 0]).numpy()
    bound = crlb(psf, [0.0], photons, bg)["crlb_x"][0]
    assert abs(err.mean()) < 0.5  # unbiased (nm)
    assert err.std() == pytest.approx(bound, rel=0.1)
