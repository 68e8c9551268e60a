"""PSF calibration from bead z-stacks: recovery of known pupils, robustness, round trip."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
import yaml

from deepsmlm.calibration import bead_stack as bs
from deepsmlm.calibration.pupil_fit import FitSettings, fit_pupil, gaussian_blur
from deepsmlm.errors import UserError
from deepsmlm.optics.masks import zernike_mask
from deepsmlm.optics.psf import PupilPSF
from deepsmlm.optics.pupil import PupilGrid

PX = 100.0
TRUE = {5: 0.35, 6: -0.25, 7: 0.2, 8: -0.15, 11: 0.3, 12: 0.2}


def bead_planes(noll, n_planes=21, z_step=100.0, crop=21, photons=1e4, bg=5.0, seed=0,
                xy_px=(10.3, 10.6), grid_px=32, noise=True):
    """A simulated bead stack (T, crop, crop) in photons, Poisson noise (unless ``noise`` is
    False: the expectation); z from −1 µm."""
    grid = PupilGrid(grid_px, 600.0, 1.4)
    psf = PupilPSF(grid, 1.518, 1.518, 0.0, PX, crop + 16, 1,
                   mask_phase=zernike_mask(grid, noll))
    z = -1000.0 + z_step * torch.arange(n_planes, dtype=torch.float32)
    xyz = torch.stack([torch.full_like(z, xy_px[0] * PX), torch.full_like(z, xy_px[1] * PX), z], 1)
    with torch.no_grad():
        mu = psf.render(xyz, torch.full_like(z, photons), torch.arange(n_planes),
                        (n_planes, crop, crop)) + bg
    if not noise:
        return mu.double().numpy(), grid
    gen = torch.Generator().manual_seed(seed)
    return torch.poisson(mu.double(), gen).numpy(), grid


def test_known_pupil_is_recovered_within_005_rad_rms():
    data, grid = bead_planes(TRUE)
    psf = PupilPSF(grid, 1.518, 1.518, 0.0, PX, 37, 1)
    settings = FitSettings(z_step_nm=100.0, zernike_stages=(15,), steps_per_stage=250,
                           n_starts=3, start_steps=30, fit_blur=False, blur_sigma_nm=0.0,
                           amplitude_modes=(4,), learning_rate=0.05)
    torch.manual_seed(0)
    fit = fit_pupil(psf, data[None], np.ones_like(data)[None], settings)
    err = np.array([fit.noll.get(j, 0.0) - TRUE.get(j, 0.0) for j in range(5, 16)])
    assert np.sqrt(np.mean(err ** 2)) <= 0.05, dict(zip(range(5, 16), err.round(3)))
    assert fit.focus_plane(100.0)[0] == pytest.approx(10.0, abs=0.5)  # z = 0 at plane 10
    np.testing.assert_allclose(fit.xy_px[0], (10.3, 10.6), atol=0.1)
    assert fit.deviance < 1.1  # Poisson deviance per pixel ≈ 1: limited by shot noise


def test_a_clear_pupil_gives_no_aberration_and_a_wrong_pupil_is_visible():
    data, grid = bead_planes({})
    psf = PupilPSF(grid, 1.518, 1.518, 0.0, PX, 37, 1)
    settings = FitSettings(z_step_nm=100.0, zernike_stages=(11,), steps_per_stage=120,
                           n_starts=1, start_steps=10, fit_blur=False, blur_sigma_nm=0.0,
                           amplitude_modes=(4,))
    fit = fit_pupil(psf, data[None], np.ones_like(data)[None], settings)
    assert max(abs(v) for v in fit.noll.values()) < 0.05
    # the same stack against a model that may not fit its phase: a poor match
    frozen = FitSettings(z_step_nm=100.0, zernike_stages=(5,), steps_per_stage=1,
                         n_starts=1, start_steps=1, fit_blur=False, blur_sigma_nm=0.0,
                         learning_rate=1e-6)
    wrong, _ = bead_planes(TRUE)
    bad = fit_pupil(psf, wrong[None], np.ones_like(wrong)[None], frozen)
    assert bad.correlation.mean() < fit.correlation.mean() - 0.05


def test_the_wrong_scan_direction_retrieves_the_twin_pupil():
    """(φ(k), z) and (−φ(−k), −z) give the same stack: with the direction reversed the fit
    is as good and its phase is the twin of the true one (docs/conventions.md)."""
    data, grid = bead_planes(TRUE)
    psf = PupilPSF(grid, 1.518, 1.518, 0.0, PX, 37, 1)
    fits = {}
    for direction in (1, -1):
        settings = FitSettings(z_step_nm=100.0, direction=direction, zernike_stages=(15,),
                               steps_per_stage=200, n_starts=3, start_steps=30,
                               fit_blur=False, blur_sigma_nm=0.0, amplitude_modes=(4,))
        fits[direction] = fit_pupil(psf, data[None], np.ones_like(data)[None], settings)
    up, down = fits[1], fits[-1]
    assert down.deviance == pytest.approx(up.deviance, rel=0.02)
    twin = -up.fitted_phase[::-1, ::-1]
    inside = psf.aperture.numpy() > 0
    diff = np.angle(np.exp(1j * (down.fitted_phase - twin)))[inside]
    assert np.sqrt(np.mean((diff - diff.mean()) ** 2)) < 0.1
    assert np.sqrt(np.mean((down.fitted_phase - up.fitted_phase)[inside] ** 2)) > 0.3


def test_blur_is_normalised_and_widens_a_point():
    img = torch.zeros(1, 21, 21)
    img[0, 10, 10] = 1.0
    out = gaussian_blur(img, torch.tensor(1.5))
    assert float(out.sum()) == pytest.approx(1.0, rel=1e-5)
    var = float((out[0].sum(0) * (torch.arange(21) - 10.0) ** 2).sum())
    assert var == pytest.approx(1.5 ** 2, rel=0.02)


# ------------------------------------------------------------------ real-stack problems
def test_hot_and_saturated_pixels_are_found_and_excluded():
    data, _ = bead_planes(TRUE, crop=31, xy_px=(15.5, 15.5))
    adu = np.round(data).astype(np.uint16)
    peak = np.unravel_index(adu[10].argmax(), adu[10].shape)
    adu[10][adu[10] > 0.6 * adu[10].max()] = 65535  # plane 10 clipped
    adu[:, 3, 4] = 4000                       # hot pixel, every plane
    bad = bs.find_bad_pixels(adu.astype(float), bs.default_saturation_adu(adu))
    assert (3, 4) in bad.hot_px and len(bad.hot_px) == 1
    assert bad.saturated_planes == [10]
    assert bad.weight[10][peak] == 0 and bad.weight[9][peak] == 1
    assert (bad.weight[:, 3, 4] == 0).all()


def test_beads_near_the_edge_slide_their_crop_or_are_skipped_with_a_reason():
    data, _ = bead_planes({}, crop=41, xy_px=(20.5, 20.5))
    frame = np.zeros((data.shape[0], 60, 90))
    frame[:, 10:51, 45:86] = data            # bead at column ≈ 65: a 41-px crop fits
    beads, skipped = bs.find_beads(frame, np.ones_like(frame), 41)
    assert len(beads) == 1 and abs(beads[0].col - 65) <= 1 and beads[0].left == 45
    beads, _ = bs.find_beads(frame, np.ones_like(frame), 55)  # 3 px short: slides inward
    assert beads[0].left == 90 - 55
    edge = np.zeros((data.shape[0], 60, 90))
    edge[:, 10:51, 72:90] = data[:, :, :18]  # bead centre at column 92: half outside
    with pytest.raises(UserError, match="too close to the edge"):
        bs.find_beads(edge, np.ones_like(edge), 41)


@pytest.mark.parametrize("stack, message", [
    (np.zeros((32, 32)), "single 2D image"),
    (np.zeros((10, 32, 32), dtype=bool), "not a camera count"),
    (np.full((10, 32, 32), np.nan), "NaN"),
    (np.zeros((3, 32, 32)), "at least 5"),
])
def test_bad_stacks_give_one_clear_error(stack, message):
    with pytest.raises(UserError, match=message):
        bs.check_stack(stack)


def test_a_stack_without_a_bead_is_an_error():
    rng = np.random.default_rng(0)
    noise = rng.poisson(20.0, (10, 48, 48)).astype(float)
    with pytest.raises(UserError, match="no bead"):
        bs.find_beads(noise, np.ones_like(noise), 21)


# ------------------------------------------------------------------ the command
@pytest.fixture
def bead_experiment(tmp_path):
    """Two beads side by side (31 px apart) on a background drifting from 5 to 45 photons."""
    a, _ = bead_planes(TRUE, crop=31, xy_px=(15.4, 15.6), bg=0.0, noise=False)
    b, _ = bead_planes(TRUE, crop=31, xy_px=(15.7, 15.2), bg=0.0, noise=False, photons=7e3)
    drift = np.linspace(5.0, 45.0, len(a))[:, None, None]
    data = np.random.default_rng(3).poisson(np.concatenate([a, b], axis=2) + drift)
    stack = tmp_path / "beads.tif"
    tifffile.imwrite(stack, data.astype(np.uint16))
    exp = {"optics": {"wavelength_nm": 600, "na": 1.4, "n_immersion": 1.518,
                      "n_sample": 1.518, "pixel_size_nm": PX, "focus_nm": 1000,
                      "pupil_grid_px": 32, "patch_px": 31},
           "frame": {"height_px": 31, "width_px": 62},
           "emitters": {"z_range_nm": [0, 2000]}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    return stack, path


def test_calibrate_command_round_trips_through_the_experiment_file(bead_experiment, tmp_path):
    from deepsmlm.build import build_psf
    from deepsmlm.cli import main
    from deepsmlm.config import load_experiment

    stack, exp_path = bead_experiment
    out = tmp_path / "cal"
    assert main(["calibrate", str(stack), str(exp_path), "--z-step-nm", "100", "--out",
                 str(out), "--crop-px", "31", "--steps", "60", "--zernike-max", "15",
                 "--no-blur", "--quiet"]) == 0
    cal = yaml.safe_load((out / "calibration.json").read_text())
    assert cal["deviance_per_px"] < 1.1  # shot-noise limited on both beads
    assert cal["crop_px"] == 31  # the square the pupil was fitted on (localize --refine-roi-px)
    assert len(cal["beads"]) == 2  # found and fitted jointly
    xs = sorted(bead["x_px"] for bead in cal["beads"])
    np.testing.assert_allclose(xs, [15.4, 31 + 15.7], atol=0.15)
    assert [round(bead["focus_plane"]) for bead in cal["beads"]] == [10, 10]
    bg = np.asarray(cal["beads"][0]["background_photons_per_px"])
    assert bg[0] == pytest.approx(5.0, rel=0.3) and bg[-1] == pytest.approx(45.0, rel=0.1)
    np.testing.assert_allclose([cal["noll"][str(j)] for j in TRUE],
                               list(TRUE.values()), atol=0.1)
    for name in ("pupil_phase.npy", "pupil_amplitude.npy", "planes.png", "agreement.png",
                 "experiment.yaml", "experiment_aberrations.yaml", "model_stack.tif"):
        assert (out / name).is_file(), name
    # the retrieved pupil, loaded back through the experiment file, renders the fitted model
    exp = load_experiment(out / "experiment.yaml")
    from deepsmlm.build import calibrated_crop_px

    assert calibrated_crop_px(exp) == 31  # localize --refine fits that square by default
    psf = build_psf(exp)
    bead = cal["beads"][0]  # the brightest, at the left: its crop starts at column 0
    z = torch.tensor(bead["z_nm"], dtype=torch.float32) + exp.optics.focus_nm
    n = len(z)
    xyz = torch.stack([torch.full_like(z, (bead["x_px"]) * PX),
                       torch.full_like(z, (bead["y_px"]) * PX), z], 1)
    with torch.no_grad():
        img = psf.render(xyz, torch.tensor(bead["photons"], dtype=torch.float32),
                         torch.arange(n), (n, 31, 31)).numpy()
    img += np.asarray(bead["background_photons_per_px"])[:, None, None]
    model = tifffile.imread(out / "model_stack.tif")
    np.testing.assert_allclose(img, model, rtol=2e-3, atol=2e-3 * model.max())
    # the Zernike form (design mask + aberrations) renders the same pupil
    psf_z = build_psf(load_experiment(out / "experiment_aberrations.yaml"))
    with torch.no_grad():
        img_z = psf_z.render(xyz, torch.tensor(bead["photons"], dtype=torch.float32),
                             torch.arange(n), (n, 31, 31)).numpy()
    img_z += np.asarray(bead["background_photons_per_px"])[:, None, None]
    np.testing.assert_allclose(img_z, model, rtol=2e-3, atol=5e-3 * model.max())


def test_calibrate_rejects_a_2d_image_with_exit_status_2(tmp_path, bead_experiment, capsys):
    from deepsmlm.cli import main

    _, exp_path = bead_experiment
    img = tmp_path / "one.tif"
    tifffile.imwrite(img, np.zeros((32, 32), np.uint16))
    assert main(["calibrate", str(img), str(exp_path), "--z-step-nm", "100",
                 "--out", str(tmp_path / "o")]) == 2
    assert "single" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["missing.tif", "--z-step-nm", "100"], "bead stack not found"),
    (["STACK", "--z-step-nm", "abc"], "--z-step-nm: expected a number, got 'abc'"),
    (["STACK", "--z-step-nm", "-5"], "--z-step-nm: expected a number > 0, got '-5'"),
])
def test_calibrate_bad_arguments_exit_2_with_one_message(args, message, bead_experiment,
                                                         tmp_path, capsys):
    from deepsmlm.cli import main

    stack, exp_path = bead_experiment
    args = [str(stack) if a == "STACK" else str(tmp_path / a) if a.endswith(".tif") else a
            for a in args]
    argv = ["calibrate", args[0], str(exp_path), *args[1:], "--out", str(tmp_path / "o")]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    assert rc == 2
    assert message in capsys.readouterr().err
