"""Train a model of any registered method for an experiment; write its model folder.

Frames are simulated on the fly (``build.build_patch_sampler``) — or cut from a user's
simulated stack with its ground truth — the network is fitted with the method's loss, the
best weights are kept, and the detection threshold is tuned on the fixed validation set for
the highest Jaccard index. The folder then holds everything needed to run the model.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from deepsmlm.build import (
    build_camera,
    build_method,
    build_patch_sampler,
    build_scene,
    context_frames,
)
from deepsmlm.data.datasets import Batch, batches_from_stack, fixed_batches, to_device
from deepsmlm.data.normalizer import Normalizer
from deepsmlm.emitters import EmitterSet
from deepsmlm.models.deepstorm import count_weights
from deepsmlm.training import distributed
from deepsmlm.training.loop import Checkpoints, fit
from deepsmlm.training.model_folder import ModelCard, ModelFolder, versions


def new_network(card: ModelCard, seed: int) -> torch.nn.Module:
    """The untrained network of ``card``; initialised from ``seed`` without touching the
    global random state."""
    from deepsmlm import methods

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return methods.get(card.method).build_network(card)


def new_card(exp, normalizer: Normalizer) -> ModelCard:
    """The card of an untrained model of the experiment (threshold not yet tuned)."""
    method, t = build_method(exp), exp.training
    return ModelCard(method.name, exp.optics.pixel_size_nm, method.upsampling(t),
                     normalizer.to_dict(), method.card_settings(t, build_scene(exp)),
                     versions=versions())


def tune_threshold(model, normalizer: Normalizer, batches: list[Batch], card: ModelCard,
                   device, objective: str = "jaccard") -> dict:
    """Threshold (and the method's ``decoding_options``, if it has them: each is tried
    with every threshold, the best written into card.settings) with the highest
    ``objective`` on ``batches`` (the method's tuning match): "jaccard", or "efficiency"
    (``tuning_score``)."""
    from deepsmlm import methods
    from deepsmlm.evaluation.matching import match_at_thresholds
    from deepsmlm.evaluation.metrics import summarize

    method = methods.get(card.method)
    model.eval()
    outs, truths, offset = [], [], 0
    with torch.no_grad():
        for b in batches:
            outs.append(model(normalizer(b.inputs_adu).to(device)).cpu())
            e = b.emitters
            truths.append(EmitterSet(e.xyz_nm, e.photons, e.frame + offset, e.id,
                                     species=e.species))
            offset += len(b.inputs_adu)
    raw = torch.cat(outs)
    truth = EmitterSet.cat(truths).numpy()
    fit_z = bool(np.isfinite(method.tuning_match(card).get("tol_z_nm", np.inf)))
    best, best_score = None, -np.inf
    thresholds = method.thresholds(card)
    options = getattr(method, "decoding_options", lambda c: ({},))(card)
    for option in options:  # decoding settings tried with every threshold (the best kept)
        trial = dataclasses.replace(card, settings={**card.settings, **option})
        # the maxima do not depend on the threshold: find them once, then filter by score
        found, peaks = method.decode(trial, raw, float(thresholds[0]), return_peaks=True)
        pred = found.numpy()
        # scores compared in their own precision (float32), as decoding compares them
        matchings = match_at_thresholds(truth["frame"], truth["xyz_nm"], pred["frame"],
                                        pred["xyz_nm"], peaks.numpy(),
                                        np.asarray(thresholds, peaks.numpy().dtype),
                                        **method.tuning_match(card))
        for thr, m in zip(thresholds, matchings, strict=True):
            r = summarize(m, truth["xyz_nm"], pred["xyz_nm"])
            score = tuning_score(r, objective, fit_z)
            if best is None or score > best_score:
                best_score = score
                e = tuning_score(r, "efficiency", fit_z)
                best = {"threshold": float(thr), "jaccard": tuning_score(r, "jaccard", fit_z),
                        "efficiency": e if e > -1000.0 else None,
                        "rmse_xy_nm": r["rmse_xy_nm"], "rmse_z_nm": r["rmse_z_nm"],
                        "recall": r["recall"], "precision": r["precision"],
                        "objective": objective, **option}
    card.settings.update({k: best[k] for k in options[0]})
    if hasattr(method, "calibrate_uncertainty"):  # the σ it reports, scaled to the errors
        best["uncertainty_calibration"] = method.calibrate_uncertainty(
            card, raw, truth, best["threshold"], uncertainty_match(method, card))
    model.train()
    return best


TUNING_OBJECTIVES = ("jaccard", "efficiency")


def tuning_score(r: dict, objective: str, fit_z: bool) -> float:
    """What tuning maximises, from ``evaluation.metrics.summarize``'s ``r``: the Jaccard
    [%], or the SMLM Challenge's efficiency [%] (lateral; with ``fit_z`` the mean of the
    lateral and axial). No detection at all scores −1 (Jaccard) or −1000 (efficiency)."""
    if objective not in TUNING_OBJECTIVES:
        raise ValueError(f"objective must be one of {TUNING_OBJECTIVES}, got {objective!r}")
    if objective == "jaccard":
        return -1.0 if np.isnan(r["jaccard"]) else float(r["jaccard"])
    e = (r["efficiency_xy"] + r["efficiency_z"]) / 2 if fit_z else r["efficiency_xy"]
    return -1000.0 if np.isnan(e) else float(e)


def uncertainty_match(method, card) -> dict:
    """Keyword arguments of ``evaluation.matching.match`` for the matches σ is fitted on:
    ``UNCERTAINTY_MATCH``, lateral only for a method whose tuning ignores depth (2D)."""
    from deepsmlm.evaluation.metrics import UNCERTAINTY_MATCH

    if np.isfinite(method.tuning_match(card).get("tol_z_nm", np.inf)):
        return dict(UNCERTAINTY_MATCH)
    return {**UNCERTAINTY_MATCH, "tol_z_nm": np.inf}


def train(exp, out: str | Path, *, max_minutes=None, resume: bool = False,
          device: str = "cpu", progress: bool = True,
          stack: tuple[np.ndarray, EmitterSet] | None = None) -> ModelCard:
    """Train the method of ``exp.training.model`` into the model folder ``out`` (a new
    run, or the run there continued with ``resume``); returns the final card.

    Started by ``torchrun`` (``RANK``/``WORLD_SIZE`` set), every process runs this: the
    network trains under DistributedDataParallel, each rank on its own simulated data, and
    rank 0 writes the folder (``training/distributed.py``)."""
    with distributed.session(device) as ctx:
        return _train(exp, out, ctx, max_minutes=max_minutes, resume=resume,
                      progress=progress and ctx.is_main, stack=stack)


def _train(exp, out, ctx: distributed.Context, *, max_minutes, resume: bool, progress: bool,
           stack) -> ModelCard:
    folder = ModelFolder(out)
    ckpt = Checkpoints(folder.path)
    t = exp.training
    device = ctx.device
    method = build_method(exp)
    camera = build_camera(exp)
    gen, next_batch, val, probe = rank_data(exp, ctx, stack)
    if ctx.is_main:
        folder.path.mkdir(parents=True, exist_ok=True)  # only once the data can be made
    if resume:
        card = folder.read_card()
        normalizer = Normalizer.from_dict(card.normalization)
    else:  # the same on every rank (the probe is seeded): rank 0 writes it
        normalizer = Normalizer.fit(t.normalization, camera, probe)
        card = new_card(exp, normalizer)
        if ctx.is_main:
            folder.write_experiment(exp)
            folder.write_card(card)
    model = new_network(card, t.seed).to(device)
    card.weights = count_weights(model)

    criterion = method.loss(t)

    def loss_fn(m, b: Batch):
        return criterion(m(normalizer(b.inputs_adu).to(device)), to_device(b.targets, device))

    t0 = time.perf_counter()
    state = fit(model, loss_fn, next_batch, val, ckpt, lr=t.learning_rate,
                steps_per_epoch=t.steps_per_epoch, max_epochs=t.max_epochs,
                lr_patience=t.lr_patience_epochs, min_lr=t.min_learning_rate,
                early_stop=t.early_stop_epochs, max_minutes=max_minutes, generator=gen,
                resume=resume, progress=progress, schedule=t.lr_schedule,
                checkpoint_every=t.checkpoint_every_steps, ctx=ctx)
    if ctx.is_main:  # the threshold is tuned once; the other ranks wait
        model.load_state_dict(folder.read_weights())
        tuned = tune_threshold(model, normalizer, tuning_batches(exp, val, stack), card,
                               device, t.tune_objective)
        card.threshold, card.validation = tuned["threshold"], tuned
        card.training = {"epochs": state.epoch, "stopped": state.stopped,
                         "seconds": state.seconds, "best_val_loss": state.best_val,
                         "samples": sum(h["steps"] for h in state.history) * t.batch_size
                         * ctx.world_size,
                         "world_size": ctx.world_size,
                         "effective_batch_size": t.batch_size * ctx.world_size,
                         "device": str(device), "session_seconds": time.perf_counter() - t0}
        folder.write_card(card)
        folder.write_curves(state.history)
    ctx.barrier()
    return card  # on the other ranks: as trained, threshold not tuned (they write nothing)


def tuning_batches(exp, val: list[Batch], stack) -> list[Batch]:
    """The patches the threshold and σ are tuned on: ``training.tune_frames`` simulated with
    the validation seed (the validation batches themselves when that is their number, or
    for a training from a user's stack)."""
    t = exp.training
    n = t.tune_frames or t.val_frames
    if stack is not None or n == t.val_frames:
        return val
    return fixed_batches(build_patch_sampler(exp), n, t.batch_size, t.seed + 1)


def rank_data(exp, ctx: distributed.Context = distributed.SINGLE,
              stack: tuple[np.ndarray, EmitterSet] | None = None):
    """(training generator, next_batch, validation batches, normalisation probe) of this
    rank: its own training draws (generator seeded ``rank_seed(seed, rank)``), the same
    validation batches and probe on every rank."""
    gen = torch.Generator().manual_seed(distributed.rank_seed(exp.training.seed, ctx.rank))
    data = _simulated_data(exp) if stack is None else _stack_data(exp, stack)
    return (gen, *data)


def _simulated_data(exp):
    """(next_batch, validation batches, normalisation probe) simulated on the fly."""
    t = exp.training
    sampler = build_patch_sampler(exp)
    probe = sampler(64, torch.Generator().manual_seed(t.seed + 2)).inputs_adu
    val = fixed_batches(sampler, t.val_frames, t.batch_size, t.seed + 1)
    return (lambda g: sampler(t.batch_size, g)), val, probe


def _stack_data(exp, stack: tuple[np.ndarray, EmitterSet]):
    """The same from a user's stack + ground truth; the last fifth of the frames validates."""
    t = exp.training
    encode = build_method(exp).encoder(t, build_scene(exp))
    frames, truth = stack
    px = exp.optics.pixel_size_nm
    n_val = max(1, len(frames) // 5)
    first_val = len(frames) - n_val
    sel_val = truth.frame >= first_val
    tr_truth, va_truth = truth.subset(~sel_val), truth.subset(sel_val)
    va_truth.frame = va_truth.frame - first_val
    tr_frames, va_frames = frames[:first_val], frames[first_val:]
    vgen = torch.Generator().manual_seed(t.seed + 1)
    k = context_frames(exp)
    val = [batches_from_stack(va_frames, va_truth, px, t.patch_px, encode, t.batch_size, vgen,
                              k) for _ in range(max(1, t.val_frames // t.batch_size))]
    probe = torch.from_numpy(np.asarray(tr_frames[:64], dtype=np.float32))

    def next_batch(g):
        return batches_from_stack(tr_frames, tr_truth, px, t.patch_px, encode, t.batch_size, g,
                                  k)

    return next_batch, val, probe
