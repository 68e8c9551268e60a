"""Physics of the vectorial (freely rotating dipole) PSF: energy, symmetry, the scalar
limit at low NA, an independent Richards–Wolf (Bessel) computation and a closed-form
dipole energy split at high NA, gradients."""

import math

import numpy as np
import pytest
import torch
from scipy.special import jv

from deepsmlm.api import psf_stack
from deepsmlm.build import build_psf
from deepsmlm.optics import masks
from deepsmlm.optics.psf import PupilPSF
from deepsmlm.optics.pupil import PupilGrid
from deepsmlm.optics.vectorial import VectorialPSF, vectorial_factors

from .conftest import make_experiment

LAM = 600.0


def fwhm(profile: np.ndarray, step: float) -> float:
    """Full width at half maximum of a centred 1D peak, by linear interpolation."""
    half = profile.max() / 2
    above = np.nonzero(profile >= half)[0]
    lo, hi = above[0], above[-1]
    left = lo - 1 + (half - profile[lo - 1]) / (profile[lo] - profile[lo - 1])
    right = hi + (profile[hi] - half) / (profile[hi] - profile[hi + 1])
    return (right - left) * step


def image(psf, z=0.0, xy=None, photons=1.0):
    """One emitter at the centre of its pixel (or at xy), patch (P, P) as numpy."""
    p = psf.pixel_size_nm
    x, y = xy if xy is not None else (10.5 * p, 10.5 * p)
    vals, _ = psf.patches(torch.tensor([[x, y, z]]), torch.tensor([photons]))
    return vals[0].detach().numpy().astype(np.float64)


def fresnel_born_wolf(sin_s, n_s, n_i):
    """Amplitude transmission and reflection, sample → immersion, in the angle form of Born
    & Wolf §1.5 (independent of the module's index form): t_s, t_p, r_s, r_p, θ_s, θ_i."""
    th_s = np.arcsin(sin_s)
    th_i = np.arcsin(n_s * sin_s / n_i)
    sp, sm = np.sin(th_s + th_i), np.sin(th_s - th_i)
    ts = 2 * np.sin(th_i) * np.cos(th_s) / sp
    tp = ts / np.cos(th_s - th_i)
    rs, rp = -sm / sp, np.tan(th_s - th_i) / np.tan(th_s + th_i)
    return ts, tp, rs, rp, th_s, th_i


def richards_wolf(rho_nm, na, n_s, n_i, z=0.0, focus=0.0, n_k=1000):
    """Freely rotating dipole image I(ρ) ∝ |K0|² + 2|K1|² + |K2|² by radial quadrature
    (the angular integrals done analytically: ∫e^{-ix cos(φ-ψ)}e^{inφ}dφ = 2π(-i)^n J_n),
    written independently of the module's Cartesian pupil and matrix DFT."""
    kmax = min(na, n_s) / LAM
    k = (np.arange(n_k) + 0.5) * kmax / n_k  # midpoint rule in |k|
    sin_s = LAM * k / n_s
    if n_s == n_i:
        ts = tp = np.ones_like(k)
        th_s = th_i = np.arcsin(sin_s)
    else:
        ts, tp, _, _, th_s, th_i = fresnel_born_wolf(sin_s, n_s, n_i)
    cos_s, cos_i = np.cos(th_s), np.cos(th_i)
    g = np.sqrt(cos_i) / cos_s * np.exp(2j * np.pi * (n_s * cos_s * z - n_i * cos_i * focus)
                                        / LAM) * k
    x = 2 * np.pi * np.outer(rho_nm, k)
    k0 = (g * (tp * cos_s + ts) * jv(0, x)).sum(1)
    k1 = (g * tp * sin_s * jv(1, x)).sum(1)
    k2 = (g * (tp * cos_s - ts) * jv(2, x)).sum(1)
    return np.abs(k0) ** 2 + 2 * np.abs(k1) ** 2 + np.abs(k2) ** 2


def test_config_selects_the_vectorial_model():
    exp = make_experiment(optics=dict(psf="vectorial", pupil_grid_px=32, patch_px=15))
    psf = build_psf(exp)
    assert isinstance(psf, VectorialPSF) and isinstance(psf, PupilPSF)
    stack = psf_stack(exp, np.array([0.0, 300.0]))  # the `deepsmlm psf` path
    scalar = psf_stack(make_experiment(optics=dict(pupil_grid_px=32, patch_px=15)),
                       np.array([0.0, 300.0]))
    # a 1.5 µm patch: the vectorial PSF's heavier tails leave more light outside it
    assert np.all(stack.sum(axis=(1, 2)) < scalar.sum(axis=(1, 2)))
    assert np.all(stack.sum(axis=(1, 2)) > 0.7) and stack.max() < 0.9 * scalar.max()


def test_normalisation_is_exact_over_the_infinite_plane():
    # A patch that spans exactly one image period of the pupil grid at its Nyquist pixel:
    # the matrix DFT is then unitary, and Parseval says the patch sum is the photons exactly
    # (also with evanescent supercritical light, whose factors are complex).
    for n_s, na, z in [(1.518, 1.49, 0.0), (1.33, 1.45, 0.0), (1.33, 1.45, 150.0)]:
        grid = PupilGrid(32, LAM, na)
        psf = VectorialPSF(grid, n_s, 1.518, 0.0, grid.period_nm / 32, 32)
        total = image(psf, z=z, photons=1000.0).sum()
        assert total == pytest.approx(1000.0, rel=1e-4), (n_s, na, z)
    # supercritical light decays with depth: the factors are complex there
    assert psf.vector_factors.is_complex()


def test_patch_holding_the_psf_keeps_the_photons():
    # the sharp, edge-weighted pupil (1/cosθ) gives heavier tails than the scalar model:
    # 16 µm hold ≥ 97 % (scalar: 99.6 %), 8 µm ≈ 96 % (scalar: 99 %)
    grid = PupilGrid(128, LAM, 1.33)
    psf = VectorialPSF(grid, 1.33, 1.518, 0.0, 80.0, 201)  # NA 1.49 → 1.33 (water)
    for z in (0.0, 600.0):
        total = image(psf, z=z, xy=(8040.0, 8040.0)).sum()
        assert 0.97 <= total <= 1.0 + 1e-4


def test_oversampling_bins_the_fine_image():
    # 3× oversampled 60 nm pixels = the 20 nm image summed over 3×3 blocks, when the
    # sub-pixel samples coincide (emitter 30 nm into its 60 nm pixel, 10 nm into its 20 nm)
    grid = PupilGrid(64, LAM, 1.45)
    coarse = VectorialPSF(grid, 1.33, 1.518, 0.0, 60.0, 21, oversampling=3)
    fine = VectorialPSF(grid, 1.33, 1.518, 0.0, 20.0, 63)
    xy = (600.0 + 30.0, 600.0 + 30.0)
    a, b = image(coarse, z=200.0, xy=xy), image(fine, z=200.0, xy=xy)
    assert np.allclose(a, b.reshape(21, 3, 21, 3).sum(axis=(1, 3)), atol=1e-5 * a.max())
    assert a[10, 10] == a.max()


def test_in_focus_image_is_symmetric():
    grid = PupilGrid(64, LAM, 1.49)
    psf = VectorialPSF(grid, 1.518, 1.518, 0.0, 20.0, 41)
    img = image(psf)
    tol = 1e-5 * img.max()
    assert np.abs(img - img[:, ::-1]).max() < tol  # x → −x
    assert np.abs(img - img[::-1]).max() < tol  # y → −y
    assert np.abs(img - img.T).max() < tol  # x ↔ y: a freely rotating dipole is round
    assert np.abs(img - np.rot90(img)).max() < tol


def test_plus_minus_z():
    # Real vectorial factors: P(−z) = conj P(z), so I(−z)(r) = I(z)(−r); a round PSF gives
    # I(−z) = I(z), with or without index mismatch when focus is at the interface.
    for n_s in (1.518, 1.33):
        grid = PupilGrid(64, LAM, min(1.45, n_s))
        psf = VectorialPSF(grid, n_s, 1.518, 0.0, 40.0, 31)
        up, down = image(psf, z=500.0), image(psf, z=-500.0)
        assert np.abs(up - down).max() < 1e-4 * up.max()
        assert image(psf).max() > 2 * up.max()  # and defocus blurs
    # with astigmatism, +z is −z transposed (x and y foci swap), as in the scalar model
    grid = PupilGrid(64, LAM, 1.45)
    astig = masks.zernike_mask(grid, {6: 0.6})
    psf = VectorialPSF(grid, 1.518, 1.518, 0.0, 40.0, 31, mask_phase=astig)
    up, down = image(psf, z=400.0), image(psf, z=-400.0)
    assert np.abs(up - up.T).max() > 0.1 * up.max()  # the test can fail: not round
    assert np.abs(up - down.T).max() < 1e-4 * up.max()
    # index mismatch with the focus inside the sample breaks the symmetry around the focus
    grid = PupilGrid(64, LAM, 1.33)
    psf = VectorialPSF(grid, 1.33, 1.518, 1000.0, 40.0, 31)
    a, b = image(psf, z=1500.0), image(psf, z=500.0)
    assert np.abs(a - b).max() > 0.05 * a.max()


def test_agrees_with_the_scalar_model_at_low_na():
    grid = PupilGrid(64, LAM, 0.4)
    args = (grid, 1.33, 1.518, 0.0, 20.0, 101)
    for z in (0.0, 800.0):
        s, v = image(PupilPSF(*args), z=z), image(VectorialPSF(*args), z=z)
        assert np.corrcoef(s.ravel(), v.ravel())[0, 1] >= 0.999
        c = s.shape[0] // 2
        assert fwhm(v[c], 20.0) == pytest.approx(fwhm(s[c], 20.0), rel=0.01)


@pytest.mark.parametrize("n_s, z, focus", [(1.518, 0.0, 0.0), (1.33, 300.0, 500.0)])
def test_matches_a_direct_richards_wolf_integral_at_high_na(n_s, z, focus):
    grid = PupilGrid(128, LAM, min(1.49, n_s))
    pixel, p = 10.0, 81
    psf = VectorialPSF(grid, n_s, 1.518, focus, pixel, p)
    img = image(psf, z=z, xy=(40.5 * pixel, 40.5 * pixel))
    yy, xx = (np.mgrid[:p, :p] - p // 2) * pixel
    rho = np.arange(0.0, 580.0, 0.5)  # the radial profile, interpolated to the pixels
    ref = np.interp(np.hypot(xx, yy), rho, richards_wolf(rho, 1.49, n_s, 1.518, z, focus))
    assert np.corrcoef(img.ravel(), ref.ravel())[0, 1] > 0.9999
    ref *= img.max() / ref.max()
    assert np.abs(img - ref).max() < 0.01 * img.max()
    c = p // 2
    assert fwhm(img[c], pixel) == pytest.approx(fwhm(ref[c], pixel), rel=0.01)


def test_in_focus_fwhm_at_na_1_49_is_broader_than_scalar():
    # FWHM of the freely rotating dipole at NA 1.49 (oil, matched) from the Bessel integral,
    # and the module's: 233 nm = 0.578 λ/NA vs the scalar (uniform pupil) 0.514 λ/NA.
    rho = np.arange(0.0, 600.0, 0.5)
    prof = richards_wolf(rho, 1.49, 1.518, 1.518)
    half = np.interp(0.5, prof[::-1] / prof[0], rho[::-1]) * 2
    grid = PupilGrid(128, LAM, 1.49)
    v = image(VectorialPSF(grid, 1.518, 1.518, 0.0, 5.0, 161), xy=(80.5 * 5, 80.5 * 5))
    s = image(PupilPSF(grid, 1.518, 1.518, 0.0, 5.0, 161), xy=(80.5 * 5, 80.5 * 5))
    fv, fs = fwhm(v[80], 5.0), fwhm(s[80], 5.0)
    assert fv == pytest.approx(half, rel=0.01)
    assert fs == pytest.approx(0.514 * LAM / 1.49, rel=0.02)
    assert fv == pytest.approx(0.578 * LAM / 1.49, rel=0.01)
    assert 1.10 < fv / fs < 1.15
    assert v.max() < 0.8 * s.max()  # the z dipole's ring takes light from the peak


def test_dipole_energy_split_matches_the_closed_form():
    # Power of a z dipole and an x dipole collected by a cone of half-angle α (matched
    # index): P_z ∝ S = ∫₀^α sin³θ dθ = 2/3 − cosα + cos³α/3, P_x + P_y + P_z ∝ 2(1 − cosα),
    # so the z share of an isotropic emitter is S / (2(1 − cosα)) (Fourkas, Opt. Lett. 26,
    # 211 (2001)). This checks the apodisation: a uniform pupil amplitude gets it wrong.
    for na in (0.8, 1.3, 1.49):
        grid = PupilGrid(512, LAM, na)
        v = vectorial_factors(grid, 1.518, 1.518).abs() ** 2
        share_z = float(v[3:].sum() / v.sum())
        ca = math.cos(math.asin(na / 1.518))
        expected = (2 / 3 - ca + ca ** 3 / 3) / (2 * (1 - ca))
        assert share_z == pytest.approx(expected, rel=0.01), na


def test_pupil_factors_follow_fresnel_and_the_apodisation():
    # near the +kx axis (φ ≈ 0): Exx = A·t_p·cosθ_s, Eyy = A·t_s, Ezx = −A·t_p·sinθ_s,
    # A = sqrt(cosθ_i)/cosθ_s, with t from Born & Wolf's angle form; that form conserves
    # energy at the interface (|r|² + n_i cosθ_i/(n_s cosθ_s)·|t|² = 1).
    n_s, n_i = 1.33, 1.518
    grid = PupilGrid(64, LAM, 1.33)
    v = vectorial_factors(grid, n_s, n_i)
    k = grid.k_1d(torch.float64).numpy()
    row, cols = 31, np.nonzero(k > 0)[0][:-1]  # the row ky = −dk/2 (the grid is centred)
    ky, kx = k[row], k[cols]
    kr = np.hypot(kx, ky)
    phi = np.arctan2(ky, kx)
    ts, tp, rs, rp, th_s, th_i = fresnel_born_wolf(LAM * kr / n_s, n_s, n_i)
    flux = n_i * np.cos(th_i) / (n_s * np.cos(th_s))
    assert np.allclose(rs ** 2 + flux * ts ** 2, 1.0) and np.allclose(rp ** 2 + flux * tp ** 2, 1)
    a = np.sqrt(np.cos(th_i)) / np.cos(th_s)
    c, s = np.cos(phi), np.sin(phi)
    exx = a * (tp * np.cos(th_s) * c ** 2 + ts * s ** 2)
    eyy = a * (tp * np.cos(th_s) * s ** 2 + ts * c ** 2)
    ezx = -a * tp * np.sin(th_s) * c
    got = v[:, row, cols].real.numpy()
    assert np.allclose(got[0], exx, rtol=1e-6) and np.allclose(got[1], eyy, rtol=1e-6)
    assert np.allclose(got[3], ezx, rtol=1e-6)
    assert np.abs(tp - ts).max() > 0.02  # p and s differ here, so a swap would show


def test_gradients_match_finite_differences():
    grid = PupilGrid(24, LAM, 1.45)
    psf = VectorialPSF(grid, 1.33, 1.518, 300.0, 100.0, 11)  # supercritical off: na_eff…
    gen = torch.Generator().manual_seed(0)
    start = 0.3 * torch.randn(24, 24, generator=gen)
    psf.set_mask_phase(start, learnable=True)
    xyz = torch.tensor([[530.0, 560.0, 150.0], [520.0, 470.0, 700.0]], requires_grad=True)
    weights = torch.rand(2, 11, 11, generator=gen)

    def loss(phase=None, pos=xyz):
        return (psf.patches(pos, torch.full((2,), 1000.0), mask_phase=phase)[0]
                * weights).sum()

    loss().backward()
    grad = psf.mask_phase.grad.clone()
    astig = masks.zernike_mask(grid, {6: 1.0})
    eps = 1e-2
    with torch.no_grad():
        fd = (loss(start + eps * astig) - loss(start - eps * astig)) / (2 * eps)
    assert float((grad * astig).sum()) == pytest.approx(float(fd), rel=2e-2)
    assert abs(float(fd)) > 1.0  # the check is not vacuous
    idx = int(torch.argmax(grad.abs()))
    e = torch.zeros(24 * 24)
    e[idx] = 1.0
    with torch.no_grad():
        fd1 = (loss(start + eps * e.view(24, 24)) - loss(start - eps * e.view(24, 24))) / (
            2 * eps)
    assert float(grad.flatten()[idx]) == pytest.approx(float(fd1), rel=5e-2)
    for axis in range(3):
        d = torch.zeros(2, 3)
        d[0, axis] = 2.0
        with torch.no_grad():
            fdp = (loss(start, xyz + d) - loss(start, xyz - d)) / 4.0
        assert float(xyz.grad[0, axis]) == pytest.approx(float(fdp), rel=3e-2, abs=1e-2)
