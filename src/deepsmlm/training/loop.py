"""A small ``fit()``: epochs of on-the-fly batches, validation, LR schedule, early stop,
best/last checkpoints, a time budget, resume (also after Ctrl-C), progress with ETA.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from deepsmlm.io.tensors import (
    load_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    read_json,
    save_tensors,
    write_json,
)


@dataclass
class FitState:
    epoch: int = 0  # completed epochs
    best_val: float = float("inf")
    bad_epochs: int = 0
    seconds: float = 0.0  # training time so far, over all sessions
    history: list[dict] = field(default_factory=list)
    stopped: str = ""


class Checkpoints:
    """``folder/weights.safetensors`` (best) and ``folder/checkpoint/`` (last, resumable)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.ckpt = self.folder / "checkpoint"

    @property
    def best_path(self) -> Path:
        return self.folder / "weights.safetensors"

    def exists(self) -> bool:
        return (self.ckpt / "state.json").is_file()

    def save(self, model: nn.Module, opt, sched, gen: torch.Generator, state: FitState,
             best: bool) -> None:
        self.ckpt.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        opt_t, opt_meta = optimizer_to_tensors(opt)
        tensors.update(opt_t)
        tensors["rng"] = gen.get_state()
        save_tensors(tensors, self.ckpt / "last.safetensors")
        write_json(self.ckpt / "state.json", {"fit": asdict(state), "optimizer": opt_meta,
                                              "scheduler": sched.state_dict()})
        if best:
            save_tensors(model.state_dict(), self.best_path)

    def load(self, model: nn.Module, opt, sched, gen: torch.Generator) -> FitState:
        tensors = load_tensors(self.ckpt / "last.safetensors")
        meta = read_json(self.ckpt / "state.json")
        try:
            model.load_state_dict({k[6:]: v for k, v in tensors.items()
                                   if k.startswith("model.")})
        except RuntimeError:
            from deepsmlm.errors import UserError

            raise UserError(f"--resume: the checkpoint in {self.folder} belongs to another "
                            "kind of run (training vs design, or another network)") from None
        optimizer_from_tensors(opt, tensors, meta["optimizer"])
        sched.load_state_dict(meta["scheduler"])
        gen.set_state(tensors["rng"])
        return FitState(**meta["fit"])


def evaluate_loss(model: nn.Module, loss_fn, batches) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for b in batches:
            total += float(loss_fn(model, b)) * len(b)
            n += len(b)
    model.train()
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
        schedule: str = "plateau") -> FitState:
    """Train ``model`` and return the fit state (history of losses per epoch).

    ``param_groups``: Adam parameter groups with their own learning rates (``lr`` is the
    default); all of the model's parameters by default. ``schedule``: "plateau" (×0.1
    after ``lr_patience`` epochs without a better validation loss, down to ``min_lr``) or
    "cosine" (every group's rate follows half a cosine, stepped per batch, from its own
    rate to ``min_lr / lr`` of it over ``max_epochs × steps_per_epoch`` steps)."""
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
    state = ckpt.load(model, opt, sched, generator) if resume else FitState()
    state.stopped = ""  # a resumed run goes on (after Ctrl-C, a time budget or an early stop)
    budget = None if max_minutes is None else max_minutes * 60.0
    t_session = time.perf_counter()
    model.train()
    try:
        while state.epoch < max_epochs and not state.stopped:
            t0 = time.perf_counter()
            losses = []
            bar = tqdm(range(steps_per_epoch), disable=not progress, leave=False,
                       desc=f"epoch {state.epoch + 1}/{max_epochs}", unit="step")
            for _ in bar:
                loss = loss_fn(model, next_batch(generator))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if per_step:
                    sched.step()
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{losses[-1]:.3g}")
                if budget is not None and time.perf_counter() - t_session > budget:
                    state.stopped = "time budget"
                    break
            val = evaluate_loss(model, loss_fn, val_batches)
            if not per_step:
                sched.step(val)
            state.epoch += 1
            state.seconds += time.perf_counter() - t0
            improved = val < state.best_val
            state.best_val = min(state.best_val, val)
            state.bad_epochs = 0 if improved else state.bad_epochs + 1
            state.history.append(dict(epoch=state.epoch, steps=len(losses),
                                      train_loss=sum(losses) / max(len(losses), 1),
                                      val_loss=val, lr=opt.param_groups[0]["lr"],
                                      seconds=state.seconds))
            if state.bad_epochs >= early_stop:
                state.stopped = "early stop"
            ckpt.save(model, opt, sched, generator, state, improved)
            if progress:
                eta = (max_epochs - state.epoch) * (time.perf_counter() - t0)
                mark = " *" if improved else "  "
                print(f"epoch {state.epoch:3d}  train {state.history[-1]['train_loss']:.4g}  "
                      f"val {val:.4g}{mark}  lr {opt.param_groups[0]['lr']:.1e}  "
                      f"{state.seconds:6.0f} s  (≤ {eta / 60:.1f} min left)", flush=True)
    except KeyboardInterrupt:
        state.stopped = "interrupted"
        ckpt.save(model, opt, sched, generator, state, best=False)
        raise
    if not state.stopped:
        state.stopped = "max epochs"
    return state
