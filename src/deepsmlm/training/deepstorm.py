"""Train a Deep-STORM (2D) or DeepSTORM3D model for an experiment; write its model folder.

Frames are simulated on the fly (``data.datasets.PatchSampler``) — or cut from a user's
simulated stack with its ground truth — the network is fitted with the Deep-STORM loss, the
best weights are kept, and the detection threshold is tuned on the fixed validation set for
the highest Jaccard index. The folder then holds everything needed to run the model.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from deepsmlm import methods
from deepsmlm.build import build_camera
from deepsmlm.config import Experiment, save_experiment
from deepsmlm.data.datasets import (
    Batch,
    Normalizer,
    PatchSampler,
    batches_from_stack,
    fixed_batches,
)
from deepsmlm.emitters import EmitterSet
from deepsmlm.errors import UserError
from deepsmlm.io.models import load_tensors, read_json, write_json
from deepsmlm.models.deepstorm import count_weights
from deepsmlm.training.loop import fit, open_run


def new_model(t, settings: dict) -> torch.nn.Module:
    """The untrained network; initialised from ``t.seed`` without touching the global
    random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(t.seed)
        return methods.build_model(settings)


def tune_threshold(model, normalizer: Normalizer, batches: list[Batch], settings: dict,
                   device) -> dict:
    """Threshold with the highest Jaccard on ``batches`` (matching: ``methods.tuning_match``)."""
    from deepsmlm.evaluation.metrics import evaluate

    model.eval()
    outs, truths, offset = [], [], 0
    with torch.no_grad():
        for b in batches:
            outs.append(model(normalizer(b.inputs_adu).to(device)).cpu())
            e = b.emitters
            truths.append(EmitterSet(e.xyz_nm, e.photons, e.frame + offset, e.id))
            offset += len(b.inputs_adu)
    sr = torch.cat(outs)
    truth = EmitterSet.cat(truths).numpy()
    best = None
    thresholds = settings["target_scale"] * np.geomspace(0.002, 1.0, 32)
    # the maxima do not depend on the threshold: find them once, then filter by peak
    found, peaks = methods.decode(settings, sr, float(thresholds[0]), return_peaks=True)
    for thr in thresholds:
        pred = found.subset(peaks > thr).numpy()
        r = evaluate(truth["frame"], truth["xyz_nm"], pred["frame"], pred["xyz_nm"],
                     **methods.tuning_match(settings))
        score = -1.0 if np.isnan(r["jaccard"]) else r["jaccard"]
        if best is None or score > best["jaccard"]:
            best = {"threshold": float(thr), "jaccard": score, "rmse_xy_nm": r["rmse_xy_nm"],
                    "rmse_z_nm": r["rmse_z_nm"], "recall": r["recall"],
                    "precision": r["precision"]}
    model.train()
    return best


def train_deepstorm(exp: Experiment | str | Path, out: str | Path, *, max_minutes=None,
                    resume: bool = False, device: str = "cpu", progress: bool = True,
                    stack: tuple[np.ndarray, EmitterSet] | None = None) -> dict:
    """Train and write the model folder ``out``; returns the model settings (model.json)."""
    out = Path(out)
    exp, ckpt = open_run(exp, out, resume)
    t = exp.training
    gen = torch.Generator().manual_seed(t.seed)
    camera = build_camera(exp)
    next_batch, val, probe = _simulated_data(exp) if stack is None else _stack_data(exp, stack)
    out.mkdir(parents=True, exist_ok=True)  # only once the data can be made
    if resume:
        settings = read_json(out / "model.json")
        normalizer = Normalizer.from_dict(settings["normalization"])
    else:
        normalizer = Normalizer.fit(t.normalization, camera, probe)
        settings = methods.settings_for(exp, normalizer)
        save_experiment(exp, out / "experiment.yaml")
        write_json(out / "model.json", settings)
    model = new_model(t, settings).to(device)
    settings["weights"] = count_weights(model)

    criterion = methods.loss(t)

    def loss_fn(m, b: Batch):
        return criterion(m(normalizer(b.inputs_adu).to(device)), b.spikes.to(device))

    t0 = time.perf_counter()
    state = fit(model, loss_fn, next_batch, val, ckpt, lr=t.learning_rate,
                steps_per_epoch=t.steps_per_epoch, max_epochs=t.max_epochs,
                lr_patience=t.lr_patience_epochs, min_lr=t.min_learning_rate,
                early_stop=t.early_stop_epochs, max_minutes=max_minutes, generator=gen,
                resume=resume, progress=progress, schedule=t.lr_schedule)
    model.load_state_dict(load_tensors(ckpt.best_path))
    tuned = tune_threshold(model, normalizer, val, settings, device)
    settings.update(threshold=tuned["threshold"], validation=tuned,
                    training={"epochs": state.epoch, "stopped": state.stopped,
                              "seconds": state.seconds, "best_val_loss": state.best_val,
                              "samples": sum(h["steps"] for h in state.history) * t.batch_size,
                              "device": str(device), "session_seconds":
                                  time.perf_counter() - t0})
    write_json(out / "model.json", settings)
    write_curves(state.history, out)
    return settings


def _simulated_data(exp: Experiment):
    """(next_batch, validation batches, normalisation probe) simulated on the fly."""
    t = exp.training
    sampler = PatchSampler(exp)
    probe = sampler(64, torch.Generator().manual_seed(t.seed + 2)).inputs_adu
    val = fixed_batches(sampler, t.val_frames, t.batch_size, t.seed + 1)
    return (lambda g: sampler(t.batch_size, g)), val, probe


def _stack_data(exp: Experiment, stack: tuple[np.ndarray, EmitterSet]):
    """The same from a user's stack + ground truth; the last fifth of the frames validates."""
    t = exp.training
    if t.model != "deepstorm":
        raise UserError("training from a stack (--stack/--truth) is for Deep-STORM 2D models")
    frames, truth = stack
    px = exp.optics.pixel_size_nm
    n_val = max(1, len(frames) // 5)
    first_val = len(frames) - n_val
    sel_val = truth.frame >= first_val
    tr_truth, va_truth = truth.subset(~sel_val), truth.subset(sel_val)
    va_truth.frame = va_truth.frame - first_val
    tr_frames, va_frames = frames[:first_val], frames[first_val:]
    vgen = torch.Generator().manual_seed(t.seed + 1)
    val = [batches_from_stack(va_frames, va_truth, px, t.patch_px, t.upsampling, t.batch_size,
                              vgen) for _ in range(max(1, t.val_frames // t.batch_size))]
    probe = torch.from_numpy(np.asarray(tr_frames[:64], dtype=np.float32))

    def next_batch(g):
        return batches_from_stack(tr_frames, tr_truth, px, t.patch_px, t.upsampling,
                                  t.batch_size, g)

    return next_batch, val, probe


def write_curves(history: list[dict], out: Path) -> None:
    from deepsmlm.io.atomic import atomic_write_text
    from deepsmlm.plotting import training_curves

    keys = ["epoch", "steps", "train_loss", "val_loss", "lr", "seconds"]
    lines = [",".join(keys)] + [",".join(f"{h[k]:.6g}" for k in keys) for h in history]
    atomic_write_text(out / "curves.csv", "\n".join(lines) + "\n")
    if history:
        training_curves(history, out / "curves.png")
