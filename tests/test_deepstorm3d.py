"""DeepSTORM3D: voxel targets ↔ decoding, the loss, 3D NMS, training, other frame sizes."""

import numpy as np
import pytest
import torch

from deepsmlm.config import experiment_from_dict, load_experiment
from deepsmlm.data.targets import voxel_grid
from deepsmlm.losses import blur_3d, deepstorm3d_loss, overlap_loss
from deepsmlm.models.deepstorm3d import DeepSTORM3D
from deepsmlm.postprocess import decode_3d

from .conftest import CONFIGS

TINY3D = dict(model="deepstorm3d", upsampling=1, depth_planes=8, width=8, dilations=[1, 2],
              patch_px=16, margin_px=2, batch_size=4, steps_per_epoch=10, max_epochs=2,
              val_frames=8, n_per_patch_range=[1, 4], target_scale=100.0,
              learning_rate=0.003)


def tiny3d_experiment(**training):
    d = load_experiment(CONFIGS / "3d-astigmatic.yaml").to_dict()
    d["optics"]["pupil_grid_px"] = 32
    d["optics"]["pixel_oversampling"] = 1
    d["training"].update(TINY3D, **training)
    return experiment_from_dict(d)


def test_network_shapes_and_any_frame_size():
    m = DeepSTORM3D(depth_planes=12, upsampling=2, width=8, dilations=(1, 2, 4))
    out = m(torch.zeros(2, 1, 17, 23))
    assert out.shape == (2, 12, 34, 46)
    out = out.detach()
    assert float(out.min()) >= 0 and float(out.max()) <= m.scale  # bounded output
    assert m.flops_per_frame(64, 64) > 0


def test_voxel_targets_decode_back_within_a_voxel():
    fine, z_range, d = 55.0, (2000.0, 6000.0), 40  # voxels 55 × 55 × 100 nm
    xyz = torch.tensor([[1000.0, 2000.0, 2345.0], [3000.0, 1500.0, 5990.0],
                        [2000.0, 3000.0, 6000.0]])
    grid = voxel_grid(xyz, torch.tensor([0, 0, 1]), (2, d, 64, 64), fine, z_range)
    assert float(grid.sum()) == 3 and grid[1, d - 1].sum() == 1  # z_hi lands in the last plane
    em = decode_3d(800.0 * grid, fine, z_range, threshold=10.0, scale=800.0)
    assert len(em) == 3 and sorted(em.frame.tolist()) == [0, 0, 1]
    for p in xyz:
        err = (em.xyz_nm - p).abs()
        best = err[torch.argmin(err.sum(1))]
        assert float(best[0]) <= fine / 2 and float(best[1]) <= fine / 2
        assert float(best[2]) <= 50.0 + 1e-3  # half a 100 nm plane
    assert torch.allclose(em.photons, torch.ones(3))


def test_trilinear_targets_keep_sub_voxel_positions():
    fine, z_range, d = 110.0, (2000.0, 6000.0), 40  # voxels 110 × 110 × 100 nm
    gen = torch.Generator().manual_seed(3)
    n = 60
    # away from the grid's outer half voxel, where mass folds into the edge voxel
    xyz = torch.stack([60 + 6800 * torch.rand(n, generator=gen),
                       60 + 6800 * torch.rand(n, generator=gen),
                       2060 + 3880 * torch.rand(n, generator=gen)], 1)
    frames = torch.arange(n)
    grid = voxel_grid(xyz, frames, (n, d, 64, 64), fine, z_range, trilinear=True)
    assert torch.allclose(grid.sum((1, 2, 3)), torch.ones(n))  # one emitter = unit mass
    assert int((grid > 0).sum()) > 4 * n  # shared between neighbours, not one voxel
    em = decode_3d(800.0 * grid, fine, z_range, threshold=400.0, scale=800.0, score="mass")
    assert len(em) == n
    order = em.frame.argsort()
    assert torch.allclose(em.xyz_nm[order], xyz, atol=0.05)  # exact, not within a voxel
    # the one-voxel target quantises: errors up to half a voxel
    q = decode_3d(800.0 * voxel_grid(xyz, frames, (n, d, 64, 64), fine, z_range), fine,
                  z_range, threshold=400.0, scale=800.0)
    assert float((q.xyz_nm[q.frame.argsort()] - xyz).abs().max()) > 30.0
    # an emitter beyond the last plane's centre keeps its mass in the edge voxel
    edge = voxel_grid(torch.tensor([[500.0, 500.0, 5990.0]]), torch.tensor([0]),
                      (1, d, 64, 64), fine, z_range, trilinear=True)
    assert float(edge.sum()) == pytest.approx(1.0) and float(edge[0, d - 1].sum()) == \
        pytest.approx(1.0)


def test_mass_score_thresholds_the_window_sum_not_the_peak():
    vol = torch.zeros(1, 10, 16, 16)
    vol[0, 4, 8, 8] = vol[0, 5, 8, 8] = vol[0, 4, 8, 9] = vol[0, 5, 8, 9] = 0.25  # split mass
    vol[0, 2, 2, 2] = 0.4  # a lone voxel: higher peak, less mass
    by_peak = decode_3d(vol, 100.0, (0.0, 1000.0), threshold=0.3)
    by_mass, scores = decode_3d(vol, 100.0, (0.0, 1000.0), threshold=0.5, score="mass",
                                return_peaks=True)
    assert len(by_peak) == 1 and float(by_peak.xyz_nm[0, 0]) == pytest.approx(250.0)
    assert len(by_mass) == 1 and float(scores[0]) == pytest.approx(1.0)
    assert by_mass.xyz_nm[0].tolist() == pytest.approx([900.0, 850.0, 500.0])
    with pytest.raises(ValueError, match="score"):
        decode_3d(vol, 100.0, (0.0, 1000.0), threshold=0.5, score="sum")


def test_nms_keeps_emitters_close_in_xy_but_apart_in_z():
    vol = torch.zeros(1, 20, 16, 16)
    vol[0, 5, 8, 8] = 100.0
    vol[0, 12, 8, 9] = 90.0  # one fine pixel away laterally, 7 planes away axially
    vol = blur_3d(vol, 1.0, 1.0) * 10
    em = decode_3d(vol, 50.0, (0.0, 2000.0), threshold=1.0, scale=1.0)
    assert len(em) == 2
    assert sorted(round(float(z)) for z in em.xyz_nm[:, 2]) == [550, 1250]


def test_loss_on_hand_made_volumes_false_positives_raise_it():
    target = torch.zeros(1, 10, 16, 16)
    target[0, 4, 8, 8] = 1.0
    perfect = 800.0 * target
    extra = perfect.clone()
    extra[0, 7, 2, 2] = 800.0  # a false positive
    assert float(deepstorm3d_loss(perfect, target)) < float(deepstorm3d_loss(extra, target))
    assert float(overlap_loss(perfect, target, 800.0)) < float(overlap_loss(extra, target, 800.0))
    # the published variant does not see the false positive in its overlap term
    a = overlap_loss(perfect, target, 800.0, count_false_positives=False)
    b = overlap_loss(extra, target, 800.0, count_false_positives=False)
    assert float(a) == pytest.approx(float(b))
    assert float(deepstorm3d_loss(perfect, target, overlap_weight=0.0)) == pytest.approx(0.0,
                                                                                        abs=1e-6)


def test_squared_dice_is_minimal_at_a_soft_target_the_linear_one_is_not():
    gen = torch.Generator().manual_seed(4)
    xyz = torch.tensor([[530.0, 470.0, 1240.0], [1210.0, 880.0, 610.0]])
    target = voxel_grid(xyz, torch.tensor([0, 0]), (1, 16, 16, 16), 110.0, (0.0, 1600.0),
                        trilinear=True)
    exact = 800.0 * target
    # all mass moved into each emitter's largest voxel (the one-voxel answer)
    lumped = torch.zeros_like(target)
    for k in range(2):
        one = voxel_grid(xyz[k:k + 1], torch.tensor([0]), target.shape, 110.0, (0.0, 1600.0),
                         trilinear=True)
        lumped.view(-1)[one.view(-1).argmax()] += 800.0
    sq = overlap_loss(exact, target, 800.0, squares=True)
    assert float(sq) == pytest.approx(0.0, abs=1e-3)
    for _ in range(5):  # any other prediction is worse
        other = (exact + 40.0 * torch.rand(exact.shape, generator=gen) * (target > 0)).clamp(0)
        assert float(overlap_loss(other, target, 800.0, squares=True)) > float(sq)
    assert float(overlap_loss(lumped, target, 800.0, squares=True)) > float(sq)
    # the Σp + Σt form prefers the lumped answer: it biases sub-voxel positions
    assert float(overlap_loss(lumped, target, 800.0)) < float(overlap_loss(exact, target, 800.0))
    with pytest.raises(ValueError, match="false positives"):
        overlap_loss(exact, target, 800.0, count_false_positives=False, squares=True)


def test_blur_3d_is_normalised():
    v = torch.zeros(1, 9, 21, 21)
    v[0, 4, 10, 10] = 1.0
    b = blur_3d(v, 1.0, 1.0)  # the kernel (±3 planes, ±3 px) fits inside the volume
    assert float(b.sum()) == pytest.approx(1.0, rel=1e-5)
    assert float(b[0, 4, 10, 10]) == float(b.max())


@pytest.mark.parametrize("encoding", ["voxel", "trilinear"])
def test_tiny_3d_training_lowers_the_loss_and_runs_on_another_frame_size(tmp_path, encoding):
    from deepsmlm import methods
    from deepsmlm.api import simulate
    from deepsmlm.build import build_patch_sampler
    from deepsmlm.data.datasets import fixed_batches
    from deepsmlm.data.normalizer import Normalizer
    from deepsmlm.inference import Predictor, localize_stack
    from deepsmlm.io.frames import read_stack, write_stack
    from deepsmlm.training.loop import evaluate_loss
    from deepsmlm.training.train import new_network, train

    exp = tiny3d_experiment(target_encoding=encoding)
    s = train(exp, tmp_path / "m", progress=False)
    assert s.method == "deepstorm3d" and s.threshold > 0
    assert s.settings["score"] == {"voxel": "peak", "trilinear": "mass"}[encoding]
    norm = Normalizer.from_dict(s.normalization)
    val = fixed_batches(build_patch_sampler(exp), 8, 4, exp.training.seed + 1)
    crit = methods.get(exp.training.model).loss(exp.training)

    def loss_fn(m, b):
        return crit(m(norm(b.inputs_adu)), b.targets)

    assert s.training["best_val_loss"] < evaluate_loss(new_network(s, exp.training.seed), loss_fn,
                                                          val)
    d = exp.to_dict()
    d["frame"] = {"height_px": 24, "width_px": 20}
    movie = simulate(experiment_from_dict(d), 3, seed=2)
    write_stack(tmp_path / "movie.tif", movie.frames_adu, 100.0)
    pred = Predictor.load(tmp_path / "m")
    em, sr, wf = localize_stack(pred, read_stack(tmp_path / "movie.tif"), progress=False)
    assert sr.shape == (24, 20) and wf.shape == (24, 20)
    if len(em):
        z = em.xyz_nm[:, 2].numpy()
        assert np.all((z >= -600) & (z <= 600))
