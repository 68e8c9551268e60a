"""Checkpoints survive a crash: one atomic file, written mid-epoch every
``training.checkpoint_every_steps``, and a resumed run repeats the uninterrupted one."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from deepsmlm.cli import main
from deepsmlm.io.tensors import load_tensors

from .conftest import tiny_fastloc

SRC = Path(__file__).resolve().parents[1] / "src"
# fastloc at its smallest: ≈ 10–30 ms a step on one core; 5 epochs × 10 steps
TINY = tiny_fastloc(steps_per_epoch=10, max_epochs=5, checkpoint_every_steps=3)
TOTAL_STEPS = 50


def write_tiny(folder: Path, **training) -> Path:
    exp = json.loads(json.dumps(TINY))
    exp["training"].update(training)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "deepsmlm.cli", *args]


def env() -> dict:
    # one thread: the same floating-point operations in the same order in every process
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def checkpoint_fit(folder: Path) -> dict | None:
    """The fit state in ``folder``'s checkpoint, None while there is none."""
    from safetensors import safe_open

    path = folder / "checkpoint" / "last.safetensors"
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["deepsmlm.checkpoint"])["fit"]


def curves(folder: Path) -> list[dict]:
    with open(folder / "curves.csv") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_kill_9_at_a_random_step_then_resume_repeats_the_uninterrupted_run(tmp_path):
    exp = write_tiny(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    # killed once a checkpoint inside an epoch is at least this many steps in (seeded)
    kill_after = random.Random(17).randrange(3, TOTAL_STEPS - 20)
    proc = subprocess.Popen(cli("train", str(exp), "--out", str(a), "--quiet"), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            fit = checkpoint_fit(a)
            if fit is not None and fit["steps"] >= kill_after and fit["step"] > 0:
                os.kill(proc.pid, signal.SIGKILL)
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.002)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = checkpoint_fit(a)
    assert kill_after <= killed_at["steps"] < TOTAL_STEPS  # it died mid-run,
    assert killed_at["step"] > 0  # in the middle of an epoch (the next save is 3 steps on)
    assert not (a / "model.json").is_file() or json.loads(
        (a / "model.json").read_text())["threshold"] is None  # and never finished

    done = subprocess.run(cli("train", "--resume", "--out", str(a), "--quiet"), env=env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    full = subprocess.run(cli("train", str(exp), "--out", str(b), "--quiet"), env=env(),
                          capture_output=True, text=True, timeout=120)
    assert full.returncode == 0, full.stderr

    card_a = json.loads((a / "model.json").read_text())
    card_b = json.loads((b / "model.json").read_text())
    assert card_a["training"]["epochs"] == card_b["training"]["epochs"] == 5
    # Resume restores weights, Adam moments, scheduler, the generator's state, the step in
    # the epoch and its running losses; with one thread the CPU repeats the same operations
    # in the same order, so the resumed run is the uninterrupted one bit for bit (any
    # tolerance would hide a lost or repeated batch, which moves the loss by ≈ 1e-3).
    assert card_a["training"]["best_val_loss"] == card_b["training"]["best_val_loss"]
    assert curves(a) == curves(b)
    wa, wb = load_tensors(a / "weights.safetensors"), load_tensors(b / "weights.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wb)
    assert not list((a / "checkpoint").glob("*.tmp"))  # a half-written temporary is cleared


def test_a_checkpoint_cut_in_half_is_a_clear_error_on_resume(tmp_path, capsys):
    exp = write_tiny(tmp_path, steps_per_epoch=3, max_epochs=1)
    out = tmp_path / "m"
    assert main(["train", str(exp), "--out", str(out), "--quiet"]) == 0
    # the checkpoint is one file (no JSON beside it that a crash could leave out of step)
    assert [p.name for p in (out / "checkpoint").iterdir()] == ["last.safetensors"]
    path = out / "checkpoint" / "last.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err and "damaged" in err and "Traceback" not in err


class Crash(Exception):
    """What kills the process in ``test_mid_epoch_resume...`` (no checkpoint on the way)."""


def test_mid_epoch_checkpoint_resumes_at_its_step_and_repeats_the_run(tmp_path, monkeypatch):
    """In-process and deterministic: the run dies drawing its 8th batch; the last
    checkpoint is that of step 6, in the middle of epoch 2 (4 steps an epoch)."""
    from deepsmlm.config import experiment_from_dict
    from deepsmlm.training import train as train_module

    cfg = json.loads(json.dumps(TINY))
    cfg["training"].update(steps_per_epoch=4, max_epochs=3, checkpoint_every_steps=3)
    exp = experiment_from_dict(cfg)
    train_module.train(exp, tmp_path / "b", progress=False)

    real = train_module._simulated_data

    def crashing(e):
        next_batch, val, probe = real(e)
        drawn = 0

        def draw(g):
            nonlocal drawn
            drawn += 1
            if drawn == 8:
                raise Crash
            return next_batch(g)

        return draw, val, probe

    monkeypatch.setattr(train_module, "_simulated_data", crashing)
    with pytest.raises(Crash):
        train_module.train(exp, tmp_path / "a", progress=False)
    fit = checkpoint_fit(tmp_path / "a")
    assert (fit["epoch"], fit["step"], fit["steps"], len(fit["losses"])) == (1, 2, 6, 2)
    monkeypatch.setattr(train_module, "_simulated_data", real)
    card = train_module.train(exp, tmp_path / "a", resume=True, progress=False)
    assert card.training["best_val_loss"] == json.loads(
        (tmp_path / "b" / "model.json").read_text())["training"]["best_val_loss"]
    assert curves(tmp_path / "a") == curves(tmp_path / "b")  # steps and train losses too


def test_a_format_1_checkpoint_still_resumes(tmp_path):
    """Format 1 (deepsmlm 0.1.0) was last.safetensors (tensors, rng) + state.json (the rest)."""
    from safetensors import safe_open

    from deepsmlm.io.tensors import save_tensors, write_json

    exp = write_tiny(tmp_path, steps_per_epoch=3, max_epochs=1)
    out = tmp_path / "m"
    assert main(["train", str(exp), "--out", str(out), "--quiet"]) == 0
    path = out / "checkpoint" / "last.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["deepsmlm.checkpoint"])
    tensors = load_tensors(path)
    old = {k: v for k, v in tensors.items() if k.startswith(("model.", "optim."))}
    old["rng"] = tensors["rng.rank0"]
    save_tensors(old, path)
    for key in ("step", "losses", "steps"):
        del meta["fit"][key]
    write_json(out / "checkpoint" / "state.json", {k: meta[k] for k in
                                                   ("fit", "optimizer", "scheduler")})
    saved = yaml.safe_load((out / "experiment.yaml").read_text())
    saved["training"]["max_epochs"] = 2
    (out / "experiment.yaml").write_text(yaml.safe_dump(saved))
    assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "model.json").read_text())["training"]["epochs"] == 2
    assert not (out / "checkpoint" / "state.json").exists()  # replaced by the one file
    assert "deepsmlm.checkpoint" in safe_open(str(path), "pt").metadata()


def test_checkpoint_every_steps_is_validated():
    from deepsmlm.config import experiment_from_dict
    from deepsmlm.errors import UserError

    cfg = json.loads(json.dumps(TINY))
    cfg["training"]["checkpoint_every_steps"] = 0
    with pytest.raises(UserError, match="checkpoint_every_steps"):
        experiment_from_dict(cfg)
