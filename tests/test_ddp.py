"""Training on two CPU processes under torchrun (torch DDP, gloo): one model folder that
loads and localizes, a card that says how it was trained, resume; each rank its own
training data and the same validation data."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from deepsmlm.cli import main
from deepsmlm.io.tensors import load_tensors

from .conftest import tiny_fastloc

dist = pytest.importorskip("torch.distributed")
if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("this torch build has no torch.distributed with gloo", allow_module_level=True)

SRC = Path(__file__).resolve().parents[1] / "src"
# plateau schedule: under cosine, max_epochs sets the rate of every step, and the resume
# test below raises max_epochs
TINY = tiny_fastloc(steps_per_epoch=5, max_epochs=2, checkpoint_every_steps=2,
                    lr_schedule="plateau")


def torchrun(*args: str, ranks: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node ranks -m deepsmlm.cli ARGS`` (torchrun is
    ``python -m torch.distributed.run``), one thread per rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", str(ranks), "-m", "deepsmlm.cli", *args],
                          env=env, capture_output=True, text=True, timeout=90)


def val_losses(folder: Path) -> list[float]:
    with open(folder / "curves.csv") as f:
        return [float(r["val_loss"]) for r in csv.DictReader(f)]


def test_torchrun_two_ranks_trains_one_model_that_localizes_and_resumes(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    out = tmp_path / "d"
    run = torchrun("train", str(tmp_path / "tiny.yaml"), "--out", str(out), "--quiet")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("trained 2 epochs") == 1  # rank 0 alone speaks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "tiny.yaml"]  # one folder
    card = json.loads((out / "model.json").read_text())
    t = card["training"]
    assert (t["world_size"], t["effective_batch_size"]) == (2, 8)
    assert t["samples"] == 2 * 5 * 4 * 2  # epochs × steps × batch × ranks
    ckpt = load_tensors(out / "checkpoint" / "last.safetensors")
    assert not torch.equal(ckpt["rng.rank0"], ckpt["rng.rank1"])  # both ranks' generators

    sim, loc = tmp_path / "sim", tmp_path / "loc"
    assert main(["simulate", str(tmp_path / "tiny.yaml"), "--frames", "3", "--out", str(sim),
                 "--seed", "9"]) == 0
    assert main(["localize", str(out), str(sim / "frames.tif"), "--out", str(loc),
                 "--threshold", str(card["threshold"] / 10), "--quiet"]) == 0
    assert (loc / "localizations.csv").read_text().count("\n") > 1

    # --resume with one more epoch under torchrun repeats a 3-epoch run of two ranks
    saved = yaml.safe_load((out / "experiment.yaml").read_text())
    saved["training"]["max_epochs"] = 3
    (out / "experiment.yaml").write_text(yaml.safe_dump(saved))
    run = torchrun("train", "--resume", "--out", str(out), "--quiet")
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((out / "model.json").read_text())["training"]["epochs"] == 3
    (tmp_path / "three.yaml").write_text(yaml.safe_dump(saved))
    run = torchrun("train", str(tmp_path / "three.yaml"), "--out", str(tmp_path / "e"),
                   "--quiet")
    assert run.returncode == 0, run.stderr[-3000:]
    # the same operations in the same order (a sum of two ranks' gradients does not depend
    # on the order), every rank's generator restored: bit for bit
    assert val_losses(out) == val_losses(tmp_path / "e")
    # and two ranks are not one: the second rank's batches moved the weights
    one = tmp_path / "one"
    assert main(["train", str(tmp_path / "three.yaml"), "--out", str(one), "--quiet"]) == 0
    assert val_losses(one) != val_losses(out)


def test_torchrun_time_budget_stops_every_rank_at_the_same_step(tmp_path):
    # rank 0's clock decides and is broadcast: a rank going on alone would wait forever in
    # the gradient all-reduce (the run would time out instead of ending)
    cfg = json.loads(json.dumps(TINY))
    cfg["training"].update(steps_per_epoch=1000, max_epochs=3)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    run = torchrun("train", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "d"),
                   "--max-minutes", "0.005", "--quiet")
    assert run.returncode == 0, run.stderr[-3000:]
    t = json.loads((tmp_path / "d" / "model.json").read_text())["training"]
    assert t["stopped"] == "time budget" and t["epochs"] == 1
    assert 0 < t["samples"] < 1000 * 4 * 2


def test_ranks_draw_their_own_training_batches_and_the_same_validation_batches():
    from deepsmlm.config import experiment_from_dict
    from deepsmlm.training.distributed import Context
    from deepsmlm.training.train import rank_data

    exp = experiment_from_dict(TINY)
    gen0, next0, val0, probe0 = rank_data(exp, Context(rank=0, world_size=2))
    gen1, next1, val1, probe1 = rank_data(exp, Context(rank=1, world_size=2))
    a, b = next0(gen0), next1(gen1)
    assert not torch.equal(a.inputs_adu, b.inputs_adu)
    assert len(val0) == len(val1) == 2
    for v0, v1 in zip(val0, val1, strict=True):
        assert torch.equal(v0.inputs_adu, v1.inputs_adu)
    assert torch.equal(probe0, probe1)  # so every rank fits the same normaliser
    # rank 0 of several draws what a single process draws
    gen, nxt, _, _ = rank_data(exp)
    assert torch.equal(nxt(gen).inputs_adu, next0(torch.Generator().manual_seed(3)).inputs_adu)


def test_context_from_torchrun_environment(monkeypatch):
    from deepsmlm.training.distributed import from_env

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not from_env().enabled and from_env().is_main
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = from_env("cuda")
    assert (ctx.rank, ctx.world_size, ctx.device, ctx.is_main) == (3, 4, "cuda:1", False)
    assert from_env("cpu").device == "cpu"


def test_design_under_torchrun_is_refused(monkeypatch, tmp_path):
    from deepsmlm.errors import UserError
    from deepsmlm.steps.design import run_design

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(UserError, match="one process"):
        run_design(None, tmp_path / "d")
