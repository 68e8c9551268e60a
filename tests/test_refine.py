"""``localize --refine``: maximum likelihood through the model's own PSF.

Physics first (the camera's noise as a shifted Poisson variable, recovery of known emitters,
σ that matches the scatter over noise draws), then the command: uncertainty columns, the
counts in localize.json, and --resume keeping the choice."""

import json

import numpy as np
import pytest
import torch
import yaml

from deepsmlm.camera import Camera
from deepsmlm.cli import main
from deepsmlm.evaluation.crlb import pixel_variance
from deepsmlm.io.localizations import read_csv
from deepsmlm.optics.psf import AstigmaticGaussianPSF, GaussianPSF, gather_patches
from deepsmlm.refine import crlb_nm, fit_frames, shifted_poisson

from .conftest import tiny_fastloc

EMCCD = Camera(qe=0.9, em_gain=300.0, read_noise_e=74.4, spurious_charge=0.002,
               e_per_adu=45.0, baseline_adu=100.0, bit_depth=16)
IDEAL = Camera(qe=1.0, em_gain=1.0, read_noise_e=0.0, spurious_charge=0.0, e_per_adu=1.0,
               baseline_adu=0.0, bit_depth=16)


@pytest.mark.parametrize("camera", [EMCCD, IDEAL,
                                    Camera(qe=0.8, em_gain=1.0, read_noise_e=1.6,
                                           spurious_charge=0.0, e_per_adu=0.5,
                                           baseline_adu=100.0, bit_depth=16)])
def test_the_shifted_poisson_has_the_cameras_variance(camera):
    a, r = shifted_poisson(camera)
    mu = torch.tensor([0.0, 3.0, 50.0, 2000.0])
    # var(d/a + r/a²) = v(μ)/a² must equal its mean λ = μ/a + r/a²
    torch.testing.assert_close(pixel_variance(mu, camera) / a ** 2, mu / a + r / a ** 2)
    if camera is IDEAL:
        assert (a, r) == (1.0, 0.0)


def test_gather_patches_reads_the_pixels_place_patches_writes():
    frames = torch.arange(2 * 6 * 7, dtype=torch.float32).view(2, 6, 7)
    origin = torch.tensor([[-1, 5], [2, 1]])
    vals, inside = gather_patches(frames, origin, torch.tensor([1, 0]), 3)
    assert vals[0, 0].eq(0).all() and not inside[0, 0].any()  # row −1: outside
    assert vals[0, 1, 0] == frames[1, 0, 5] and vals[0, 1, 1] == frames[1, 0, 6]
    assert not inside[0, 1, 2]  # column 7: outside
    torch.testing.assert_close(vals[1], frames[0, 2:5, 1:4])


def simulate(psf, xyz, photons, bg, shape, n_draws, seed, blur_px=0.0):
    from deepsmlm.simulation.simulator import gaussian_blur

    t = n_draws
    frame = torch.arange(t).repeat_interleave(len(xyz))
    mu = gaussian_blur(psf.render(xyz.repeat(t, 1), photons.repeat(t), frame, (t, *shape)),
                       blur_px) + bg
    g = torch.Generator().manual_seed(seed)
    return torch.poisson(mu, generator=g), frame


def test_two_overlapping_emitters_are_recovered_to_their_crlb():
    """Two 2D emitters 2.5 px apart, started 0.6 px off: the joint fit lands on the truth,
    the scatter over 40 noise draws matches the reported σ (the CRLB) within 25 %."""
    psf = GaussianPSF(130.0, 100.0, 15)
    truth = torch.tensor([[1530.0, 1610.0, 0.0], [1780.0, 1640.0, 0.0]])
    photons, bg = torch.tensor([3000.0, 2000.0]), 10.0
    frames, frame = simulate(psf, truth, photons, bg, (32, 32), 40, seed=1)
    start = truth.repeat(40, 1) + torch.tensor([60.0, -50.0, 0.0])
    xyz, n, b = fit_frames(psf, 0.0, IDEAL, frames, start, frame, fit_z=False,
                           z_bounds_nm=(0.0, 0.0), steps=200)
    err = (xyz - truth.repeat(40, 1)).view(40, 2, 3)[..., :2]
    assert err.abs().mean() < 10.0  # unbiased to a few nm: it left the 60-nm start
    sd = crlb_nm(psf, 0.0, IDEAL, xyz[:2], n[:2], frame[:2], b, (32, 32), fit_z=False)
    assert torch.isnan(sd[:, 2]).all()
    scatter = err.std(0)  # (emitter, axis)
    ratio = scatter / sd[:, :2].float()
    assert ((ratio > 0.75) & (ratio < 1.25)).all(), ratio
    torch.testing.assert_close(n.view(40, 2).mean(0), photons, rtol=0.05, atol=0)
    torch.testing.assert_close(b.mean(), torch.tensor(bg), rtol=0.05, atol=0)


def test_depth_is_fitted_through_an_astigmatic_psf_with_blur():
    psf = AstigmaticGaussianPSF(120.0, 400.0, 500.0, 0.0, 100.0, 21, 800.0)
    truth = torch.tensor([[1600.0, 1550.0, 250.0]])
    frames, frame = simulate(psf, truth, torch.tensor([5000.0]), 5.0, (32, 32), 30, seed=2,
                             blur_px=0.5)
    start = truth.repeat(30, 1) + torch.tensor([-40.0, 30.0, -150.0])
    xyz, n, b = fit_frames(psf, 0.5, IDEAL, frames, start, frame, fit_z=True,
                           z_bounds_nm=(-800.0, 800.0), steps=200)
    sd = crlb_nm(psf, 0.5, IDEAL, xyz[:1], n[:1], frame[:1], b, (32, 32), fit_z=True)
    err = xyz - truth
    assert err[:, 2].mean().abs() < 3 * sd[0, 2] / np.sqrt(30) + 5.0
    ratio = err.std(0) / sd[0].float()
    assert ((ratio > 0.7) & (ratio < 1.3)).all(), ratio


def test_light_outside_the_region_does_not_pull_the_fit():
    """An unmodelled bright block 14 px away: a whole-frame fit takes it as background,
    the fit over 15 px about the emitter does not see it."""
    psf = GaussianPSF(130.0, 100.0, 15)
    truth = torch.tensor([[1050.0, 1050.0, 0.0]])
    frames, frame = simulate(psf, truth, torch.tensor([3000.0]), 10.0, (48, 48), 10, seed=3)
    frames[:, 24:48, 24:48] += 200.0
    kw = dict(fit_z=False, z_bounds_nm=(0.0, 0.0), steps=150)
    _, n_all, b_all = fit_frames(psf, 0.0, IDEAL, frames, truth.repeat(10, 1), frame, **kw)
    _, n_roi, b_roi = fit_frames(psf, 0.0, IDEAL, frames, truth.repeat(10, 1), frame,
                                 roi_px=15, **kw)
    assert b_all.mean() > 13.0  # the block leaks into a whole-frame background
    assert b_roi.mean().item() == pytest.approx(10.0, rel=0.1)
    assert n_roi.mean().item() == pytest.approx(3000.0, rel=0.05)


def test_a_smooth_background_grid_follows_a_background_that_is_not_flat():
    """A background rising from 20 to 220 photons/px across the frame: one constant per
    frame pulls the emitter towards the bright side, the bilinear grid does not."""

    psf = GaussianPSF(150.0, 100.0, 15)
    truth = torch.tensor([[1650.0, 1600.0, 0.0]])
    ramp = torch.linspace(20.0, 220.0, 32)[None, None, :].expand(20, 32, 32)
    g = torch.Generator().manual_seed(5)
    frame = torch.arange(20)
    mu = psf.render(truth.repeat(20, 1), torch.full((20,), 1500.0), frame, (20, 32, 32)) + ramp
    frames = torch.poisson(mu, generator=g)
    kw = dict(fit_z=False, z_bounds_nm=(0.0, 0.0), steps=200, roi_px=15)
    errs = {}
    for grid in (1, 4):
        xyz, _, _ = fit_frames(psf, 0.0, IDEAL, frames, truth.repeat(20, 1), frame,
                               background_grid=grid, **kw)
        errs[grid] = (xyz[:, 0] - truth[0, 0]).mean().abs().item()
    sd = crlb_nm(psf, 0.0, IDEAL, truth, torch.tensor([1500.0]), torch.tensor([0]),
                 torch.tensor([120.0]), (32, 32), False)[0, 0].item()
    assert errs[4] < sd < 4 * sd < errs[1], (errs, sd)  # measured: 8 and 65 nm, σ 9.9 nm


def test_roi_mask_is_the_union_of_squares_about_each_localization():
    from deepsmlm.refine import roi_mask

    xyz = torch.tensor([[250.0, 250.0, 0.0], [650.0, 250.0, 0.0], [250.0, 250.0, 0.0]])
    m = roi_mask(xyz, torch.tensor([0, 0, 1]), 100.0, 3, (2, 10, 10))
    assert m[0].sum() == 18 and m[1].sum() == 9  # two disjoint 3×3 squares; one
    assert m[0, 1:4, 1:4].all() and m[0, 1:4, 5:8].all() and not m[0, 5:].any()


def test_without_blur_in_the_model_the_sigma_is_smaller():
    """The blur widens the PSF: the bound must see it (it is part of the fitted model)."""
    psf = GaussianPSF(130.0, 100.0, 15)
    xyz = torch.tensor([[1550.0, 1550.0, 0.0]])
    args = (IDEAL, xyz, torch.tensor([2000.0]), torch.tensor([0]), torch.tensor([10.0]),
            (32, 32), False)
    assert crlb_nm(psf, 1.0, *args)[0, 0] > 1.2 * crlb_nm(psf, 0.0, *args)[0, 0]


def test_a_neighbour_raises_the_bound_along_the_line_joining_them():
    """Alone, the bound is evaluation.crlb's; with an overlapping neighbour 2.5 px away
    along x it grows, most in x (the neighbour's light also adds noise in y), and a
    neighbour whose patch does not overlap changes nothing."""
    from deepsmlm.evaluation.crlb import crlb

    psf = GaussianPSF(130.0, 100.0, 15)
    one = torch.tensor([[1550.0, 1550.0, 0.0]])
    n, bg = torch.tensor([2000.0]), torch.tensor([10.0])
    alone = crlb_nm(psf, 0.0, IDEAL, one, n, torch.tensor([0]), bg, (64, 64), False)[0]
    ref = crlb(psf, [0.0], 2000.0, 10.0, IDEAL, offset_px=(0.5, 0.5))
    assert alone[0].item() == pytest.approx(float(ref["crlb_x"][0]), rel=0.02)
    for dx, grows in ((250.0, True), (2000.0, False)):
        two = torch.cat([one, one + torch.tensor([dx, 0.0, 0.0])])
        sd = crlb_nm(psf, 0.0, IDEAL, two, n.repeat(2), torch.tensor([0, 0]), bg, (64, 64),
                     False)[0]
        if grows:
            assert sd[0] > 1.5 * alone[0] and sd[0] > 1.3 * sd[1]  # mostly along x
        else:
            assert sd[:2].tolist() == pytest.approx(alone[:2].tolist(), rel=0.02)


# ------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small fastloc model that localizes (validation Jaccard ≈ 90 %) and 12 frames."""
    d = tmp_path_factory.mktemp("refine")
    exp = tiny_fastloc(density_per_um2=0.4, steps_per_epoch=60, max_epochs=4)
    exp["training"]["width"] = 16
    (d / "exp.yaml").write_text(yaml.safe_dump(exp))
    assert main(["train", str(d / "exp.yaml"), "--out", str(d / "model"), "--quiet"]) == 0
    assert main(["simulate", str(d / "exp.yaml"), "--frames", "12", "--out", str(d / "sim"),
                 "--seed", "4"]) == 0
    return d


def rmse_xy(table, truth) -> float:
    from deepsmlm.evaluation.metrics import evaluate

    r = evaluate(truth.frame, truth.xyz_nm, table.frame, table.xyz_nm, tol_z_nm=float("inf"))
    return r["rmse_xy_nm"]


def test_localize_refine_writes_sigma_photons_and_counts_and_is_more_precise(trained):
    d = trained
    movie = str(d / "sim" / "frames.tif")
    assert main(["localize", str(d / "model"), movie, "--out", str(d / "plain"),
                 "--quiet"]) == 0
    assert main(["localize", str(d / "model"), movie, "--out", str(d / "ref"), "--quiet",
                 "--refine"]) == 0
    plain, ref = (read_csv(d / f / "localizations.csv") for f in ("plain", "ref"))
    truth = read_csv(d / "sim" / "truth.csv")
    assert len(ref) == len(plain) > 20
    summary = json.loads((d / "ref" / "localize.json").read_text())
    counts = summary["refine"]
    assert counts["refined"] + counts["kept_network"] == len(ref)
    assert summary["settings"]["refine"] is True
    unc = ref.uncertainty_xyz_nm.numpy()
    refined = np.isfinite(unc[:, 0])
    assert refined.sum() == counts["refined"] >= 0.9 * len(ref)
    assert (unc[refined, :2] > 0.5).all() and (unc[refined, :2] < 30).all()
    assert np.isnan(unc[:, 2]).all()  # a 2D model: depth not fitted
    # the refined table is closer to the truth; photons are the fit's (2000–4000 drawn)
    assert rmse_xy(ref, truth) < 0.8 * rmse_xy(plain, truth)
    assert 1500 < float(ref.photons[refined].median()) < 4500
    moved = np.linalg.norm(ref.xyz_nm.numpy()[:, :2] - plain.xyz_nm.numpy()[:, :2], axis=1)
    assert moved.max() <= 1.5 * 100.0 + 1e-3  # never beyond the run-off limit


def test_a_resumed_localize_refines_as_the_interrupted_run_did(trained, monkeypatch, capsys):
    from deepsmlm.steps import localize as step

    d = trained
    commit = step._Run.commit

    def stop(self, t0, r):
        if t0 > 0:
            raise KeyboardInterrupt
        commit(self, t0, r)

    def args(out, *extra):
        return ["localize", str(d / "model"), str(d / "sim" / "frames.tif"), "--out",
                str(d / out), "--quiet", "--chunk-frames", "4", *extra]

    monkeypatch.setattr(step._Run, "commit", stop)
    assert main(args("cut", "--refine")) == 130  # stopped after its first chunk
    assert main(args("cut_plain")) == 130
    monkeypatch.setattr(step._Run, "commit", commit)
    assert main(args("cut", "--resume")) == 0  # refines as the interrupted run did
    resumed = read_csv(d / "cut" / "localizations.csv")
    assert np.isfinite(resumed.uncertainty_xyz_nm[:, 0].numpy()).mean() > 0.9
    assert json.loads((d / "cut" / "localize.json").read_text())["settings"]["refine"]
    capsys.readouterr()
    assert main(args("cut_plain", "--resume", "--refine")) == 2
    assert "did not use --refine" in capsys.readouterr().err
    assert main(args("other", "--refine-roi-px", "9")) == 2  # needs --refine
    assert "--refine-roi-px 9" in capsys.readouterr().err


def test_refine_on_a_dask_cluster_gives_the_same_table(trained):
    pytest.importorskip("distributed")
    d = trained
    movie = str(d / "sim" / "frames.tif")
    for out, extra in (("one", ()), ("dask", ("--dask", "local:1"))):
        assert main(["localize", str(d / "model"), movie, "--out", str(d / out), "--quiet",
                     "--refine", "--chunk-frames", "6", *extra]) == 0
    a, b = (read_csv(d / f / "localizations.csv") for f in ("one", "dask"))
    np.testing.assert_allclose(a.xyz_nm.numpy(), b.xyz_nm.numpy(), atol=1e-3)
    np.testing.assert_allclose(a.uncertainty_xyz_nm.numpy(), b.uncertainty_xyz_nm.numpy(),
                               atol=1e-3)
    counts = json.loads((d / "dask" / "localize.json").read_text())["refine"]
    assert counts["refined"] + counts["kept_network"] == len(b)


def test_species_are_fitted_through_their_own_psf():
    """Multicolor: each emitter through its species' PSF (a narrow and a wide Gaussian);
    fitted through the wrong species it lands worse, and the bound of the wide one is
    larger."""
    from deepsmlm.optics.multicolor import MulticolorPSF

    psf = MulticolorPSF([GaussianPSF(110.0, 100.0, 15), GaussianPSF(170.0, 100.0, 15)],
                        [520.0, 690.0])
    truth = torch.tensor([[1050.0, 1550.0, 0.0], [2250.0, 1560.0, 0.0]])
    species = torch.tensor([0, 1])
    t = 15
    frame = torch.arange(t).repeat_interleave(2)
    mu = psf.render(truth.repeat(t, 1), torch.full((2 * t,), 3000.0), frame, (t, 32, 40),
                    species=species.repeat(t)) + 10.0
    frames = torch.poisson(mu, generator=torch.Generator().manual_seed(6))
    start = truth.repeat(t, 1) + torch.tensor([40.0, -30.0, 0.0])
    kw = dict(fit_z=False, z_bounds_nm=(0.0, 0.0), steps=200, roi_px=15)
    _, n_right, _ = fit_frames(psf, 0.0, IDEAL, frames, start, frame,
                               species=species.repeat(t), **kw)
    _, n_wrong, _ = fit_frames(psf, 0.0, IDEAL, frames, start, frame,
                               species=(1 - species).repeat(t), **kw)
    right = (n_right.view(t, 2) - 3000.0).abs().mean()
    wrong = (n_wrong.view(t, 2) - 3000.0).abs().mean()
    assert right < 100.0 < wrong  # photons: right within ~3 %, the wrong PSF far off
    sd = crlb_nm(psf, 0.0, IDEAL, truth, torch.full((2,), 3000.0), torch.tensor([0, 0]),
                 torch.tensor([10.0]), (32, 40), False, species=species)
    assert sd[1, 0] > 1.3 * sd[0, 0]


def test_a_2d_fit_keeps_the_networks_depth():
    psf = GaussianPSF(130.0, 100.0, 15)
    frames, frame = simulate(psf, torch.tensor([[1550.0, 1550.0, 0.0]]),
                             torch.tensor([2000.0]), 10.0, (32, 32), 2, seed=7)
    start = torch.tensor([[1560.0, 1540.0, 0.0]]).repeat(2, 1)
    xyz, _, _ = fit_frames(psf, 0.0, IDEAL, frames, start, frame, fit_z=False,
                           z_bounds_nm=(140.0, 880.0), steps=20)
    assert (xyz[:, 2] == 0.0).all()  # not clamped into the experiment's range


def test_the_bound_uses_the_local_background_and_survives_a_degenerate_pair():
    """On a background ramp the emitter on the dark side has the smaller σ; two emitters on
    one spot give NaN (their parameters cannot be told apart), not an error."""
    psf = GaussianPSF(130.0, 100.0, 15)
    ramp = torch.linspace(20.0, 420.0, 64)[None, None, :].expand(1, 32, 64)
    xyz = torch.tensor([[800.0, 1600.0, 0.0], [5600.0, 1600.0, 0.0]])
    sd = crlb_nm(psf, 0.0, IDEAL, xyz, torch.full((2,), 2000.0), torch.tensor([0, 0]), ramp,
                 (32, 64), False)
    assert sd[0, 0] < 0.8 * sd[1, 0]
    same = torch.tensor([[1600.0, 1600.0, 0.0]]).repeat(2, 1)
    sd = crlb_nm(psf, 0.0, IDEAL, same, torch.full((2,), 2000.0), torch.tensor([0, 0]),
                 torch.tensor([10.0]), (32, 32), False)
    assert torch.isnan(sd[:, :2]).all()


def test_a_2d_method_fits_the_depth_of_a_defocused_spot_as_a_nuisance():
    """A 2D network reports z = 0 for a spot 600 nm out of focus (a PSF whose width grows
    with |z|, symmetric about the focus). Fitting z as a nuisance — started off the focus,
    where such a PSF has no z gradient — recovers the photons, which an in-focus fit
    underestimates, and a lateral scatter, smaller than the in-focus fit's, that the
    reported σ (z unknown) describes; the
    table keeps the network's z and no z σ."""
    from deepsmlm.emitters import EmitterSet
    from deepsmlm.refine import Refiner, nuisance_start_nm

    assert nuisance_start_nm((-825.0, 825.0)) == 412.5  # off the focus
    assert nuisance_start_nm((100.0, 900.0)) == 500.0
    psf = AstigmaticGaussianPSF(110.0, 0.0, 300.0, 0.0, 100.0, 25, 800.0)
    truth = torch.tensor([[1550.0, 1630.0, -600.0]])
    n_draws, photons = 40, 4000.0
    frames, frame = simulate(psf, truth, torch.tensor([photons]), 20.0, (32, 32), n_draws,
                             seed=11)
    network = EmitterSet(torch.tensor([[1600.0, 1590.0, 0.0]]).repeat(n_draws, 1),
                         torch.full((n_draws,), 1000.0), frame)
    fitted = {}
    for nuisance in (False, True):
        refine = Refiner(psf, IDEAL, 0.0, fit_z=False, z_bounds_nm=(-825.0, 825.0),
                         nuisance_z=nuisance, fits_photons=True, steps=200, background_px=0)
        fitted[nuisance] = refine(frames, network, 0)
    em = fitted[True]
    assert refine.counts["refined"] == n_draws
    assert (em.xyz_nm[:, 2] == 0.0).all() and torch.isnan(em.uncertainty_xyz_nm[:, 2]).all()
    torch.testing.assert_close(em.photons.mean(), torch.tensor(photons), rtol=0.05, atol=0)
    assert fitted[False].photons.mean() < 0.8 * photons  # an in-focus spot holds less light
    err = em.xyz_nm[:, :2] - truth[:, :2]
    assert err.mean(0).abs().max() < 10.0
    ratio = err.std(0) / em.uncertainty_xyz_nm[:, :2].mean(0)
    assert ((ratio > 0.75) & (ratio < 1.25)).all(), ratio
    in_focus = (fitted[False].xyz_nm[:, :2] - truth[:, :2]).std(0)
    assert (in_focus > 1.2 * err.std(0)).all()  # the wrong width costs precision too


def test_a_fit_that_is_not_used_keeps_the_networks_position_and_sigma():
    """With a shift limit the fit must break, every localization keeps the network's
    estimate and the network's σ (not NaN), and the count says so."""
    from deepsmlm.emitters import EmitterSet
    from deepsmlm.refine import Refiner

    psf = GaussianPSF(130.0, 100.0, 15)
    frames, frame = simulate(psf, torch.tensor([[1550.0, 1550.0, 0.0]]),
                             torch.tensor([2000.0]), 10.0, (32, 32), 3, seed=5)
    sigma = torch.tensor([[12.0, 14.0, float("nan")]]).repeat(3, 1)
    network = EmitterSet(torch.tensor([[1600.0, 1500.0, 0.0]]).repeat(3, 1),
                         torch.full((3,), 1500.0), frame, uncertainty_xyz_nm=sigma)
    refine = Refiner(psf, IDEAL, 0.0, fit_z=False, z_bounds_nm=(0.0, 0.0), steps=30,
                     max_shift_px=0.01)
    em = refine(frames, network, 0)
    assert refine.counts == {"refined": 0, "kept_network": 3}
    torch.testing.assert_close(em.xyz_nm, network.xyz_nm)
    torch.testing.assert_close(em.uncertainty_xyz_nm, sigma, equal_nan=True)
