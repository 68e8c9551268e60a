import numpy as np
import pytest

from deepsmlm.evaluation.frc import frc_resolution
from deepsmlm.render import pearson, render_gaussian, render_histogram


def test_histogram_counts_and_pixel_convention():
    xy = np.array([[5.0, 5.0], [15.0, 5.0], [19.99, 29.0], [35.0, 5.0]])
    img = render_histogram(xy, 10.0, (30.0, 40.0))
    assert img.shape == (4, 3)
    assert img[0, 0] == 1 and img[0, 1] == 1 and img[2, 1] == 1 and img.sum() == 3  # x=35 out


def test_gaussian_rendering_conserves_weight_and_centres():
    xy = np.array([[505.0, 495.0]])
    img = render_gaussian(xy, 10.0, (1000.0, 1000.0), 30.0)
    assert img.sum() == pytest.approx(1.0, rel=1e-4)
    yy, xx = np.indices(img.shape) + 0.5
    assert (img * xx).sum() * 10 == pytest.approx(505.0, abs=0.5)
    assert (img * yy).sum() * 10 == pytest.approx(495.0, abs=0.5)
    per = render_gaussian(np.array([[200.0, 200.0], [800.0, 800.0]]), 10.0, (1000.0, 1000.0),
                          np.array([10.0, 50.0]))
    assert per[20, 20] > 5 * per[80, 80]


def test_pearson():
    rng = np.random.default_rng(0)
    a = rng.random((20, 20))
    assert pearson(a, a) == pytest.approx(1.0)
    assert pearson(a, -a) == pytest.approx(-1.0)
    assert abs(pearson(a, rng.random((20, 20)))) < 0.2


@pytest.mark.parametrize("sigma_nm", [8.0, 20.0])
def test_frc_of_jittered_structure(sigma_nm):
    # 2000 sites, 10 localizations each with Gaussian jitter σ: FRC ≈ 3–4 σ
    rng = np.random.default_rng(1)
    sites = rng.uniform(0, 5000, (2000, 2))
    xy = np.repeat(sites, 10, 0) + rng.normal(0, sigma_nm, (20000, 2))
    frame = rng.integers(0, 1000, len(xy))
    res = frc_resolution(xy, frame, pixel_nm=sigma_nm / 2, field_nm=(5000, 5000))
    assert 2.5 * sigma_nm < res.resolution_nm < 5.0 * sigma_nm
    assert res.frc[1] > 0.9  # low frequencies agree


def test_anisotropic_precision_render_has_per_axis_second_moments():
    # one localization with σx = 3σy: variances along x and y differ by 9, total weight 1
    # (pixel integration adds pixel²/12 to each variance; subtracted below)
    pixel = 2.0
    sx, sy = 30.0, 10.0
    img = render_gaussian(np.array([[501.0, 499.0]]), pixel, (1000.0, 1000.0),
                          np.array([[sx, sy]])).astype(np.float64)
    assert img.sum() == pytest.approx(1.0, rel=1e-4)
    yy, xx = (np.indices(img.shape) + 0.5) * pixel
    mx, my = (img * xx).sum(), (img * yy).sum()
    assert mx == pytest.approx(501.0, abs=0.1) and my == pytest.approx(499.0, abs=0.1)
    vx = (img * (xx - mx) ** 2).sum() - pixel**2 / 12
    vy = (img * (yy - my) ** 2).sum() - pixel**2 / 12
    assert vx == pytest.approx(sx**2, rel=0.02) and vy == pytest.approx(sy**2, rel=0.02)
    assert vx / vy == pytest.approx(9.0, rel=0.03)
    # two localizations, each of weight 1; (N, 2) with σx = σy equals the isotropic path
    xy = np.array([[200.0, 300.0], [700.0, 650.0]])
    iso = render_gaussian(xy, 10.0, (1000.0, 1000.0), np.array([15.0, 40.0]))
    both = render_gaussian(xy, 10.0, (1000.0, 1000.0), np.array([[15.0, 15.0], [40.0, 40.0]]))
    assert np.allclose(iso, both) and both.sum() == pytest.approx(2.0, rel=1e-4)
    with pytest.raises(ValueError, match="NaN"):
        render_gaussian(xy, 10.0, (1000.0, 1000.0), np.array([[15.0, np.nan], [4.0, 4.0]]))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        render_gaussian(xy, 10.0, (1000.0, 1000.0), np.ones((2, 3)))
