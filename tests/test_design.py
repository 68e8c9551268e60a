"""Mask design: gradients reach the mask, a design step helps, masks round-trip, CRLB design."""

import math

import numpy as np
import pytest
import torch

from deepsmlm.build import build_camera, build_psf, pupil_grid
from deepsmlm.config import experiment_from_dict, load_experiment
from deepsmlm.design.fisher import crlb_xyz_nm, design_by_crlb, mean_crlb_nm
from deepsmlm.design.outputs import slm_levels, write_mask
from deepsmlm.design.phase_models import (
    PixelPhase,
    ZernikePhase,
    range_penalty,
    smoothness_penalty,
)
from deepsmlm.models.deepstorm3d import bounded

from .conftest import CONFIGS

TINY_TRAINING = dict(model="deepstorm3d", upsampling=1, depth_planes=8, width=8,
                     dilations=[1, 2], patch_px=16, margin_px=2, batch_size=4,
                     steps_per_epoch=4, max_epochs=2, val_frames=4, n_per_patch_range=[2, 4],
                     target_scale=100.0, learning_rate=0.003)


def tiny_design_experiment(**design) -> "Experiment":  # noqa: F821
    """A 24-px pupil, 15-px PSF patches, clear start, 1 µm range: seconds per step."""
    d = load_experiment(CONFIGS / "3d-astigmatic.yaml").to_dict()
    d["optics"].update(psf="pupil", pupil_grid_px=24, patch_px=15, pixel_oversampling=1,
                       mask={"kind": "clear"}, aberrations={"noll": {}})
    d["emitters"]["z_range_nm"] = [-500.0, 500.0]
    d["training"] = dict(TINY_TRAINING)
    d["design"] = {"mask_learning_rate": 0.05, **design}
    return experiment_from_dict(d)


def _rendered_loss(psf, weights):
    """A smooth scalar of the images of three emitters: Σ w·I."""
    xyz = torch.tensor([[750.0, 760.0, -300.0], [700.0, 720.0, 0.0], [760.0, 700.0, 350.0]])
    img, _ = psf.patches(xyz, torch.full((3,), 1000.0))
    return (img * weights).sum()


@pytest.mark.parametrize("kind", ["pixels", "zernike"])
def test_gradient_reaches_every_mask_parameter_with_the_finite_difference_sign(kind):
    exp = tiny_design_experiment()
    psf = build_psf(exp)
    grid = pupil_grid(exp.optics)
    g = torch.Generator().manual_seed(0)
    start = 0.3 * torch.randn(grid.n_px, grid.n_px, generator=g)
    model = PixelPhase(grid, start) if kind == "pixels" else ZernikePhase(
        grid, tuple(range(2, 16)), 0.2 * torch.randn(14, generator=g))
    psf.set_mask_source(model)
    weights = torch.rand(3, psf.patch_px, psf.patch_px, generator=g)
    _rendered_loss(psf, weights).backward()
    param = next(model.parameters())
    grad = param.grad.clone()
    inside = grid.aperture(torch.float32).bool() if kind == "pixels" else torch.ones_like(
        grad, dtype=torch.bool)
    assert bool((grad[inside] != 0).all()), "every parameter that carries light gets a gradient"
    if kind == "pixels":
        assert bool((grad[~inside] == 0).all())
    # finite differences (float64 not needed: steps of 1e-2 rad, compare signs and size)
    idx = torch.nonzero(inside.flatten()).squeeze(1)
    pick = idx[torch.argsort(grad.flatten()[idx].abs(), descending=True)[:6]]
    for i in pick.tolist():
        with torch.no_grad():
            flat = param.view(-1)
            old = float(flat[i])
            flat[i] = old + 1e-2
            up = float(_rendered_loss(psf, weights))
            flat[i] = old - 1e-2
            down = float(_rendered_loss(psf, weights))
            flat[i] = old
        fd = (up - down) / 2e-2
        assert math.copysign(1, fd) == math.copysign(1, float(grad.view(-1)[i]))
        assert fd == pytest.approx(float(grad.view(-1)[i]), rel=0.05)


def test_one_design_step_changes_the_mask_and_lowers_the_loss():
    from deepsmlm import methods
    from deepsmlm.build import build_patch_sampler
    from deepsmlm.data.normalizer import Normalizer
    from deepsmlm.design.end_to_end import EndToEnd, phase_model
    from deepsmlm.training.train import new_card, new_network

    exp = tiny_design_experiment()
    sampler = build_patch_sampler(exp, differentiable=True)
    phase = phase_model(exp)
    sampler.simulator.psf.set_mask_source(phase)
    with torch.no_grad():
        probe = sampler(8, torch.Generator().manual_seed(1)).inputs_adu
    norm = Normalizer.fit("photons", build_camera(exp), probe)
    model = EndToEnd(phase, new_network(new_card(exp, norm), exp.training.seed))
    model.eval()  # batch statistics out of the comparison
    crit = methods.get(exp.training.model).loss(exp.training)

    def loss():
        b = sampler(4, torch.Generator().manual_seed(7))  # same emitters and noise
        return crit(model.net(norm(b.inputs_adu)), b.targets)

    before_mask = phase().detach().clone()
    before = loss()
    opt = torch.optim.SGD([{"params": model.net.parameters(), "lr": 1e-6},
                           {"params": model.phase.parameters(), "lr": 1e-3}])
    before.backward()
    opt.step()
    after = float(loss().detach())
    assert not torch.equal(phase().detach(), before_mask)
    assert after < float(before.detach())


def test_saved_mask_reloads_through_the_experiment_file_and_gives_the_same_psf(tmp_path):
    exp = tiny_design_experiment()
    grid = pupil_grid(exp.optics)
    phase = ZernikePhase(grid, (5, 6, 7, 11), torch.tensor([0.8, -0.4, 0.6, 0.3]))()
    write_mask(phase, grid, tmp_path)
    assert (tmp_path / "mask_slm.tif").is_file()
    d = exp.to_dict()
    d["optics"]["mask"] = {"kind": "file", "path": str(tmp_path / "mask.npy")}  # radius: JSON
    reloaded = build_psf(experiment_from_dict(d))
    direct = build_psf(exp)
    direct.set_mask_phase(phase)
    xyz = torch.tensor([[700.0, 700.0, -250.0], [720.0, 690.0, 400.0]])
    a, _ = direct.patches(xyz, torch.ones(2))
    b, _ = reloaded.patches(xyz, torch.ones(2))
    assert torch.allclose(a, b, atol=1e-6 * float(a.max()))


def test_slm_levels_wrap_the_phase_to_8_bits():
    ap = np.ones((1, 5))
    phase = np.array([[0.0, math.pi, 2 * math.pi - 1e-6, -math.pi / 2, 4 * math.pi]])
    assert slm_levels(phase, ap).tolist() == [[0, 128, 255, 192, 0]]
    assert slm_levels(phase, np.zeros((1, 5))).tolist() == [[0] * 5]


def test_regularisers_ignore_2pi_wraps_and_measure_the_range():
    ap = torch.ones(4, 4)
    ramp = torch.arange(4.0)[None].repeat(4, 1) * 2 * math.pi  # steps of 2π
    assert float(smoothness_penalty(ramp, ap)) == pytest.approx(0.0, abs=1e-9)
    assert float(smoothness_penalty(ramp * 0.25, ap)) > 0
    assert float(range_penalty(ramp, ap, 6 * math.pi)) == pytest.approx(0.0)
    assert float(range_penalty(ramp, ap, 5 * math.pi)) == pytest.approx(math.pi ** 2)


def test_crlb_designer_lowers_the_mean_crlb_of_its_start():
    exp = tiny_design_experiment()
    psf = build_psf(exp)
    grid = pupil_grid(exp.optics)
    noll = tuple(range(5, 12))
    model = ZernikePhase(grid, noll, 0.05 * torch.ones(len(noll)))
    z = torch.linspace(-500, 500, 5)
    res = design_by_crlb(psf, model, z, 2000.0, 10.0, build_camera(exp), steps=15, lr=0.1,
                         progress=False)
    assert res.best_nm < 0.8 * res.start_nm
    with torch.no_grad():  # the model holds the best state, and it scores what was reported
        assert float(mean_crlb_nm(psf, z, 2000.0, 10.0, build_camera(exp))) == pytest.approx(
            res.best_nm, rel=1e-4)


def test_crlb_of_the_design_matches_the_reporting_crlb():
    """The differentiable bound equals evaluation.crlb's for the same PSF."""
    from deepsmlm.evaluation.crlb import crlb

    exp = tiny_design_experiment()
    psf = build_psf(exp)
    psf.set_mask_phase(ZernikePhase(pupil_grid(exp.optics), (6,), torch.tensor([1.0]))())
    z = torch.tensor([-300.0, 200.0])
    with torch.no_grad():
        ours = crlb_xyz_nm(psf, z, 3000.0, 20.0, build_camera(exp)).numpy()
    ref = crlb(psf, z.numpy(), 3000.0, 20.0, build_camera(exp))
    for i, k in enumerate("xyz"):
        np.testing.assert_allclose(ours[:, i], ref[f"crlb_{k}"], rtol=1e-3)


def test_bounded_output_passes_gradients_back_into_the_range():
    h = torch.tensor([-1.0, -1.0, 0.5, 2.0, 2.0], requires_grad=True)
    out = bounded(h, 1.0)
    assert out.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    out.backward(torch.tensor([-1.0, 1.0, 1.0, 1.0, -1.0]))
    # below 0: only a push upwards (grad < 0) passes; above the bound only a push down
    assert h.grad.tolist() == [-1.0, 0.0, 1.0, 1.0, 0.0]


def _write_tiny(tmp_path, **design):
    import yaml

    path = tmp_path / "design.yaml"
    path.write_text(yaml.safe_dump(tiny_design_experiment(**design).to_dict()))
    return path


def test_design_command_end_to_end_writes_a_loadable_mask_and_resumes(tmp_path):
    import json

    import tifffile

    from deepsmlm.cli import main

    exp_path = _write_tiny(tmp_path)
    out = tmp_path / "d"
    assert main(["design", str(exp_path), "--out", str(out), "--quiet"]) == 0
    for name in ("mask.npy", "mask.json", "mask_slm.tif", "mask.png", "psf.png", "curves.png",
                 "curves.csv", "design.json", "experiment.yaml", "weights.safetensors"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "design.json").read_text())
    assert summary["epochs"] == 2 and summary["samples"] == 2 * 4 * 4
    mask = np.load(out / "mask.npy")
    assert mask.shape == (24, 24) and np.abs(mask).max() > 0  # the clear start has moved
    assert json.loads((out / "mask.json").read_text())["pupil_radius_px"] == 12.0
    assert tifffile.imread(out / "mask_slm.tif").dtype == np.uint8
    # --resume goes on from the checkpoint (max_epochs raised in the saved experiment)
    saved = load_experiment(out / "experiment.yaml").to_dict()
    saved["training"]["max_epochs"] = 3
    import yaml

    (out / "experiment.yaml").write_text(yaml.safe_dump(saved))
    assert main(["design", "--resume", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "design.json").read_text())["epochs"] == 3
    # a design folder is not a model folder: one clear error, for --init-model and --resume
    assert main(["design", str(exp_path), "--out", str(tmp_path / "d2"), "--init-model",
                 str(out), "--quiet"]) == 2
    assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 2
    # the learned mask (the resumed run's best) drives a new experiment
    mask = np.load(out / "mask.npy")
    d = load_experiment(exp_path).to_dict()
    d["optics"]["mask"] = {"kind": "file", "path": str(out / "mask.npy")}
    psf = build_psf(experiment_from_dict(d))
    assert torch.allclose(psf.mask_phase, torch.from_numpy(mask).float(), atol=1e-5)


def test_design_command_crlb_objective(tmp_path):
    import json

    from deepsmlm.cli import main

    exp_path = _write_tiny(tmp_path, crlb_steps=10, crlb_z_samples=5, zernike_noll=[5, 11])
    out = tmp_path / "c"
    assert main(["design", str(exp_path), "--out", str(out), "--objective", "crlb",
                 "--quiet"]) == 0
    s = json.loads((out / "design.json").read_text())
    assert s["mean_crlb_nm"] < s["mean_crlb_start_nm"]
    assert len(s["coefficients_rad"]) == 7 and (out / "psf.png").is_file()


def test_crlb_design_takes_its_own_zernike_modes(tmp_path):
    """design.crlb_zernike_noll sets the Fisher design's modes; zernike_noll the others'."""
    from deepsmlm.design.end_to_end import design_crlb

    exp = tiny_design_experiment(crlb_steps=1, crlb_z_samples=2, zernike_noll=[5, 15],
                                 crlb_zernike_noll=[5, 8])
    r = design_crlb(exp, tmp_path / "c", progress=False)
    assert r["noll"] == [5, 6, 7, 8] and len(r["coefficients_rad"]) == 4


@pytest.mark.parametrize("edit, needle", [
    ({"optics": {"psf": "gaussian"}}, "optics.psf must be 'pupil'"),
    ({"design": {"zernike_noll": [9, 5]}}, "design.zernike_noll"),
    ({"design": {"mask_lr": 1}}, "design.mask_lr: unknown key"),
    ({"design": {"quantisation_weight": 0.1}}, "needs design.height_levels"),
    ({"design": {"start": "fisher"}}, "design.start"),
    ({"design": {"joint_colour_weight": 10}}, "needs two or more emitters.species"),
    ({"design": {"crlb_zernike_noll": [9, 5]}}, "design.crlb_zernike_noll"),
])
def test_design_bad_input_is_one_line_and_exit_2(tmp_path, edit, needle):
    import subprocess
    import sys

    import yaml

    d = tiny_design_experiment().to_dict()
    for section, values in edit.items():
        d[section].update(values)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(d))
    proc = subprocess.run([sys.executable, "-m", "deepsmlm.cli", "design", "bad.yaml", "--out",
                           "o", "--quiet"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "o" / "mask.npy").exists()


def test_design_can_start_from_a_trained_network_of_the_same_architecture(tmp_path):
    from deepsmlm.design.end_to_end import design_end_to_end
    from deepsmlm.errors import UserError
    from deepsmlm.io.tensors import load_tensors
    from deepsmlm.training.train import train

    exp = tiny_design_experiment()
    train(exp, tmp_path / "net", progress=False)
    trained = load_tensors(tmp_path / "net" / "weights.safetensors")
    d = exp.to_dict()
    d["training"]["max_epochs"] = 1
    d["training"]["learning_rate"] = 1e-12  # the network barely moves: its start shows
    r = design_end_to_end(experiment_from_dict(d), tmp_path / "d", init_model=tmp_path / "net",
                          progress=False)
    assert r["init_model"] == str(tmp_path / "net")
    after = load_tensors(tmp_path / "d" / "weights.safetensors")
    for k in ("stem.0.weight", "head.1.weight"):
        assert torch.allclose(after[f"net.{k}"], trained[k], atol=1e-6)
    d["training"]["width"] = 12
    with pytest.raises(UserError, match="width"):
        design_end_to_end(experiment_from_dict(d), tmp_path / "d2", init_model=tmp_path / "net",
                          progress=False)
    assert not (tmp_path / "d2").exists()


def test_a_bad_mask_sidecar_is_one_clear_error(tmp_path):
    from deepsmlm.errors import UserError

    np.save(tmp_path / "mask.npy", np.zeros((24, 24)))
    d = tiny_design_experiment().to_dict()
    d["optics"]["mask"] = {"kind": "file", "path": str(tmp_path / "mask.npy")}
    for bad in ('{"pupil_radius_px": NaN}', '{"pupil_radius_px": true}', "[1, 2]"):
        (tmp_path / "mask.json").write_text(bad)
        with pytest.raises(UserError, match="mask.json"):
            build_psf(experiment_from_dict(d))


def test_crlb_design_keeps_the_best_state_under_its_regulariser():
    exp = tiny_design_experiment()
    psf = build_psf(exp)
    grid = pupil_grid(exp.optics)
    ap = grid.aperture(torch.float32)
    model = ZernikePhase(grid, tuple(range(5, 12)), 0.05 * torch.ones(7))
    z = torch.linspace(-500, 500, 5)
    limit = 1.0  # rad peak to valley: far below what the CRLB alone would use

    def reg(phase):
        return 100.0 * range_penalty(phase, ap, limit)

    design_by_crlb(psf, model, z, 2000.0, 10.0, build_camera(exp), steps=20, lr=0.1,
                   regulariser=reg, progress=False)
    phase = model().detach()
    assert float(phase[ap > 0].max() - phase[ap > 0].min()) < limit + 0.3
