"""Deep-STORM: architecture, loss, targets and decoding, training, resume, inference."""

import numpy as np
import pytest
import tifffile
import torch

from deepsmlm.config import experiment_from_dict, load_experiment
from deepsmlm.data.normalizer import Normalizer
from deepsmlm.data.targets import spike_image
from deepsmlm.errors import UserError
from deepsmlm.losses import blur, deepstorm_loss, gaussian_kernel
from deepsmlm.models.deepstorm import DeepSTORM, count_weights, pad_to_multiple
from deepsmlm.postprocess import decode

from .conftest import CONFIGS

TINY = dict(upsampling=2, channels=[4, 8, 8, 8], patch_px=16, margin_px=2, batch_size=4,
            steps_per_epoch=3, max_epochs=2, val_frames=8, lr_patience_epochs=1)


def tiny_experiment(**training):
    d = load_experiment(CONFIGS / "2d-dense.yaml").to_dict()
    d["training"] = {"model": "deepstorm", **TINY, **training}
    return experiment_from_dict(d)


def test_published_architecture():
    m = DeepSTORM(8)
    assert count_weights(m) == 1_366_208  # ≈ 1.36 M, as published
    assert m(torch.zeros(2, 1, 13, 9)).shape == (2, 1, 104, 72)
    m4 = DeepSTORM(4, (4, 4, 4, 4))
    assert m4(torch.zeros(1, 1, 16, 10)).shape == (1, 1, 64, 40)
    with pytest.raises(ValueError, match="multiple of 8"):
        m4(torch.zeros(1, 1, 15, 16))
    x, (h, w) = pad_to_multiple(torch.zeros(1, 1, 15, 17), m4.multiple)
    assert x.shape[-2:] == (16, 18) and (h, w) == (15, 17)
    with pytest.raises(ValueError):
        DeepSTORM(3)


def test_loss_on_hand_made_targets():
    spikes = torch.zeros(1, 1, 16, 16)
    spikes[0, 0, 8, 8] = 1.0
    k = gaussian_kernel(1.0)
    assert k.shape[-1] == 7 and float(k.sum()) == pytest.approx(1.0)
    perfect = 100.0 * spikes
    assert float(deepstorm_loss(perfect, spikes)) == pytest.approx(100.0 / 256, rel=1e-5)
    assert float(deepstorm_loss(perfect, spikes, l1_weight=0.0)) == pytest.approx(0, abs=1e-8)
    zero = torch.zeros_like(spikes)
    expected = float(((100 * blur(spikes, k)) ** 2).mean())
    assert float(deepstorm_loss(zero, spikes)) == pytest.approx(expected, rel=1e-5)
    shifted = torch.roll(perfect, 3, dims=-1)
    assert float(deepstorm_loss(shifted, spikes)) > float(deepstorm_loss(perfect, spikes))


def test_spikes_encode_and_decode_round_trip():
    fine = 12.5
    xy = torch.tensor([[203.0, 410.0], [640.0, 118.0]])
    spikes = spike_image(xy, torch.tensor([0, 1]), (2, 64, 64), fine)
    assert float(spikes.sum()) == 2 and spikes[0, 0, 32, 16] == 1 and spikes[1, 0, 9, 51] == 1
    em = decode(100.0 * blur(spikes, gaussian_kernel(1.0)), fine, threshold=5.0, scale=100.0)
    assert len(em) == 2 and em.frame.tolist() == [0, 1]
    err = (em.xyz_nm[:, :2] - xy).abs()
    assert float(err.max()) <= fine / 2 + 1e-4  # within half a fine pixel
    sharp = decode(100.0 * spikes, fine, threshold=5.0, scale=100.0)
    assert torch.allclose(sharp.photons, torch.ones(2))  # confidence = 1 emitter
    # a blob centred between pixels is found at its centre of gravity
    img = torch.zeros(1, 1, 32, 32)
    img[0, 0, 10, 10] = img[0, 0, 10, 11] = 50.0
    em = decode(img, fine, 5.0, 100.0)
    assert len(em) == 1 and float(em.xyz_nm[0, 0]) == pytest.approx(11.0 * fine)


def test_photon_normalisation_does_not_depend_on_the_brightest_emitter():
    from deepsmlm.camera import Camera

    cam = Camera(qe=0.9, em_gain=300, e_per_adu=45, baseline_adu=100)
    frame = torch.full((1, 8, 8), 400.0)
    bright = frame.clone()
    bright[0, 0, 0] = 60000.0
    ours = Normalizer("photons", 10.0, 5.0, cam)
    assert torch.equal(ours(frame)[..., 4, 4], ours(bright)[..., 4, 4])
    published = Normalizer("per-frame", 0.1, 0.2, cam)
    assert not torch.equal(published(frame + torch.rand(1, 8, 8))[..., 4, 4],
                           published(bright + torch.rand(1, 8, 8))[..., 4, 4])


def test_tiny_training_lowers_the_loss_and_writes_the_model_folder(tmp_path):
    from deepsmlm.build import build_patch_sampler
    from deepsmlm.data.datasets import fixed_batches
    from deepsmlm.training.train import new_network, train

    exp = tiny_experiment(steps_per_epoch=15, max_epochs=3, batch_size=8)
    s = train(exp, tmp_path / "m", progress=False)
    hist = (tmp_path / "m" / "curves.csv").read_text().splitlines()
    assert len(hist) == 4
    first_val = float(hist[1].split(",")[3])
    # the same network before training has a higher validation loss
    fresh = new_network(s, exp.training.seed)
    from deepsmlm.training.loop import evaluate_loss

    norm = Normalizer.from_dict(s.normalization)
    val = fixed_batches(build_patch_sampler(exp), 8, 8, exp.training.seed + 1)

    def loss_fn(m, b):
        return deepstorm_loss(m(norm(b.inputs_adu)), b.targets)

    assert s.training["best_val_loss"] < evaluate_loss(fresh, loss_fn, val)
    assert s.training["best_val_loss"] <= first_val
    for name in ("model.json", "weights.safetensors", "experiment.yaml", "curves.csv",
                 "curves.png", "checkpoint/last.safetensors"):
        assert (tmp_path / "m" / name).is_file(), name
    assert s.threshold > 0 and "torch" in s.versions
    assert not list((tmp_path / "m").rglob("*.pt")) and not list((tmp_path / "m").rglob("*.pkl"))


def test_resume_continues_where_it_stopped(tmp_path):
    from deepsmlm.io.tensors import load_tensors
    from deepsmlm.steps.train import run_train
    from deepsmlm.training.train import train

    train(tiny_experiment(max_epochs=2), tmp_path / "a", progress=False)
    train(tiny_experiment(max_epochs=1), tmp_path / "b", progress=False)
    # resume b to two epochs: same experiment but max_epochs 2
    import yaml

    cfg = yaml.safe_load((tmp_path / "b" / "experiment.yaml").read_text())
    cfg["training"]["max_epochs"] = 2
    (tmp_path / "b" / "experiment.yaml").write_text(yaml.safe_dump(cfg))
    s = run_train(None, tmp_path / "b", resume=True, progress=False)
    assert s.training["epochs"] == 2
    wa = load_tensors(tmp_path / "a" / "checkpoint" / "last.safetensors")
    wb = load_tensors(tmp_path / "b" / "checkpoint" / "last.safetensors")
    for k in wa:
        if k.startswith("model."):
            assert torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5), k


def test_cosine_factor_on_hand_worked_steps():
    from deepsmlm.training.loop import cosine_factor

    assert cosine_factor(0, 100, 0.01) == pytest.approx(1.0)
    assert cosine_factor(50, 100, 0.01) == pytest.approx(0.505)  # (1 + floor) / 2
    assert cosine_factor(25, 100, 0.0) == pytest.approx(0.5 * (1 + np.cos(np.pi / 4)))
    assert cosine_factor(100, 100, 0.01) == pytest.approx(0.01)
    assert cosine_factor(250, 100, 0.01) == pytest.approx(0.01)  # kept after the end


def test_cosine_schedule_anneals_per_step_and_resumes_its_step_count(tmp_path):
    import csv

    import yaml

    from deepsmlm.steps.train import run_train
    from deepsmlm.training.loop import cosine_factor
    from deepsmlm.training.train import train

    lr0, floor_lr = 0.002, 0.0001
    exp = tiny_experiment(max_epochs=2, steps_per_epoch=3, lr_schedule="cosine",
                          learning_rate=lr0, min_learning_rate=floor_lr)
    train(exp, tmp_path / "m", progress=False)

    def lrs():
        with open(tmp_path / "m" / "curves.csv") as f:
            return [float(r["lr"]) for r in csv.DictReader(f)]

    floor = floor_lr / lr0
    assert lrs() == pytest.approx([lr0 * cosine_factor(3, 6, floor), floor_lr], rel=1e-4)
    # a resumed run goes on counting steps (it does not restart the cosine at lr0)
    cfg = yaml.safe_load((tmp_path / "m" / "experiment.yaml").read_text())
    cfg["training"]["max_epochs"] = 4
    (tmp_path / "m" / "experiment.yaml").write_text(yaml.safe_dump(cfg))
    run_train(None, tmp_path / "m", resume=True, progress=False)
    assert lrs()[2:] == pytest.approx([lr0 * cosine_factor(9, 12, floor), floor_lr], rel=1e-4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from deepsmlm.training.train import train

    folder = tmp_path_factory.mktemp("model") / "m"
    train(tiny_experiment(max_epochs=1), folder, progress=False)
    return folder


def test_streaming_inference_equals_all_at_once(trained, tmp_path):
    from deepsmlm.api import simulate
    from deepsmlm.inference import Predictor, localize_stack
    from deepsmlm.io.frames import read_stack, write_stack

    d = load_experiment(CONFIGS / "2d-dense.yaml").to_dict()
    d["frame"] = {"height_px": 20, "width_px": 22}  # not a multiple the model takes: padded
    movie = simulate(experiment_from_dict(d), 7, seed=3)
    write_stack(tmp_path / "m.tif", movie.frames_adu, 100.0)
    pred = Predictor.load(trained)
    stack = read_stack(tmp_path / "m.tif")
    a, sr_a, wf_a = localize_stack(pred, stack, chunk_frames=3, batch_size=2, progress=False)
    b, sr_b, wf_b = localize_stack(pred, stack, chunk_frames=100, batch_size=16, progress=False)
    assert sr_a.shape == (40, 44)
    assert np.allclose(sr_a, sr_b, rtol=1e-4, atol=1e-3) and np.allclose(wf_a, wf_b)
    assert torch.equal(a.frame, b.frame) and torch.allclose(a.xyz_nm, b.xyz_nm, atol=1e-3)


def test_localize_command_and_bad_inputs(trained, tmp_path):
    from deepsmlm.cli import main
    from deepsmlm.io.localizations import read_localizations

    movie = tmp_path / "movie.tif"
    tifffile.imwrite(movie, np.full((3, 16, 16), 500, np.uint16), photometric="minisblack")
    assert main(["localize", str(trained), str(movie), "--out", str(tmp_path / "r"),
                 "--quiet"]) == 0
    for name in ("localizations.csv", "localizations.hdf5", "localizations.yaml", "sr.tif",
                 "sr.png"):
        assert (tmp_path / "r" / name).is_file(), name
    header = (tmp_path / "r" / "localizations.csv").read_text().splitlines()[0]
    assert header == "id,frame,x [nm],y [nm],z [nm],confidence"
    read_localizations(tmp_path / "r" / "localizations.csv")
    sr = tifffile.imread(tmp_path / "r" / "sr.tif")
    assert sr.dtype == np.float32 and sr.shape[-2:] == (32, 32)

    from deepsmlm.inference import Predictor

    with pytest.raises(UserError, match="model.json"):
        Predictor.load(tmp_path)  # not a model folder
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((2, 16, 16), np.complex64))
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((16, 16), np.uint16))
    for bad in ("c.tif", "one.tif"):  # wrong dtype; a 2D image, not a stack
        assert main(["localize", str(trained), str(tmp_path / bad), "--out",
                     str(tmp_path / "x"), "--quiet"]) == 2


def test_estimate_measures_a_simulated_movie():
    from deepsmlm.api import simulate
    from deepsmlm.calibration.movie import estimate_movie

    d = load_experiment(CONFIGS / "2d-dense.yaml").to_dict()
    d["emitters"].update(density_per_um2=0.3, structure="uniform")
    movie = simulate(experiment_from_dict(d), 60, seed=1)
    est = estimate_movie(movie.frames_adu, 100.0, baseline_adu=100.0,
                         adu_per_photon=0.9 * 300 / 45)
    lo, hi = est["background_photons_per_px"]
    assert 45 < lo <= hi < 56  # truth: 50 photons/px
    assert est["psf_sigma_nm"] == pytest.approx(110, rel=0.15)
    assert 1500 < est["spot_photons"][0] < 2600  # truth: 2000–2500


def test_train_from_a_users_stack_and_truth_csv(tmp_path):
    """The original Deep-STORM workflow: a simulated stack + its ThunderSTORM-style CSV."""
    from deepsmlm.cli import main

    sim = tmp_path / "sim"
    d = load_experiment(CONFIGS / "2d-dense.yaml").to_dict()
    d["frame"] = {"height_px": 32, "width_px": 32}
    d["training"] = {"model": "deepstorm", **TINY}
    import yaml

    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(d))
    assert main(["simulate", str(tmp_path / "exp.yaml"), "--frames", "10", "--out", str(sim),
                 "--seed", "4"]) == 0
    assert main(["train", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "m"), "--stack",
                 str(sim / "frames.tif"), "--truth", str(sim / "truth.csv"), "--quiet"]) == 0
    from deepsmlm.training.model_folder import ModelFolder

    s = ModelFolder(tmp_path / "m").read_card()
    assert s.threshold > 0 and s.training["samples"] == 2 * 3 * 4
    # a second `train` into the same folder is refused; --stack without --truth too
    assert main(["train", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "m"),
                 "--quiet"]) == 2
    assert main(["train", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "m2"),
                 "--stack", str(sim / "frames.tif"), "--quiet"]) == 2
