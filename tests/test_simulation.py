"""Scenes, blinking, backgrounds and the simulator composed from the experiment file."""

import numpy as np
import pytest
import torch

from deepsmlm.api import simulate
from deepsmlm.build import build_simulator, sample_emitters
from deepsmlm.config import experiment_from_dict, load_experiment
from deepsmlm.emitters import EmitterSet
from deepsmlm.simulation.background import ConstantBackground, SmoothBackground
from deepsmlm.simulation.emission import PhotonDistribution
from deepsmlm.simulation.simulator import gaussian_blur
from deepsmlm.simulation.structures import EllipsoidSurface, Filaments

from .conftest import CONFIGS, MATCHED, make_experiment

SMALL = dict(frame={"height_px": 24, "width_px": 24},
             optics={"psf": "gaussian", "pixel_size_nm": 100, "gaussian_sigma_nm": 120})


def test_same_seed_same_frames_other_seed_other_frames():
    exp = load_experiment(CONFIGS / "3d-astigmatic.yaml")
    a, b, c = (simulate(exp, 6, seed=s) for s in (3, 3, 4))
    assert np.array_equal(a.frames_adu, b.frames_adu)
    assert torch.equal(a.emitters.xyz_nm, b.emitters.xyz_nm)
    assert not np.array_equal(a.frames_adu, c.frames_adu)


def test_chunked_rendering_equals_one_chunk():
    exp = make_experiment(**SMALL, emitters={"n_per_frame": [3, 8]}, camera={"preset": "ideal"})
    one = simulate(exp, 10, seed=1, chunk_frames=10)
    # rendering is deterministic given emitters; only noise order differs between chunkings
    signal_a, _ = build_simulator(exp).expected_photons(one.emitters, 10)
    parts = []
    sim = build_simulator(exp)
    for t0 in (0, 4, 8):
        sel = (one.emitters.frame >= t0) & (one.emitters.frame < t0 + 4)
        part = one.emitters.subset(sel)
        part.frame = part.frame - t0
        parts.append(sim.expected_photons(part, min(4, 10 - t0))[0])
    assert torch.allclose(signal_a, torch.cat(parts), atol=1e-4)


def test_photons_in_equal_photons_out_with_an_ideal_camera():
    exp = make_experiment(frame={"height_px": 48, "width_px": 48},
                          optics={"psf": "gaussian", "pixel_size_nm": 100,
                                  "gaussian_sigma_nm": 100},
                          camera={"preset": "ideal"},
                          emitters={"n_per_frame": [5, 5],
                                    "photons": {"distribution": "constant", "mean": 1000}},
                          background={"photons_per_px": [0, 0]})
    gen = torch.Generator().manual_seed(0)
    em = sample_emitters(exp, 200, gen)
    keep = ((em.xyz_nm[:, :2] > 600) & (em.xyz_nm[:, :2] < 4200)).all(1)
    em = em.subset(keep)
    frames = build_simulator(exp)(em, 200, gen)
    assert float(frames.sum()) == pytest.approx(float(em.photons.sum()), rel=0.005)


def test_density_and_counts():
    exp = make_experiment(**SMALL, emitters={"density_per_um2": 4.0})
    em = sample_emitters(exp, 500, torch.Generator().manual_seed(0))
    per_frame = len(em) / 500
    assert per_frame == pytest.approx(4.0 * 2.4 * 2.4, rel=0.03)
    assert float(em.xyz_nm[:, :2].min()) >= 0 and float(em.xyz_nm[:, :2].max()) < 2400
    exp = make_experiment(**SMALL, emitters={"n_per_frame": [2, 5], "z_range_nm": [-300, 700]})
    em = sample_emitters(exp, 300, torch.Generator().manual_seed(0))
    counts = torch.bincount(em.frame, minlength=300)
    assert int(counts.min()) == 2 and int(counts.max()) == 5
    assert -300 <= float(em.xyz_nm[:, 2].min()) and float(em.xyz_nm[:, 2].max()) <= 700


@pytest.mark.parametrize("chunk_frames", [2000, 7])
def test_blinking_stationary_density_and_persistence(chunk_frames):
    """Also drawn in chunks of 7 frames (``simulate`` streams): the Markov chain carries
    over, so on-runs still last 4 frames across chunk boundaries."""
    from deepsmlm.build import emitter_stream

    exp = make_experiment(**SMALL, emitters={"density_per_um2": 3.0, "blinking": {
        "mean_on_frames": 4.0, "duty_cycle": 0.1}})
    stream = emitter_stream(exp, torch.Generator().manual_seed(0))
    em = EmitterSet.cat([stream.take(min(chunk_frames, 2000 - t0))
                         for t0 in range(0, 2000, chunk_frames)])
    assert int(em.frame.max()) == 1999
    assert len(em) / 2000 == pytest.approx(3.0 * 5.76, rel=0.05)
    # the same fluorophore sits at the same place in consecutive frames; on-runs ≈ 4 frames
    ids, frames = em.id.numpy(), em.frame.numpy()
    order = np.lexsort((frames, ids))
    ids, frames = ids[order], frames[order]
    new_run = np.r_[True, (ids[1:] != ids[:-1]) | (frames[1:] != frames[:-1] + 1)]
    mean_run = len(ids) / new_run.sum()
    assert mean_run == pytest.approx(4.0, rel=0.1)
    same = em.xyz_nm[em.id == em.id[0]]
    assert torch.allclose(same, same[:1].expand_as(same))


def test_photon_distributions():
    gen = torch.Generator().manual_seed(0)
    for kind, mean in [("uniform", 1500.0), ("lognormal", 2000.0), ("exponential", 2000.0),
                       ("constant", 2000.0)]:
        p = PhotonDistribution(kind, lo=1000, hi=2000, mean=2000, std=800).sample(100_000, gen)
        assert float(p.mean()) == pytest.approx(mean, rel=0.02), kind
        assert float(p.min()) > 0
    p = PhotonDistribution("lognormal", mean=2000, std=800).sample(100_000, gen)
    assert float(p.std()) == pytest.approx(800, rel=0.05)


def test_filaments_are_curves_inside_the_field():
    gen = torch.Generator().manual_seed(2)
    fil = Filaments.random(4, 6400, 6400, (0.0, 500.0), 3000.0, gen)
    pts = fil.sample(5000, gen)
    assert float(pts[:, :2].min()) > -60 and float(pts[:, :2].max()) < 6460
    assert 0 - 60 <= float(pts[:, 2].min()) and float(pts[:, 2].max()) <= 560
    # points lie close to the curve vertices (a 1D structure, not a filled area)
    d = torch.cdist(pts[:500, :2], fil.vertices[:, :2]).min(1).values
    assert float(d.median()) < 20


def test_ellipsoid_surface():
    surf = EllipsoidSurface((1000.0, 1000.0, 500.0), (800.0, 600.0, 400.0))
    p = surf.sample(2000, torch.Generator().manual_seed(0)) - torch.tensor([1000.0, 1000, 500])
    r = ((p / torch.tensor([800.0, 600, 400])) ** 2).sum(1)
    assert torch.allclose(r, torch.ones_like(r), atol=1e-4)


def test_backgrounds():
    gen = torch.Generator().manual_seed(0)
    bg = ConstantBackground((10.0, 30.0))(100, (8, 8), gen)
    levels = bg[:, 0, 0]
    assert torch.all((levels >= 10) & (levels <= 30)) and float(levels.std()) > 3
    assert torch.all(bg == levels[:, None, None])
    smooth = SmoothBackground((20.0, 80.0), length_px=8.0)(3, (64, 64), gen)
    assert float(smooth.min()) == pytest.approx(20.0) and float(smooth.max()) == pytest.approx(80)
    step = (smooth[0, :, 1:] - smooth[0, :, :-1]).abs().max()
    assert float(step) < 0.2 * 60  # smooth: no jumps between neighbouring pixels


def test_emitter_blur_conserves_photons():
    img = torch.zeros(1, 31, 31)
    img[0, 15, 15] = 100.0
    out = gaussian_blur(img, 1.5)
    assert float(out.sum()) == pytest.approx(100.0, rel=1e-5)
    assert float(out[0, 15, 15]) < 10


def test_a_frame_without_emitters_is_dark_for_every_psf():
    for optics in ({"psf": "gaussian"}, {"psf": "pupil", **MATCHED, "pupil_grid_px": 32}):
        exp = make_experiment(frame={"height_px": 12, "width_px": 12}, optics=optics)
        none = EmitterSet.empty()
        signal = build_simulator(exp).signal(none, 3)
        assert signal.shape == (3, 12, 12) and float(signal.abs().max()) == 0.0


def _one_emitter_per_frame(n: int) -> EmitterSet:
    return EmitterSet(torch.tensor([[1250.0, 1230.0, 300.0]]).repeat(n, 1),
                      torch.full((n,), 3000.0), torch.arange(n))


@pytest.mark.parametrize("frames_per_sample", [1, 3])
def test_aberration_jitter_gives_each_sample_its_own_microscope(frames_per_sample):
    from deepsmlm.build import build_patch_sampler

    from .conftest import tiny_fastloc

    d = tiny_fastloc(aberration_jitter_rad=0.5, patch_px=16)
    d["optics"] = {"psf": "pupil", **MATCHED, "pupil_grid_px": 32}
    d["emitters"]["z_range_nm"] = [-500, 500]
    sampler = build_patch_sampler(experiment_from_dict(d))
    n, f = 4, frames_per_sample
    em = _one_emitter_per_frame(n * f)
    jittered = sampler._signal(em, n, f, torch.Generator().manual_seed(0))
    assert jittered.shape[0] == n * f
    sample = jittered.view(n, f, -1)
    # the frames of one sample (a temporal window) share its microscope ...
    assert torch.allclose(sample, sample[:, :1].expand_as(sample), atol=1e-4)
    # ... and each sample has another one: the same emitter renders differently
    for i in range(1, n):
        assert float((sample[i, 0] - sample[0, 0]).abs().max()) > 1.0
    sampler.perturb = None
    plain = sampler._signal(em, n, f, torch.Generator().manual_seed(0)).view(n, f, -1)
    assert torch.allclose(plain, plain[:1, :1].expand_as(plain), atol=1e-4)


def test_training_samples_lie_on_structures_of_their_own():
    """With a density range, every training frame draws its own random filaments (one draw
    per batch gave all its samples, and the validation patches of a batch, one geometry)."""
    from deepsmlm.build import training_emitters

    from .conftest import tiny_fastloc

    d = tiny_fastloc(density_range_per_um2=[40, 50])
    d["emitters"].update(structure="filaments", n_filaments=1)
    em = training_emitters(experiment_from_dict(d))(3, torch.Generator().manual_seed(1))
    xy = [em.xyz_nm[em.frame == i, :2] for i in range(3)]
    assert all(len(p) > 200 for p in xy)  # 10.24 µm² at 40–50 per µm²

    def gap_nm(a, b):  # median distance from a point of a to the nearest point of b
        return float(torch.cdist(a, b).min(1).values.median())

    # one filament per frame, densely labelled: a frame's points lie within tens of nm of
    # the rest of its own filament, but far from another frame's filament
    assert gap_nm(xy[0][:100], xy[0][100:]) < 40
    assert gap_nm(xy[1], xy[0]) > 200 and gap_nm(xy[2], xy[1]) > 200


@pytest.mark.parametrize("jitter, mean_lo, mean_hi, spread", [
    (0.2, 0.17, 0.23, False),  # Gaussian coefficients: total RMS ≈ 0.2, chi-like, narrow
    ([0.0, 0.4], 0.15, 0.25, True),  # a scale per sample: from well corrected to poorly
])
def test_aberration_jitter_total_rms(jitter, mean_lo, mean_hi, spread):
    from deepsmlm.build import aberration_jitter, build_psf

    from .conftest import tiny_fastloc

    d = tiny_fastloc(aberration_jitter_rad=jitter, patch_px=16)
    d["optics"] = {"psf": "pupil", **MATCHED, "pupil_grid_px": 32}
    exp = experiment_from_dict(d)
    psf = build_psf(exp)
    base = psf.aberration_phase.clone()
    perturb = aberration_jitter(exp, psf)
    g = torch.Generator().manual_seed(3)
    rms = []
    for _ in range(300):
        perturb(g)
        added = psf.aberration_phase - base
        inside = added != 0  # Zernike modes vanish outside the pupil
        rms.append(float(added[inside].square().mean().sqrt()))
    rms = np.array(rms)
    assert mean_lo < rms.mean() < mean_hi
    # a range reaches nearly unaberrated and strongly aberrated samples; a fixed scale not
    assert ((rms < 0.06).mean() > 0.05) == spread
    assert ((rms > 0.33).mean() > 0.05) == spread
