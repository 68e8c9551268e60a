"""Physics of the PSF models: energy, width, symmetry, astigmatism, shifts, gradients."""

import numpy as np
import pytest
import torch

from deepsmlm.api import psf_stack
from deepsmlm.build import build_psf
from deepsmlm.optics.psf import AstigmaticGaussianPSF, GaussianPSF

from .conftest import MATCHED, make_experiment, shared_file


def pupil_exp(**optics):
    return make_experiment(optics={**MATCHED, "psf": "pupil", **optics})


def fwhm_px(profile: np.ndarray) -> float:
    """Full width at half maximum of a 1D peak, by linear interpolation."""
    half = profile.max() / 2
    above = np.nonzero(profile >= half)[0]
    l, r = above[0], above[-1]
    left = l - 1 + (half - profile[l - 1]) / (profile[l] - profile[l - 1])
    right = r + (profile[r] - half) / (profile[r] - profile[r + 1])
    return right - left


def widths_px(img: np.ndarray) -> tuple[float, float]:
    """Second-moment widths (σx, σy) in pixels."""
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    s = img.sum()
    cx, cy = (img * xx).sum() / s, (img * yy).sum() / s
    return (np.sqrt((img * (xx - cx) ** 2).sum() / s), np.sqrt((img * (yy - cy) ** 2).sum() / s))


def test_in_focus_airy_fwhm():
    # 5 nm pixels sample the in-focus clear-aperture PSF finely: FWHM = 0.514 λ/NA (scalar)
    exp = pupil_exp(pixel_size_nm=5.0, pupil_grid_px=128, patch_px=161)
    img = psf_stack(exp, np.array([0.0]))[0]
    c = img.shape[0] // 2
    expected = 0.514 * 600.0 / 1.4
    assert fwhm_px(img[c]) * 5.0 == pytest.approx(expected, rel=0.03)
    assert fwhm_px(img[:, c]) * 5.0 == pytest.approx(expected, rel=0.03)


def test_photon_conservation_large_field():
    exp = pupil_exp(pixel_size_nm=100.0, pupil_grid_px=128, patch_px=151)
    stack = psf_stack(exp, np.array([0.0, 400.0]))
    sums = stack.sum(axis=(1, 2))
    assert np.all(sums >= 0.99) and np.all(sums <= 1.0 + 1e-3)


def test_light_outside_the_frame_is_lost_not_renormalised():
    exp = pupil_exp(pixel_size_nm=100.0, pupil_grid_px=64, patch_px=31)
    psf = build_psf(exp)
    xyz = torch.tensor([[1600.0, 1600.0, 0.0], [0.0, 1600.0, 0.0]])  # centre, left edge
    img = psf.render(xyz, torch.full((2,), 1000.0), torch.tensor([0, 1]), (2, 32, 32))
    centre, edge = img.sum(dim=(1, 2)).tolist()
    assert centre > 950 and edge == pytest.approx(centre / 2, rel=0.05)


def test_plus_minus_z_symmetry_without_mismatch():
    exp = pupil_exp(pixel_size_nm=65.0, pupil_grid_px=64, patch_px=33)
    up, down = psf_stack(exp, np.array([500.0, -500.0]))
    assert np.abs(up - down).max() < 1e-4 * up.max() + 1e-7
    focus = psf_stack(exp, np.array([0.0]))[0]
    assert focus.max() > 2 * up.max()  # and defocus blurs


def test_index_mismatch_breaks_symmetry_and_shifts_focus():
    # oil objective focused 4.5 µm into water: sharpest near 3.5-4 µm, not at 4.5 µm
    exp = make_experiment(optics=dict(wavelength_nm=580, na=1.45, n_immersion=1.518,
                                      n_sample=1.33, pixel_size_nm=110, focus_nm=4500))
    z = np.arange(2500.0, 5001.0, 250.0)
    peaks = psf_stack(exp, z).max(axis=(1, 2))
    assert 3250 <= z[np.argmax(peaks)] <= 4000


def test_astigmatism_moves_x_and_y_foci_apart():
    exp = pupil_exp(pixel_size_nm=65.0, pupil_grid_px=64, patch_px=41,
                    mask={"kind": "zernike", "noll": {6: 0.8}})
    z = np.arange(-800.0, 801.0, 100.0)
    stack = psf_stack(exp, z)
    wx, wy = np.array([widths_px(s) for s in stack]).T
    zx, zy = z[np.argmin(wx)], z[np.argmin(wy)]
    assert abs(zx - zy) >= 300 and np.sign(zx) == -np.sign(zy)
    # mirror symmetry: x at +z looks like y at -z
    assert np.allclose(wx, wy[::-1], rtol=0.05)


def test_lateral_shift_shifts_the_image():
    exp = pupil_exp(pixel_size_nm=100.0, pupil_grid_px=64, patch_px=21)
    psf = build_psf(exp)
    base = torch.tensor([[1250.0, 1270.0, 0.0]])
    shifts = torch.tensor([[0.0, 0.0, 0.0], [300.0, 0.0, 0.0], [0.0, -200.0, 0.0],
                           [37.0, 61.0, 0.0]])
    xyz = base + shifts
    imgs = psf.render(xyz, torch.full((4,), 1.0), torch.arange(4), (4, 32, 32)).numpy()
    # whole-pixel shifts move the image by exactly that many pixels
    assert np.allclose(np.roll(imgs[0], 3, axis=1)[:, 5:28], imgs[1][:, 5:28], atol=1e-6)
    assert np.allclose(np.roll(imgs[0], -2, axis=0)[5:28], imgs[2][5:28], atol=1e-6)
    # sub-pixel shifts move the centroid by the shift (in pixels: 0.37, 0.61)
    yy, xx = np.mgrid[:32, :32] + 0.5
    def centroid(a):
        return (a * xx).sum() / a.sum(), (a * yy).sum() / a.sum()
    c0, c3 = np.array(centroid(imgs[0])), np.array(centroid(imgs[3]))
    assert np.allclose(c3 - c0, [0.37, 0.61], atol=0.02)
    assert np.allclose(c0, [12.5, 12.7], atol=0.05)  # pixel-centre convention: x = col + 0.5


def test_gradient_wrt_mask_matches_finite_differences():
    exp = pupil_exp(pixel_size_nm=100.0, pupil_grid_px=24, patch_px=11)
    psf = build_psf(exp)
    gen = torch.Generator().manual_seed(0)
    start = 0.3 * torch.randn(24, 24, generator=gen)
    psf.set_mask_phase(start, learnable=True)
    xyz = torch.tensor([[530.0, 560.0, 150.0], [520.0, 470.0, -300.0]])
    weights = torch.rand(2, 11, 11, generator=gen)

    def loss(phase=None):
        return (psf.patches(xyz, torch.full((2,), 1000.0), mask_phase=phase)[0] * weights).sum()

    loss().backward()
    grad = psf.mask_phase.grad.clone()
    inside = psf.aperture > 0
    assert grad[inside].abs().min() >= 0 and grad[inside].abs().max() > 0
    assert torch.all(grad[~inside] == 0)  # outside the pupil the mask does nothing
    direction = torch.randn(24, 24, generator=gen) * inside
    eps = 1e-2
    with torch.no_grad():
        fd = (loss(start + eps * direction) - loss(start - eps * direction)) / (2 * eps)
    assert float((grad * direction).sum()) == pytest.approx(float(fd), rel=2e-2)
    # single pixels: the sign and size of the strongest components agree
    for idx in torch.topk(grad.abs().flatten(), 3).indices:
        e = torch.zeros(24 * 24)
        e[idx] = 1.0
        e = e.view(24, 24)
        with torch.no_grad():
            fd1 = (loss(start + eps * e) - loss(start - eps * e)) / (2 * eps)
        assert float(grad.flatten()[idx]) == pytest.approx(float(fd1), rel=5e-2)


def test_gradient_wrt_position_matches_finite_differences():
    exp = pupil_exp(pixel_size_nm=100.0, pupil_grid_px=32, patch_px=15)
    psf = build_psf(exp)
    xyz = torch.tensor([[733.0, 791.0, 200.0]], requires_grad=True)
    w = torch.rand(1, 15, 15, generator=torch.Generator().manual_seed(1))
    (psf.patches(xyz, torch.ones(1) * 1000)[0] * w).sum().backward()
    for axis in range(3):
        d = torch.zeros(1, 3)
        d[0, axis] = 1.0
        with torch.no_grad():
            fd = ((psf.patches(xyz + d, torch.ones(1) * 1000)[0] * w).sum()
                  - (psf.patches(xyz - d, torch.ones(1) * 1000)[0] * w).sum()) / 2
        assert float(xyz.grad[0, axis]) == pytest.approx(float(fd), rel=5e-2, abs=1e-3)


def test_integrated_gaussian_conserves_photons_and_width():
    psf = GaussianPSF(sigma_nm=110.0, pixel_size_nm=100.0, patch_px=41)
    xyz = torch.tensor([[2043.0, 1977.0, 0.0]])
    img = psf.patches(xyz, torch.tensor([1000.0]))[0][0].numpy()
    assert img.sum() == pytest.approx(1000.0, rel=1e-4)
    wx, wy = widths_px(img)
    # pixel integration adds the variance of a box: σ² + 1/12 px²
    assert wx == pytest.approx(np.sqrt(1.1 ** 2 + 1 / 12), rel=0.01)
    assert wy == pytest.approx(wx, rel=0.01)


def test_astigmatic_gaussian_foci():
    psf = AstigmaticGaussianPSF(100.0, 300.0, 400.0, focus_nm=50.0, pixel_size_nm=100.0)
    sx, sy = psf.sigmas(torch.tensor([350.0, -250.0]))
    assert float(sx[0]) == pytest.approx(100.0) and float(sy[1]) == pytest.approx(100.0)
    assert float(sy[0]) > 150 and float(sx[1]) > 150


def test_file_mask_resampling_matches_the_zernike_it_holds(tmp_path):
    # a Zernike drawn on a foreign 201-px grid with a 70 px pupil radius, wrapped to [-π, π]
    from deepsmlm.optics.pupil import PupilGrid
    from deepsmlm.optics.zernike import zernike_phase

    n, r = 201, 70.0
    coords = (np.arange(n) - (n - 1) / 2) / r
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    rho, theta = torch.from_numpy(np.hypot(xx, yy)), torch.from_numpy(np.arctan2(yy, xx))
    noll = {5: 4.0, 6: -3.0, 11: 2.0}  # many 2π wraps
    phase = zernike_phase(noll, rho, theta).numpy()
    wrapped = np.angle(np.exp(1j * phase)) * (rho.numpy() <= 1)
    np.save(tmp_path / "mask.npy", wrapped)
    optics = {**MATCHED, "pupil_grid_px": 48,
              "mask": {"kind": "file", "path": str(tmp_path / "mask.npy"), "pupil_radius_px": r}}
    from deepsmlm.build import mask_phase, pupil_grid

    exp = make_experiment(optics=optics)
    grid = pupil_grid(exp.optics)
    got = mask_phase(exp.optics, grid)
    want = zernike_phase(noll, *grid.polar()).float()
    inside = grid.polar()[0] <= 0.95
    diff = torch.angle(torch.exp(1j * (got - want)))[inside]
    assert diff.abs().max() < 0.15  # radians, wrap-free
    assert isinstance(grid, PupilGrid)


def test_tetrapod_extent_grows_across_the_axial_range():
    path = shared_file("deepstorm3d", "mask_tetrapod.mat")
    exp = make_experiment(optics=dict(
        wavelength_nm=580, na=1.45, n_immersion=1.518, n_sample=1.33, pixel_size_nm=110,
        focus_nm=4500, pupil_grid_px=96, patch_px=61,
        mask={"kind": "file", "path": str(path), "key": "mask_tetra_model",
              "pupil_radius_px": 82.9}))
    z = np.arange(2000.0, 6001.0, 500.0)
    stack = psf_stack(exp, z)
    yy, xx = np.mgrid[:61, :61] - 30
    rms = np.sqrt((stack * (xx ** 2 + yy ** 2)).sum((1, 2)) / stack.sum((1, 2)))
    i_min = int(np.argmin(rms))
    assert 3000 <= z[i_min] <= 5000  # compact in the middle of the range
    assert rms[0] > 1.4 * rms[i_min] and rms[-1] > 1.4 * rms[i_min]  # lobes separate
    assert np.all(np.diff(rms[: i_min + 1]) < 0.3) and np.all(np.diff(rms[i_min:]) > -0.3)
    # the compact PSF is still far wider than a clear-aperture spot (≈1.3 px rms)
    assert rms.min() > 4


@pytest.mark.parametrize("suffix", [".npy", ".mat", ".tif"])
def test_mask_files_load_in_every_format(tmp_path, suffix):
    from scipy.io import savemat

    from deepsmlm.build import mask_phase, pupil_grid
    from deepsmlm.errors import UserError

    n = 65
    yy, xx = np.mgrid[:n, :n] - 32.0
    phase = (0.02 * xx * yy) * (np.hypot(xx, yy) <= 30)
    path = tmp_path / f"m{suffix}"
    if suffix == ".npy":
        np.save(path, phase)
    elif suffix == ".mat":
        savemat(path, {"ph": phase, "other": np.zeros(3)})
    else:
        import tifffile

        tifffile.imwrite(path, phase.astype(np.float32))
    mask = {"kind": "file", "path": str(path)}
    if suffix == ".mat":
        mask["key"] = "ph"
    exp = make_experiment(optics={**MATCHED, "pupil_grid_px": 32, "mask": mask})
    got = mask_phase(exp.optics, pupil_grid(exp.optics))  # radius inferred from the support
    assert got.shape == (32, 32) and float(got.abs().max()) > 1.0
    if suffix == ".mat":
        bad = make_experiment(optics={**MATCHED, "mask": {**mask, "key": "nope"}})
        with pytest.raises(UserError, match="no key 'nope'"):
            mask_phase(bad.optics, pupil_grid(bad.optics))


def test_pixel_integration_converges_with_oversampling():
    # 160 nm pixels are coarse for a 600 nm / NA 1.4 PSF: point sampling overestimates the peak
    peaks = {}
    for os_ in (1, 2, 4, 8):
        exp = pupil_exp(pixel_size_nm=160.0, pupil_grid_px=64, patch_px=21,
                        pixel_oversampling=os_)
        peaks[os_] = psf_stack(exp, np.array([0.0]))[0].max()
    err = {k: abs(v - peaks[8]) for k, v in peaks.items() if k != 8}
    assert err[1] > err[2] > err[4] and peaks[1] > peaks[8]
    assert err[4] < 0.01 * peaks[8]
