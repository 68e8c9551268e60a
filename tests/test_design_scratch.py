"""Deep optics from scratch (issue 16): the PSF's footprint and rotation measures, the
manufacturing regularisers of a pixel-wise mask, the footprint term of the Fisher design, and
the three-stage design (Fisher → network alone → both) surviving a kill."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from deepsmlm.build import build_psf, pupil_grid
from deepsmlm.design.phase_models import (
    quantisation_penalty,
    quantise,
    range_penalty,
    smoothness_penalty,
)
from deepsmlm.optics.psf_shape import (
    energy_radius_nm,
    excess_distance_nm,
    principal_axis_deg,
    rms_radius_nm,
    unwrap_deg,
)

from .test_design import tiny_design_experiment

SRC = Path(__file__).resolve().parents[1] / "src"


def gaussian_image(sigma_x_px, sigma_y_px=None, angle_rad=0.0, n=81, centre=(40.3, 39.8),
                   pixel_nm=100.0):
    """An elliptical Gaussian integrated over each pixel (4×4 sub-samples), photons sum 1."""
    sigma_y_px = sigma_x_px if sigma_y_px is None else sigma_y_px
    sub = (torch.arange(4, dtype=torch.float64) + 0.5) / 4 - 0.5
    i = torch.arange(n, dtype=torch.float64)
    y = (i[:, None, None, None] + sub[None, None, :, None]) - centre[1]
    x = (i[None, :, None, None] + sub[None, None, None, :]) - centre[0]
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    u, v = c * x + s * y, -s * x + c * y
    img = torch.exp(-0.5 * ((u / sigma_x_px) ** 2 + (v / sigma_y_px) ** 2)).mean((-2, -1))
    return img / img.sum()


@pytest.mark.parametrize("sigma_px", [1.5, 3.0, 5.0])
def test_energy_radius_of_a_gaussian_is_the_analytic_radius(sigma_px):
    """80 % of a 2D Gaussian lies within σ·sqrt(−2 ln 0.2). Binning into pixels and the
    measure's even spread of each pixel's photons over its area each add px²/12 to the
    variance (Sheppard), which the comparison includes (0.2 % of the radius at 6 px)."""
    pixel_nm = 100.0
    img = gaussian_image(sigma_px, pixel_nm=pixel_nm)
    sigma_eff_nm = math.sqrt(sigma_px ** 2 + 2.0 / 12.0) * pixel_nm
    expected = sigma_eff_nm * math.sqrt(-2.0 * math.log(0.2))
    assert float(energy_radius_nm(img, pixel_nm)) == pytest.approx(expected, rel=0.01)
    # 50 %: the median radius σ·sqrt(2 ln 2)
    assert float(energy_radius_nm(img, pixel_nm, 0.5)) == pytest.approx(
        sigma_eff_nm * math.sqrt(2 * math.log(2)), rel=0.015)
    # the RMS radius takes each pixel at its centre: binning alone, σ² + px²/12 per axis
    assert float(rms_radius_nm(img, pixel_nm)) == pytest.approx(
        math.sqrt(2 * (sigma_px ** 2 + 1.0 / 12.0)) * pixel_nm, rel=0.005)


def test_energy_radius_grows_with_the_spot_and_batches():
    imgs = torch.stack([gaussian_image(s) for s in (1.5, 3.0, 4.5)])
    r = energy_radius_nm(imgs, 100.0)
    assert r.shape == (3,) and bool((r[1:] > r[:-1]).all())
    with pytest.raises(ValueError):
        energy_radius_nm(imgs, 100.0, 1.0)


@pytest.mark.parametrize("angle_deg", [-60.0, 0.0, 25.0, 80.0])
def test_principal_axis_of_an_elongated_spot_is_its_long_axis(angle_deg):
    img = gaussian_image(4.0, 2.0, math.radians(angle_deg))
    ang, el = principal_axis_deg(img)
    assert float(ang) == pytest.approx(angle_deg, abs=0.5)
    assert float(el) == pytest.approx(1 - 1 / 4, abs=0.02)  # λ ratio = (σ_min/σ_max)²
    _, round_el = principal_axis_deg(gaussian_image(3.0))
    assert float(round_el) < 0.01


def test_unwrap_reads_a_steady_rotation_through_the_axis_period():
    turning = np.array([60.0, 80.0, -80.0, -60.0, -40.0])  # +20° per step through ±90°
    assert np.allclose(np.diff(unwrap_deg(turning)), 20.0)


def test_excess_distance_is_zero_inside_and_the_distance_outside():
    small = gaussian_image(1.0)  # all photons within ~400 nm
    assert float(excess_distance_nm(small, 100.0, 2000.0, softness_nm=10.0)) < 1.0
    ring = torch.zeros(81, 81, dtype=torch.float64)
    ring[40, 10] = ring[40, 70] = 1.0  # two points 3 µm from their centroid
    assert float(excess_distance_nm(ring, 100.0, 1000.0, softness_nm=1.0)) == pytest.approx(
        2000.0, abs=2.0)


def _aperture(n=16):
    y, x = torch.meshgrid(torch.arange(n) - (n - 1) / 2, torch.arange(n) - (n - 1) / 2,
                          indexing="ij")
    return ((x ** 2 + y ** 2) <= (n / 2) ** 2).double()


@pytest.mark.parametrize("name", ["smoothness", "range", "quantisation"])
def test_pixel_mask_regularisers_have_the_finite_difference_gradient(name):
    ap = _aperture()
    g = torch.Generator().manual_seed(3)
    phase = (1.5 * torch.randn(16, 16, generator=g, dtype=torch.float64)).requires_grad_()
    fn = {"smoothness": lambda p: smoothness_penalty(p, ap),
          "range": lambda p: range_penalty(p, ap, 4.0),
          "quantisation": lambda p: quantisation_penalty(p, ap, 8)}[name]
    assert float(fn(phase).detach()) > 0  # the check below is not a check of zeros
    assert torch.autograd.gradcheck(fn, (phase,), eps=1e-6, atol=1e-7)


def test_quantisation_levels_are_free_and_the_rounding_is_to_the_nearest_level():
    ap = _aperture()
    levels = 8
    k = torch.randint(0, 64, (16, 16), generator=torch.Generator().manual_seed(0))
    on_levels = k.double() * 2 * math.pi / levels - 4 * math.pi  # any wrap of a level
    assert float(quantisation_penalty(on_levels, ap, levels)) == pytest.approx(0.0, abs=1e-20)
    halfway = on_levels + math.pi / levels
    assert float(quantisation_penalty(halfway, ap, levels)) == pytest.approx(1.0)
    q = quantise(on_levels + 0.3 * math.pi / levels, levels)
    assert torch.allclose(q, torch.remainder(on_levels, 2 * math.pi), atol=1e-9)
    assert float(q.min()) >= 0 and float(q.max()) < 2 * math.pi


def test_footprint_term_makes_the_fisher_design_more_compact():
    """Same start, same steps: the design with the footprint term ends with a smaller mean
    excess distance than the one without."""
    from deepsmlm.build import build_camera
    from deepsmlm.design.end_to_end import footprint_term
    from deepsmlm.design.fisher import design_by_crlb, mean_excess_um
    from deepsmlm.design.phase_models import ZernikePhase

    ends = {}
    for w in (0.0, 200.0):
        exp = tiny_design_experiment(footprint_weight=w, footprint_radius_nm=300.0)
        psf = build_psf(exp)
        grid = pupil_grid(exp.optics)
        phase = ZernikePhase(grid, tuple(range(5, 12)),
                             0.05 * torch.randn(7, generator=torch.Generator().manual_seed(0)))
        z = torch.linspace(-500.0, 500.0, 3)
        reg = footprint_term(w, 300.0, psf, z) if w else None
        design_by_crlb(psf, phase, z, 2000.0, 10.0, build_camera(exp), steps=15, lr=0.1,
                       regulariser=reg, progress=False)
        with torch.no_grad():
            ends[w] = float(mean_excess_um(psf, z, 300.0))
    assert ends[200.0] < ends[0.0]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_design_from_scratch_runs_its_stages_and_resumes_after_kill_9(tmp_path):
    """start: crlb with a warm-up: killed while the network trains alone, --resume keeps the
    Fisher mask, finishes the warm-up, runs the joint stage and writes the design."""
    exp = tiny_design_experiment(start="crlb", parameterization="pixels", crlb_steps=4,
                                 crlb_z_samples=3, zernike_noll=[5, 11], footprint_weight=10.0,
                                 warmup_minutes=0.25, height_levels=8, quantisation_weight=0.01)
    d = exp.to_dict()
    d["training"].update(max_epochs=10_000, checkpoint_every_steps=2)
    path = tmp_path / "scratch.yaml"
    path.write_text(yaml.safe_dump(d))
    out = tmp_path / "d"
    cmd = [sys.executable, "-m", "deepsmlm.cli", "design", str(path), "--out", str(out),
           "--quiet", "--max-minutes", "2"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    warm_ckpt = out / "warmup" / "checkpoint" / "last.safetensors"
    try:
        t0 = time.time()
        while not warm_ckpt.is_file() and time.time() - t0 < 120 and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the design ended before its warm-up could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    fisher = np.load(out / "start" / "mask.npy")
    assert np.abs(fisher).max() > 0  # the Fisher stage left the clear aperture
    assert not (out / "warmup" / "warmup.json").exists() and not (out / "design.json").exists()
    r = subprocess.run([sys.executable, "-m", "deepsmlm.cli", "design", "--resume", "--out",
                        str(out), "--quiet", "--max-minutes", "0.4"], env=_env(),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert np.array_equal(np.load(out / "start" / "mask.npy"), fisher)  # not redone
    assert (out / "warmup" / "warmup.json").is_file()
    s = json.loads((out / "design.json").read_text())
    assert s["start"] == "crlb" and s["init_model"] == str(out / "warmup")
    learned = np.load(out / "mask.npy")
    assert not np.allclose(learned, fisher)  # the joint stage moved the pixels
    for name in ("mask_levels.npy", "footprint.png", "mask_slm.tif"):
        assert (out / name).is_file(), name
    levels = np.load(out / "mask_levels.npy")
    inside = np.abs(fisher) > 0
    step = 2 * math.pi / 8
    assert np.allclose(levels[inside] / step, np.round(levels[inside] / step), atol=1e-6)
    shape = s["shape"]
    assert len(shape["z_nm"]) == len(shape["learned"]["radius80_nm"]) == 9
    assert s["mean_crlb_quantised_nm"] > 0


def test_render_on_a_device_gives_the_same_frames_and_mask_gradient():
    """RenderOn (what --device cuda uses) on the CPU: same image, same gradient in the mask
    as rendering directly; a GPU run of the same is benchmarks/psf_device_check.py's."""
    from deepsmlm.design.end_to_end import RenderOn
    from deepsmlm.design.phase_models import PixelPhase

    exp = tiny_design_experiment()
    grads = []
    for wrap in (False, True):
        psf = build_psf(exp)
        phase = PixelPhase(pupil_grid(exp.optics),
                           0.3 * torch.randn(24, 24, generator=torch.Generator().manual_seed(1)))
        psf.set_mask_source(phase)
        target = RenderOn(psf, "cpu") if wrap else psf
        xyz = torch.tensor([[600.0, 700.0, -200.0], [900.0, 800.0, 300.0]])
        img = target.render(xyz, torch.tensor([1000.0, 2000.0]), torch.tensor([0, 1]),
                            (2, 16, 16))
        (img ** 2).sum().backward()
        grads.append((img.detach(), phase.phase.grad.clone()))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    assert float(grads[1][1].abs().max()) > 0


def test_a_crlb_objective_with_start_crlb_leaves_the_clear_aperture(tmp_path):
    """start: crlb begins at the clear aperture, a saddle of the CRLB: the design seeds it
    as it does start: clear, and lowers the bound."""
    from deepsmlm.design.end_to_end import design_crlb

    exp = tiny_design_experiment(start="crlb", crlb_steps=8, crlb_z_samples=3,
                                 zernike_noll=[5, 11])
    r = design_crlb(exp, tmp_path / "c", progress=False)
    assert r["mean_crlb_nm"] < r["mean_crlb_start_nm"]
    assert float(r["phase"].abs().max()) > 0.01


def test_joint_footprint_term_keeps_the_end_to_end_mask_more_compact(tmp_path):
    """Same seed, same steps: the end-to-end design with joint_footprint_weight ends with a
    smaller mean excess distance than the one without."""
    from deepsmlm.design.end_to_end import design_end_to_end
    from deepsmlm.design.fisher import mean_excess_um

    ends = {}
    for w in (0.0, 50.0):
        exp = tiny_design_experiment(parameterization="pixels", joint_footprint_weight=w,
                                     footprint_radius_nm=300.0, mask_learning_rate=0.1)
        r = design_end_to_end(exp, tmp_path / f"w{w}", progress=False)
        psf = build_psf(exp)
        with torch.no_grad():
            psf.set_mask_phase(r["phase"])
            ends[w] = float(mean_excess_um(psf, torch.linspace(-500.0, 500.0, 5), 300.0))
    assert ends[50.0] < ends[0.0]
