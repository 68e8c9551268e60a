"""Temporal context (fastloc ``training.context_frames``): the windows a frame is read in,
the simulated windows' emitters, the input shapes, and a model folder that localizes a
streamed movie the same whatever the chunking."""

import numpy as np
import pytest
import torch

from deepsmlm.data.context import stack_windows, stay_probability, window_emitters, windows
from deepsmlm.emitters import EmitterSet

from .conftest import tiny_fastloc


def test_windows_are_the_neighbours_in_time_order_with_the_ends_repeated():
    frames = torch.arange(5.0)[:, None, None].expand(5, 2, 3)
    w = windows(frames, 1)
    assert w.shape == (5, 3, 2, 3)
    assert w[:, :, 0, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 4]]
    assert windows(frames, 0).shape == (5, 1, 2, 3)
    # frames beyond the block (a streamed chunk) are used where given, repeated where not
    w = windows(frames[1:3], 2, before=frames[:1], after=frames[3:])
    assert w[:, :, 0, 0].tolist() == [[0, 0, 1, 2, 3], [0, 1, 2, 3, 4]]
    # the stack version (training from a user's stack) agrees
    s = stack_windows(frames.numpy(), np.array([0, 2, 4]), 1)
    assert s[:, :, 0, 0].tolist() == [[0, 0, 1], [1, 2, 3], [3, 4, 4]]


def test_stay_probability_of_geometric_on_times():
    assert stay_probability(2.0) == pytest.approx(0.5)
    assert stay_probability(1.0) == 0.0  # on for exactly one frame: never in the next
    assert stay_probability(4.0) == pytest.approx(0.75)


def _draw(per_frame: int):
    def draw(n, g):
        xyz = torch.rand(n * per_frame, 3, generator=g) * 1000
        return EmitterSet(xyz, torch.full((n * per_frame,), 1000.0),
                          torch.arange(n).repeat_interleave(per_frame))
    return draw


def test_window_emitters_carry_the_centre_emitters_into_neighbours_at_p_stay():
    g = torch.Generator().manual_seed(0)
    n, k, per_frame, p_stay = 400, 2, 10, 0.6
    em, centre = window_emitters(_draw(per_frame), n, k, p_stay, g)
    f = 2 * k + 1
    j = em.frame % f
    assert set(j[centre].tolist()) == {k}  # the mask marks exactly the centre frames
    assert (em.frame // f).max() == n - 1
    # density is the same in every frame of a window (carried + fresh = per_frame on average)
    for jj in range(f):
        assert (j == jj).sum().item() / n == pytest.approx(per_frame, rel=0.05)
    # the fraction of the centre's positions found again 1 and 2 frames out: p_stay, p_stay²
    key = {tuple(v) for v in em.xyz_nm[centre].tolist()}
    for d, expected in ((1, p_stay), (2, p_stay ** 2)):
        out = em.xyz_nm[(j == k + d)].tolist()
        again = sum(tuple(v) in key for v in out) / (n * per_frame)
        assert again == pytest.approx(expected, abs=0.03)


def test_sampler_gives_windows_and_the_centre_frames_targets():
    from deepsmlm.build import build_patch_sampler
    from deepsmlm.config import experiment_from_dict

    d = tiny_fastloc(context_frames=2)
    d["emitters"]["blinking"] = {"mean_on_frames": 3.0, "duty_cycle": 0.05}
    exp = experiment_from_dict(d)
    sampler = build_patch_sampler(exp)
    assert sampler.p_stay == pytest.approx(2 / 3)
    b = sampler(32, torch.Generator().manual_seed(1))
    assert b.inputs_adu.shape == (32, 5, 16, 16)
    assert b.targets["truth"].shape[0] == 32 and b.targets["background"].shape == (32, 16, 16)
    assert len(b.emitters) > 20 and b.emitters.frame.max() < 32
    # the targets are the centre frame's emitters: at their pixels the centre frame is the
    # brightest on average (the neighbours hold them only with probability 2/3, 4/9)
    r = (b.emitters.xyz_nm[:, 1] / 100).long().clamp(0, 15)
    c = (b.emitters.xyz_nm[:, 0] / 100).long().clamp(0, 15)
    mean = b.inputs_adu[b.emitters.frame, :, r, c].mean(0)  # (5,)
    assert int(mean.argmax()) == 2
    assert mean[2] > 1.2 * mean[[0, 1, 3, 4]].mean()


def test_network_reads_2k_plus_1_channels():
    from deepsmlm import methods
    from deepsmlm.methods.base import Scene
    from deepsmlm.training.model_folder import ModelCard

    fl = methods.get("fastloc")
    t = fl.section.model_validate({"model": "fastloc", "width": 8, "context_frames": 1})
    card = ModelCard("fastloc", 100.0, 1, {}, fl.card_settings(t, Scene(100.0, (0.0, 0.0),
                                                                         4000.0, 20.0)))
    net = fl.build_network(card)
    assert net.enc1[0][0].in_channels == 3
    assert net(torch.zeros(2, 3, 16, 16)).shape[-2:] == (16, 16)
    with pytest.raises(RuntimeError):
        net(torch.zeros(2, 1, 16, 16))


def test_context_model_localizes_a_movie_the_same_in_any_chunks(tmp_path):
    """A model with context trains, loads and localizes through the streaming path; chunks
    of 7 frames (their context read from the neighbouring chunks) give what one pass gives."""
    from deepsmlm.api import simulate
    from deepsmlm.config import experiment_from_dict
    from deepsmlm.inference import Predictor, localize_stack
    from deepsmlm.io.frames import Stack
    from deepsmlm.training.train import train

    d = tiny_fastloc(density_per_um2=0.8, context_frames=1, steps_per_epoch=4, max_epochs=1)
    d["emitters"]["blinking"] = {"mean_on_frames": 2.0, "duty_cycle": 0.05}
    exp = experiment_from_dict(d)
    train(exp, tmp_path / "m", progress=False)
    pred = Predictor.load(tmp_path / "m")
    assert pred.context_frames == 1
    movie = simulate(exp, 20, seed=4)
    stack = Stack(movie.frames_adu.astype(np.float32), None, tmp_path / "movie.tif", False)
    whole, _, _ = localize_stack(pred, stack, chunk_frames=64, progress=False)
    chunked, _, _ = localize_stack(pred, stack, chunk_frames=7, batch_size=3, progress=False)
    assert len(whole) > 0
    assert torch.equal(whole.frame, chunked.frame)
    assert torch.allclose(whole.xyz_nm, chunked.xyz_nm, atol=1e-3)


def test_context_model_through_the_cli_and_dask_workers_reads_the_neighbouring_chunks(
        tmp_path):
    """`deepsmlm localize --dask local:2 --chunk-frames 8` on a context model gives the
    table of the single-process run on one thread (same chunks and batches, so the same
    arithmetic): each worker reads the frames just outside its chunk, as the single process
    does (which ``test_context_model_localizes_a_movie_the_same_in_any_chunks`` checks
    against one pass)."""
    import torch
    import yaml

    from deepsmlm.cli import main

    pytest.importorskip("distributed")
    d = tiny_fastloc(density_per_um2=0.8, context_frames=1, steps_per_epoch=4, max_epochs=1)
    d["emitters"]["blinking"] = {"mean_on_frames": 2.0, "duty_cycle": 0.05}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(d))
    assert main(["train", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "m"),
                 "--quiet"]) == 0
    assert main(["simulate", str(tmp_path / "exp.yaml"), "--frames", "24", "--out",
                 str(tmp_path / "sim"), "--seed", "5"]) == 0
    movie = str(tmp_path / "sim" / "frames.tif")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker computes
    try:
        assert main(["localize", str(tmp_path / "m"), movie, "--out", str(tmp_path / "one"),
                     "--chunk-frames", "8", "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert main(["localize", str(tmp_path / "m"), movie, "--out", str(tmp_path / "dask"),
                 "--chunk-frames", "8", "--dask", "local:2", "--quiet"]) == 0
    one = (tmp_path / "one" / "localizations.csv").read_text()
    assert one.count("\n") > 2
    assert (tmp_path / "dask" / "localizations.csv").read_text() == one
