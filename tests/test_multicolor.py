"""Multicolor (issue 14): image formation at several wavelengths, species in the emitter
streams, the class term of the mixture loss, and a classifier that learns colours."""

import math

import numpy as np
import pytest
import torch

from deepsmlm.build import build_psf, emitter_stream, training_emitters
from deepsmlm.config import experiment_from_dict
from deepsmlm.errors import UserError
from deepsmlm.losses import mixture_loss
from deepsmlm.optics.masks import zernike_mask
from deepsmlm.optics.multicolor import fused_silica_index, mask_phase_scale
from deepsmlm.optics.psf import PupilPSF
from deepsmlm.optics.pupil import PupilGrid


def _exp(species, **optics):
    return experiment_from_dict({
        "optics": {"wavelength_nm": 600, "na": 1.4, "n_immersion": 1.518, "n_sample": 1.518,
                   "pixel_size_nm": 20, "patch_px": 61, "pupil_grid_px": 64, **optics},
        "emitters": {"species": species}})


TWO = [{"name": "blue", "wavelength_nm": 500}, {"name": "red", "wavelength_nm": 700}]


def _rms_radius_nm(img: np.ndarray, px: float) -> float:
    """√(second moment) of an image around its centroid."""
    r, c = np.indices(img.shape)
    w = img / img.sum()
    cy, cx = (w * r).sum(), (w * c).sum()
    return px * math.sqrt((w * ((r - cy) ** 2 + (c - cx) ** 2)).sum())


def _centred(psf, n: int):
    c = (psf.patch_px // 2 + 0.5) * psf.pixel_size_nm
    return torch.tensor([[c, c, 0.0]] * n)


def test_clear_aperture_psf_width_scales_with_wavelength():
    """The Airy core's area above half maximum grows as λ² (its FWHM ≈ 0.51 λ/NA)."""
    psf = build_psf(_exp(TWO, pixel_size_nm=10))
    img, _ = psf.patches(_centred(psf, 2), torch.ones(2), torch.tensor([0, 1]))
    area = [float((v > v.max() / 2).sum()) for v in img]
    assert math.sqrt(area[1] / area[0]) == pytest.approx(700 / 500, rel=0.03)
    fwhm_nm = [2 * 10 * math.sqrt(a / math.pi) for a in area]
    assert fwhm_nm[0] == pytest.approx(0.51 * 500 / 1.4, rel=0.06)
    core = [_rms_radius_nm(v[20:41, 20:41].numpy(), 10.0) for v in img]
    assert core[1] > core[0]


def test_each_species_renders_the_single_colour_psf_of_its_wavelength():
    """A species' PSF is the pupil model built for its λ with the mask scaled by λ_d/λ."""
    noll = {6: 0.8, 8: -0.5}
    exp = _exp(TWO, mask={"kind": "zernike", "noll": noll})
    psf = build_psf(exp)
    xyz = torch.tensor([[620.0, 640.0, 150.0]])
    for k, lam in enumerate((500.0, 700.0)):
        grid = PupilGrid(64, lam, 1.4)
        ref = PupilPSF(grid, 1.518, 1.518, 0.0, 20.0, 61,
                       mask_phase=zernike_mask(grid, noll) * (600.0 / lam))
        mine, o1 = psf.patches(xyz, torch.tensor([1000.0]), torch.tensor([k]))
        theirs, o2 = ref.patches(xyz, torch.tensor([1000.0]))
        assert torch.equal(o1, o2)
        assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-4)


def test_mask_phase_at_another_wavelength_follows_the_thin_element_law():
    exp = _exp(TWO, mask={"kind": "zernike", "noll": {5: 1.0}})
    psf = build_psf(exp)
    base = psf.current_mask_phase()
    for child, lam in zip(psf.psfs, (500.0, 700.0), strict=True):
        assert torch.allclose(child.current_mask_phase(), base * 600.0 / lam, atol=1e-6)
    # with fused silica's dispersion the shorter wavelength sees a little more phase
    assert fused_silica_index(587.56) == pytest.approx(1.4585, abs=2e-4)  # n_d (Malitson)
    assert fused_silica_index(656.27) == pytest.approx(1.4564, abs=2e-4)  # n_C
    s = mask_phase_scale(500.0, 600.0, "fused-silica")
    n = fused_silica_index
    assert s == pytest.approx(600 / 500 * (n(500) - 1) / (n(600) - 1), rel=1e-12)
    assert s > 600 / 500
    disp = build_psf(_exp(TWO, mask={"kind": "zernike", "noll": {5: 1.0}},
                          mask_dispersion="fused-silica"))
    assert torch.allclose(disp.psfs[0].current_mask_phase(), base * s, atol=1e-6)


def test_photons_are_conserved_at_every_wavelength():
    """A 10 µm square patch holds each PSF's photons but for the Airy wings: at least the
    encircled energy of its inscribed 5 µm circle, 1 − EE ≈ 2/(π·v), v = 2π·NA·r/λ
    (0.7 % at 500 nm, 1.2 % at 800 nm), and never more than the emitter's photons."""
    psf = build_psf(_exp(TWO + [{"name": "nir", "wavelength_nm": 800}], pixel_size_nm=100,
                         patch_px=101))
    img, _ = psf.patches(_centred(psf, 3), torch.full((3,), 5000.0), torch.tensor([0, 1, 2]))
    sums = img.sum((1, 2)).numpy() / 5000.0
    wings = [2 / (math.pi * 2 * math.pi * 1.4 * 5000 / lam) for lam in (500, 700, 800)]
    assert np.all(sums >= 1 - np.array(wings) - 1e-3) and np.all(sums <= 1 + 5e-4)
    assert sums[0] > sums[1] > sums[2]  # a longer wavelength spreads further


def test_aberrations_are_optical_path_differences():
    exp = _exp(TWO, aberrations={"noll": {11: 0.3}})
    psf = build_psf(exp)
    ab = psf.aberration_phase
    for child, lam in zip(psf.psfs, (500.0, 700.0), strict=True):
        assert torch.allclose(child.aberration_phase, ab * 600.0 / lam, atol=1e-6)
    psf.aberration_phase = ab * 2  # what the training's aberration jitter does
    assert torch.allclose(psf.psfs[1].aberration_phase, 2 * ab * 600 / 700, atol=1e-6)


def test_a_multicolor_psf_needs_species_and_refuses_unknown_ones():
    psf = build_psf(_exp(TWO))
    with pytest.raises(ValueError, match="species"):
        psf.render(_centred(psf, 1), torch.ones(1), torch.zeros(1, dtype=torch.long),
                   (1, 64, 64))
    with pytest.raises(ValueError, match="species index"):
        psf.patches(_centred(psf, 1), torch.ones(1), torch.tensor([2]))


def test_species_follow_their_fractions_photons_and_fluorophores():
    exp = experiment_from_dict({
        "emitters": {"density_per_um2": 3.0, "blinking": {"duty_cycle": 0.2},
                     "species": [{"name": "a", "wavelength_nm": 520, "fraction": 1},
                                 {"name": "b", "wavelength_nm": 680, "fraction": 3,
                                  "photons": {"distribution": "constant", "mean": 777}}]}})
    stream = emitter_stream(exp, torch.Generator().manual_seed(1))
    first, second = stream.take(20), stream.take(20)
    both = [first, second]
    species = torch.cat([e.species for e in both])
    ids = torch.cat([e.id for e in both])
    # a fluorophore keeps its dye across frames and chunks
    for i in ids.unique()[:50]:
        assert len(species[ids == i].unique()) == 1
    pool = {int(i): int(s) for i, s in zip(ids, species, strict=True)}
    frac_b = np.mean(list(pool.values()))
    n = len(pool)
    assert abs(frac_b - 0.75) < 4 * math.sqrt(0.75 * 0.25 / n)
    photons = torch.cat([e.photons for e in both])
    assert torch.all(photons[species == 1] == 777)
    assert torch.all(photons[species == 0] != 777)
    # training frames (independent emitters) carry species too
    t = training_emitters(exp)(8, torch.Generator().manual_seed(2))
    assert t.species is not None and len(t.species) == len(t)


def test_class_term_of_the_mixture_loss_worked_by_hand():
    """One pixel, one emitter: the loss gains exactly −log q(true class)."""
    p = torch.tensor([[0.9]])
    mu, sigma = torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[0.5, 0.5]]])
    truth, mask = torch.tensor([[[1.2, 1.9]]]), torch.tensor([[True]])
    q = torch.tensor([[[0.7, 0.2, 0.1]]])
    plain = mixture_loss(p, mu, sigma, truth, mask)
    for c, qc in enumerate((0.7, 0.2, 0.1)):
        with_class = mixture_loss(p, mu, sigma, truth, mask, torch.log(q), torch.tensor([[c]]))
        assert float(with_class - plain) == pytest.approx(-math.log(qc), rel=1e-5)


def test_the_class_term_credits_the_pixel_that_holds_the_emitter():
    """Two pixels, one near the emitter: the gradient on the class logits is carried by
    the near pixel (its responsibility), the far one hardly moves."""
    p = torch.tensor([[0.5, 0.5]])
    mu = torch.tensor([[[0.0, 0.0], [5.0, 5.0]]])
    sigma = torch.full((1, 2, 2), 0.3)
    logits = torch.zeros(1, 2, 2, requires_grad=True)
    loss = mixture_loss(p, mu, sigma, torch.tensor([[[0.1, 0.0]]]), torch.tensor([[True]]),
                        torch.log_softmax(logits, -1), torch.tensor([[1]]))
    loss.backward()
    g = logits.grad[0]
    assert float(g[0, 1]) < -0.4 and float(g[0, 0]) > 0.4  # raise class 1 at the near pixel
    assert float(g[1].abs().max()) < 1e-6


def test_multicolor_method_needs_two_species():
    from deepsmlm.build import build_method, build_scene

    exp = experiment_from_dict({"emitters": {"species": TWO[:1]},
                                "training": {"model": "multicolor"}})
    with pytest.raises(UserError, match="two or more emitters.species"):
        build_method(exp).card_settings(exp.training, build_scene(exp))


def test_duplicate_species_names_are_refused():
    with pytest.raises(UserError, match="names must differ"):
        experiment_from_dict({"emitters": {"species": [TWO[0], TWO[0]]}})


def test_gradient_reaches_the_shared_mask_through_every_wavelength():
    from deepsmlm.design.phase_models import PixelPhase

    exp = _exp(TWO)
    psf = build_psf(exp)
    phase = PixelPhase(psf.grid, torch.zeros(64, 64))
    psf.set_mask_source(phase)
    xyz = torch.tensor([[610.0, 610.0, 0.0]])
    grads = []
    for k in range(2):
        phase.zero_grad()
        img, _ = psf.patches(xyz, torch.tensor([1000.0]), torch.tensor([k]))
        (img ** 2).sum().backward()
        grads.append(next(phase.parameters()).grad.clone())
    assert all(float(g.abs().sum()) > 0 for g in grads)
    assert not torch.allclose(grads[0], grads[1])  # each λ sees the mask differently


def test_a_classifier_learns_trivially_separable_colours(tmp_path):
    """450 vs 900 nm, bright emitters: a tiny multicolor network tells them apart."""
    from deepsmlm.api import simulate
    from deepsmlm.evaluation.matching import match
    from deepsmlm.inference import Predictor, localize_chunk
    from deepsmlm.training.train import train

    exp = experiment_from_dict({
        "frame": {"height_px": 32, "width_px": 32},
        "optics": {"wavelength_nm": 650, "na": 1.4, "n_sample": 1.518, "pixel_size_nm": 100},
        "emitters": {"density_per_um2": 0.5, "photons": {"lo": 4000, "hi": 6000},
                     "species": [{"name": "violet", "wavelength_nm": 450},
                                 {"name": "infrared", "wavelength_nm": 900}]},
        "background": {"photons_per_px": [10, 10]},
        "training": {"model": "multicolor", "width": 8, "seed": 1, "patch_px": 16,
                     "batch_size": 16, "steps_per_epoch": 50, "max_epochs": 20,
                     "val_frames": 16, "tune_frames": 16, "learning_rate": 3e-3}})
    train(exp, tmp_path / "m", progress=False)
    movie = simulate(exp, 16, seed=5)
    pred = Predictor.load(tmp_path / "m")
    found = localize_chunk(pred, movie.frames_adu.astype(np.float32), 0).emitters.numpy()
    truth = movie.emitters.numpy()
    m = match(truth["frame"], truth["xyz_nm"], found["frame"], found["xyz_nm"], 250.0, 500.0,
              "greedy", None, 0)
    assert len(m.gt_index) >= 0.7 * len(truth["frame"])
    right = found["species"][m.pred_index] == truth["species"][m.gt_index]
    assert right.mean() > 0.9


def _triples(exp):
    from deepsmlm.design.end_to_end import _colour_objective

    psf, objective = _colour_objective(exp, torch.tensor([0.0]), 1000.0, 0.0)
    return psf, objective, [tuple(psf.psfs[3 * k:3 * k + 3]) for k in range(2)]


def test_colour_crlb_falls_as_one_over_root_photons():
    """No background, Poisson noise: the Fisher information is ∝ N, σ_λ ∝ 1/√N."""
    from deepsmlm.design.fisher import colour_crlb

    exp = _exp(TWO, pixel_size_nm=100, patch_px=21, n_sample=1.33, focus_nm=200)
    _, _, triples = _triples(exp)
    z = torch.tensor([100.0, 300.0])
    with torch.no_grad():
        s1, xyz1 = colour_crlb(triples, z, 1000.0, 0.0)
        s4, _ = colour_crlb(triples, z, 4000.0, 0.0)
    assert torch.all(torch.isfinite(s1)) and torch.all(s1 > 0)
    assert torch.allclose(s1 / s4, torch.full_like(s1, 2.0), rtol=0.02)
    # the lateral bound of the joint estimate stays that of a clear aperture (tens of nm)
    assert torch.all((xyz1[..., :2] > 2) & (xyz1[..., :2] < 30))


def test_a_colour_crlb_design_lowers_its_objective(tmp_path):
    from deepsmlm.api import run_design

    four = TWO + [{"name": "green", "wavelength_nm": 560}, {"name": "orange", "wavelength_nm": 620}]
    exp = _exp(four, pixel_size_nm=100, patch_px=21, n_sample=1.33, focus_nm=200)
    exp.design.crlb_steps, exp.design.crlb_z_samples = 4, 2
    exp.design.zernike_noll = (5, 11)
    r = run_design(exp, tmp_path / "d", objective="crlb", progress=False)
    assert r["objective"] == "crlb-colour"
    assert r["mean_colour_bound"] < 0.9 * r["mean_colour_bound_start"]
    assert np.any(np.abs(r["coefficients_rad"]) > 0.01)  # the mask moved off the start
    assert (tmp_path / "d" / "mask.npy").is_file() and (tmp_path / "d" / "psf.png").is_file()


def test_species_weight_scales_the_class_term_of_the_method_loss():
    """One pixel, one emitter: loss(w) = loss without classes − w·log q(true species)."""
    from deepsmlm.methods import get
    from deepsmlm.models.fastloc import channels

    method = get("multicolor")
    raw = torch.randn(1, len(channels(False, 3)), 1, 1, generator=torch.Generator().manual_seed(4))
    targets = {"truth": torch.tensor([[[0.4, 0.6, 0.5]]]), "mask": torch.tensor([[True]]),
               "background": None, "species": torch.tensor([[2]])}
    log_q = float(torch.log_softmax(raw[0, -3:, 0, 0], 0)[2])
    losses = [float(method.loss(method.section.model_validate(
        {"model": "multicolor", "species_weight": w}))(raw, targets)) for w in (1.0, 3.0)]
    assert losses[1] - losses[0] == pytest.approx(-2.0 * log_q, rel=1e-4)


def test_psf_and_crlb_commands_take_a_species(tmp_path):
    """`deepsmlm psf/crlb --species NAME` on a multicolor experiment: that species' PSF (a
    longer wavelength, a wider spot, a larger CRLB); an unknown name is one clear error."""
    import yaml

    from deepsmlm.cli import main

    exp = {"frame": {"height_px": 16, "width_px": 16},
           "optics": {"wavelength_nm": 600, "pixel_size_nm": 50},
           "emitters": {"species": TWO}}
    (tmp_path / "mc.yaml").write_text(yaml.safe_dump(exp))
    from deepsmlm.steps.crlb import crlb_table
    from deepsmlm.steps.psf import psf_stack

    e = experiment_from_dict(exp)
    blue, red = (psf_stack(e, np.array([0.0]), 21, s)[0] for s in ("blue", "red"))
    assert blue.max() > 1.5 * red.max()  # (700/500)² ≈ 2 in peak height
    bounds = [crlb_table(e, 1000.0, 10.0, np.array([0.0]), s)["crlb_x"][0]
              for s in ("blue", "red")]
    assert bounds[1] > bounds[0]
    assert main(["psf", str(tmp_path / "mc.yaml"), "--out", str(tmp_path / "p"),
                 "--species", "red"]) == 0
    assert main(["crlb", str(tmp_path / "mc.yaml"), "--photons", "100", "--background", "1",
                 "--out", str(tmp_path / "c"), "--species", "green"]) == 2
    assert not (tmp_path / "c").exists()


def _tiny_colour_design(tmp_path, name, **design):
    from deepsmlm.api import run_design

    exp = experiment_from_dict({
        "frame": {"height_px": 16, "width_px": 16},
        "optics": {"wavelength_nm": 600, "na": 1.4, "n_sample": 1.33, "pixel_size_nm": 100,
                   "patch_px": 15, "pupil_grid_px": 24, "focus_nm": 150},
        "emitters": {"density_per_um2": 1.0, "z_range_nm": [0, 300],
                     "photons": {"lo": 2000, "hi": 4000},
                     "species": [{"name": "green", "wavelength_nm": 560},
                                 {"name": "red", "wavelength_nm": 680}]},
        "background": {"photons_per_px": [10, 10]},
        "training": {"model": "multicolor", "width": 8, "seed": 2, "patch_px": 16,
                     "batch_size": 4, "steps_per_epoch": 4, "max_epochs": 2,
                     "val_frames": 4},
        "design": {"parameterization": "zernike", "zernike_noll": [5, 15],
                   "mask_learning_rate": 0.1, "crlb_z_samples": 3, **design}})
    report = run_design(exp, tmp_path / name, progress=False)
    return exp, report, torch.from_numpy(np.load(tmp_path / name / "mask.npy")).float()


def test_joint_colour_term_moves_the_end_to_end_mask_towards_colour(tmp_path):
    """Same seed, same steps: with design.joint_colour_weight the end-to-end mask ends with
    a lower colour objective (σ_λ/Δλ) than without it, and the design reports it."""
    from deepsmlm.design.end_to_end import colour_objectives_of

    ends = {}
    for w in (0.0, 100.0):
        exp, report, phase = _tiny_colour_design(tmp_path, f"w{w}", joint_colour_weight=w)
        ends[w], = colour_objectives_of(exp, [phase])
        assert report["mean_colour_bound_learned"] == pytest.approx(ends[w], rel=1e-4)
    clear, = colour_objectives_of(exp, [torch.zeros_like(phase)])
    assert report["mean_colour_bound_start"] == pytest.approx(clear, rel=1e-4)
    assert ends[100.0] < 0.95 * min(ends[0.0], clear)


def test_joint_colour_term_needs_species(tmp_path):
    from deepsmlm.design.end_to_end import design_end_to_end

    from .test_design import tiny_design_experiment

    exp = tiny_design_experiment(joint_colour_weight=1.0)
    with pytest.raises(UserError, match="joint_colour_weight"):
        design_end_to_end(exp, tmp_path / "d", progress=False)
    assert not (tmp_path / "d").exists()
