"""A small ``fit()``: epochs of on-the-fly batches, validation, LR schedule, early stop,
best/last checkpoints, a time budget, resume (also after Ctrl-C or kill -9), progress with
ETA, and several processes (torch DDP, ``training/distributed.py``).

The checkpoint is one file, ``checkpoint/last.safetensors``, written atomically (temporary
name, then ``os.replace``): the weights, the optimiser's tensors, every rank's generator
state and the best weights so far as tensors; the fit state (epoch, step within the epoch,
running losses, history), the optimiser's scalars and the scheduler as JSON in the file's
safetensors metadata. A crash at any moment leaves either the previous checkpoint or the new
one, never a mixed pair. (Checkpoints of format 1 — ``last.safetensors`` beside
``state.json`` — are still read.)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from deepsmlm.errors import UserError
from deepsmlm.io.atomic import remove_stale_temporaries
from deepsmlm.io.tensors import (
    optimizer_from_tensors,
    optimizer_to_tensors,
    read_json,
    save_tensors,
)
from deepsmlm.training.distributed import SINGLE, Context

META_KEY = "deepsmlm.checkpoint"  # the safetensors metadata entry that holds the JSON state
CHECKPOINT_FORMAT = 2  # 1: last.safetensors + state.json (two files)


@dataclass
class FitState:
    epoch: int = 0  # completed epochs
    best_val: float = float("inf")
    bad_epochs: int = 0
    seconds: float = 0.0  # training time so far, over all sessions
    history: list[dict] = field(default_factory=list)
    stopped: str = ""
    step: int = 0  # steps done in the current (unfinished) epoch
    losses: list[float] = field(default_factory=list)  # their training losses
    steps: int = 0  # optimiser steps over all epochs and sessions


class Checkpoints:
    """``folder/weights.safetensors`` (best) and ``folder/checkpoint/last.safetensors``
    (last, resumable)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.ckpt = self.folder / "checkpoint"

    @property
    def best_path(self) -> Path:
        return self.folder / "weights.safetensors"

    @property
    def path(self) -> Path:
        return self.ckpt / "last.safetensors"

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, model: nn.Module, opt, sched, gen: torch.Generator, state: FitState,
             best: dict[str, torch.Tensor] | None, ctx: Context = SINGLE) -> None:
        """One atomic file (rank 0 writes; every rank takes part: the generator states are
        gathered). ``best``: the best weights so far (None before the first validation)."""
        rngs = ctx.gather_states(gen.get_state())
        if ctx.is_main:
            tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
            opt_t, opt_meta = optimizer_to_tensors(opt)
            tensors.update(opt_t)
            tensors.update({f"rng.rank{r}": s for r, s in enumerate(rngs)})
            if best is not None:
                tensors.update({f"best.{k}": v for k, v in best.items()})
            meta = {"format": CHECKPOINT_FORMAT, "fit": asdict(state), "optimizer": opt_meta,
                    "scheduler": sched.state_dict(), "world_size": ctx.world_size}
            save_tensors(tensors, self.path,
                         metadata={META_KEY: json.dumps(meta, default=float)})
            stale = self.ckpt / "state.json"  # a format-1 checkpoint this one replaces
            if stale.is_file():
                stale.unlink()
        ctx.barrier()

    def _read(self) -> tuple[dict[str, torch.Tensor], dict]:
        from safetensors import safe_open

        if not self.path.is_file():
            raise UserError(f"--resume: no checkpoint in {self.folder}")
        try:
            with safe_open(str(self.path), "pt") as f:
                text = (f.metadata() or {}).get(META_KEY)
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # safetensors raises its own error types
            raise UserError(f"--resume: the checkpoint {self.path} is damaged ({err}); "
                            "start again without --resume in a new folder") from None
        if text is None:  # format 1: the JSON beside it
            return tensors, read_json(self.ckpt / "state.json")
        try:
            return tensors, json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"--resume: the checkpoint {self.path} is damaged ({err})") from None

    def load(self, model: nn.Module, opt, sched, gen: torch.Generator,
             ctx: Context = SINGLE) -> tuple[FitState, dict[str, torch.Tensor] | None]:
        """Restore everything ``save`` wrote; returns the fit state and the best weights
        (rewritten to ``weights.safetensors`` by rank 0, in case a crash came between)."""
        tensors, meta = self._read()
        try:
            model.load_state_dict({k[6:]: v for k, v in tensors.items()
                                   if k.startswith("model.")})
        except RuntimeError:
            raise UserError(f"--resume: the checkpoint in {self.folder} belongs to another "
                            "kind of run (training vs design, or another network)") from None
        optimizer_from_tensors(opt, tensors, meta["optimizer"])
        sched.load_state_dict(meta["scheduler"])
        rng = tensors.get(f"rng.rank{ctx.rank}")
        if rng is None and ctx.rank == 0:
            rng = tensors.get("rng")  # format 1
        if rng is not None:
            gen.set_state(rng)
        saved_world = meta.get("world_size", 1)
        if saved_world != ctx.world_size and ctx.is_main:
            print(f"note: the checkpoint was written by {saved_world} process(es), this run "
                  f"has {ctx.world_size}: ranks without a saved generator start from their "
                  "seed, so this run does not repeat an uninterrupted one exactly", flush=True)
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
        if best is not None and ctx.is_main:
            save_tensors(best, self.best_path)
        if ctx.is_main:  # a kill -9 during a save leaves its temporary file
            remove_stale_temporaries(self.ckpt)
        ctx.barrier()
        return FitState(**meta["fit"]), best


def evaluate_loss(model: nn.Module, loss_fn, batches, ctx: Context = SINGLE) -> float:
    """Mean loss per sample over ``batches``; with several ranks each evaluates every
    world_size-th batch and the sums are added up (the same number on every rank)."""
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i, b in enumerate(batches):
            if i % ctx.world_size != ctx.rank:
                continue
            total += float(loss_fn(model, b)) * len(b)
            n += len(b)
    model.train()
    total, n = ctx.sum_floats(total, n)
    return total / max(n, 1)


def cosine_factor(step: int, total_steps: int, floor: float) -> float:
    """Learning-rate multiplier at ``step`` of a half-cosine from 1 down to ``floor``
    (reached at ``total_steps`` and kept after it)."""
    done = min(max(step, 0) / max(total_steps, 1), 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * done))


def fit(model: nn.Module, loss_fn: Callable, next_batch: Callable[[torch.Generator], object],
        val_batches: list, ckpt: Checkpoints, *, lr: float, steps_per_epoch: int,
        max_epochs: int, lr_patience: int, min_lr: float, early_stop: int,
        max_minutes: float | None, generator: torch.Generator, resume: bool = False,
        progress: bool = True, param_groups: list[dict] | None = None,
        schedule: str = "plateau", checkpoint_every: int | None = None,
        ctx: Context = SINGLE) -> FitState:
    """Train ``model`` and return the fit state (history of losses per epoch).

    ``param_groups``: Adam parameter groups with their own learning rates (``lr`` is the
    default); all of the model's parameters by default. ``schedule``: "plateau" (×0.1
    after ``lr_patience`` epochs without a better validation loss, down to ``min_lr``) or
    "cosine" (every group's rate follows half a cosine, stepped per batch, from its own
    rate to ``min_lr / lr`` of it over ``max_epochs × steps_per_epoch`` steps).
    ``checkpoint_every``: also checkpoint every that many optimiser steps inside an epoch
    (None: at the end of each epoch only); a resumed run continues the epoch at its step.
    ``ctx``: the ranks of a DDP run (``generator`` is this rank's); every rank calls fit,
    the validation loss and the time budget are shared so all take the same decisions."""
    from tqdm import tqdm

    opt = torch.optim.Adam(model.parameters() if param_groups is None else param_groups, lr=lr)
    per_step = schedule == "cosine"  # stepped per batch; the plateau rule per epoch
    if per_step:
        total, floor = max_epochs * steps_per_epoch, min(min_lr / lr, 1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: cosine_factor(step, total, floor))
    elif schedule == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1,
                                                           patience=lr_patience, min_lr=min_lr)
    else:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")
    if resume:
        state, best = ckpt.load(model, opt, sched, generator, ctx)
    else:
        state, best = FitState(), None
    state.stopped = ""  # a resumed run goes on (after Ctrl-C, a time budget or an early stop)
    net = ctx.wrap(model)  # what trains; ``model`` itself validates and is saved
    budget = None if max_minutes is None else max_minutes * 60.0
    t_session = t_mark = time.perf_counter()

    def save(improved: bool = False) -> None:
        nonlocal t_mark, best
        now = time.perf_counter()
        state.seconds += now - t_mark
        t_mark = now
        if improved:
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ckpt.save(model, opt, sched, generator, state, best, ctx)
        if improved and ctx.is_main:  # after the checkpoint, which holds them too
            save_tensors(best, ckpt.best_path)

    model.train()
    try:
        while state.epoch < max_epochs and not state.stopped:
            t0 = time.perf_counter()
            bar = tqdm(range(state.step, steps_per_epoch), disable=not progress, leave=False,
                       desc=f"epoch {state.epoch + 1}/{max_epochs}", unit="step",
                       initial=state.step, total=steps_per_epoch)
            for _ in bar:
                loss = loss_fn(net, next_batch(generator))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if per_step:
                    sched.step()
                state.losses.append(float(loss.detach()))
                state.step += 1
                state.steps += 1
                bar.set_postfix(loss=f"{state.losses[-1]:.3g}")
                if budget is not None and ctx.broadcast_flag(
                        time.perf_counter() - t_session > budget):
                    state.stopped = "time budget"
                    break
                if (checkpoint_every and state.steps % checkpoint_every == 0
                        and state.step < steps_per_epoch):
                    save()
            ctx.sync_buffers(model)
            val = evaluate_loss(model, loss_fn, val_batches, ctx)
            if not per_step:
                sched.step(val)
            state.epoch += 1
            improved = val < state.best_val
            state.best_val = min(state.best_val, val)
            state.bad_epochs = 0 if improved else state.bad_epochs + 1
            losses, state.step, state.losses = state.losses, 0, []
            state.history.append(dict(epoch=state.epoch, steps=len(losses),
                                      train_loss=sum(losses) / max(len(losses), 1),
                                      val_loss=val, lr=opt.param_groups[0]["lr"],
                                      seconds=state.seconds + time.perf_counter() - t_mark))
            if state.bad_epochs >= early_stop:
                state.stopped = "early stop"
            save(improved)
            if progress:
                eta = (max_epochs - state.epoch) * (time.perf_counter() - t0)
                mark = " *" if improved else "  "
                print(f"epoch {state.epoch:3d}  train {state.history[-1]['train_loss']:.4g}  "
                      f"val {val:.4g}{mark}  lr {opt.param_groups[0]['lr']:.1e}  "
                      f"{state.seconds:6.0f} s  (≤ {eta / 60:.1f} min left)", flush=True)
    except KeyboardInterrupt:
        state.stopped = "interrupted"
        if not ctx.enabled:  # the other ranks may be gone: DDP keeps its last checkpoint
            ckpt.save(model, opt, sched, generator, state, best)
        raise
    if not state.stopped:
        state.stopped = "max epochs"
    return state
