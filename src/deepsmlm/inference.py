"""Run a trained model of any method: frames → raw network output → localizations.

``Predictor`` loads a model folder (``ModelFolder``: card, weights, normaliser, tuned
threshold); with a ``refiner`` (``build.build_refiner``) each batch's localizations are
refined through the model's own PSF (``deepsmlm.refine``). ``localize_stack`` streams a
movie in chunks of frames (memory bounded whatever its length), pads frames the network
cannot take, decodes each batch with the method, and accumulates the summed output image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deepsmlm import methods
from deepsmlm.data.context import windows
from deepsmlm.data.normalizer import Normalizer
from deepsmlm.emitters import EmitterSet
from deepsmlm.models.deepstorm import pad_to_multiple
from deepsmlm.refine import Refiner
from deepsmlm.training.model_folder import ModelCard, ModelFolder


@dataclass
class Predictor:
    model: torch.nn.Module
    normalizer: Normalizer
    card: ModelCard
    device: torch.device
    refiner: Refiner | None = None  # set: each batch's localizations are refined

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu", camera_overrides: dict | None = None
             ) -> Predictor:
        mf = ModelFolder(folder)
        card = mf.read_trained_card()
        model = mf.load_network(card).eval().to(device)
        return cls(model, mf.normalizer(card, camera_overrides), card, torch.device(device))

    @property
    def method(self):
        return methods.get(self.card.method)

    @property
    def fine_pixel_nm(self) -> float:
        return self.card.fine_pixel_nm

    @property
    def context_frames(self) -> int:
        """Neighbouring frames on each side the model reads with each frame (0: none)."""
        return int(self.card.settings.get("context_frames", 0))

    def super_resolve(self, frames_adu: torch.Tensor) -> torch.Tensor:
        """Raw output (B, C, U·H, U·W) of frames (B, H, W) in ADU — or, for a model with
        temporal context, of windows (B, 2k + 1, H, W) (``data.context.windows``; frames
        alone get their ends repeated); pads, then crops back."""
        k = self.context_frames
        if k and frames_adu.dim() == 3:
            frames_adu = windows(frames_adu, k)
        x = self.normalizer(frames_adu.to(self.device))
        x, (h, w) = pad_to_multiple(x, self.model.multiple)
        with torch.no_grad():
            sr = self.model(x)
        u = self.card.upsampling
        return sr[..., : h * u, : w * u]

    def uncertainty_columns(self) -> int:
        """σ columns of its tables: the refinement's when refining, else the method's."""
        if self.refiner is not None:
            return self.refiner.uncertainty_columns
        return self.method.uncertainty_columns(self.card)

    def localize(self, sr: torch.Tensor, frame_offset: int = 0,
                 threshold: float | None = None) -> EmitterSet:
        thr = self.card.threshold if threshold is None else threshold
        return self.method.decode(self.card, sr, thr, frame_offset)


@dataclass
class ChunkResult:
    """What a chunk of frames gives: its localizations (global frame numbers), its summed
    output image (the method's ``output_image``, float64) and its widefield sum; with a
    refinement, how many localizations it refined and how many kept the network's value."""

    emitters: EmitterSet
    sr_sum: np.ndarray
    wf_sum: np.ndarray
    refine_counts: dict = field(default_factory=dict)


def localize_chunk(pred: Predictor, block: np.ndarray, t0: int, batch_size: int = 16,
                   before: np.ndarray | None = None, after: np.ndarray | None = None
                   ) -> ChunkResult:
    """Localize the frames ``block`` (T, H, W; float32 ADU) whose first frame is ``t0``.

    For a model with temporal context, ``before`` / ``after`` are the frames just before and
    after the block (``read_chunk``); without them the block's end frames are repeated.
    Batches are cut from the chunk's start, so a chunk gives the same result wherever it is
    run (one process, or a Dask worker)."""
    h, w = block.shape[1:]
    u = pred.card.upsampling
    k = pred.context_frames
    sr_sum = torch.zeros(h * u, w * u, dtype=torch.float64)
    found = []
    counted = dict(pred.refiner.counts) if pred.refiner is not None else {}
    ext = None
    if k:  # the block with its context; the windows of a batch are cut from it
        ext = windows(torch.from_numpy(np.ascontiguousarray(block)), k,
                      None if before is None else torch.from_numpy(np.asarray(before)),
                      None if after is None else torch.from_numpy(np.asarray(after)))
    for b0 in range(0, len(block), batch_size):
        frames = torch.from_numpy(np.ascontiguousarray(block[b0:b0 + batch_size]))
        sr = pred.super_resolve(frames if ext is None else ext[b0:b0 + batch_size]).cpu()
        sr_sum += pred.method.output_image(pred.card, sr).sum(dim=0).double()
        em = pred.localize(sr, frame_offset=t0 + b0)
        if pred.refiner is not None:
            em = pred.refiner(frames, em, t0 + b0)
        found.append(em)
    counts = ({key: v - counted[key] for key, v in pred.refiner.counts.items()}
              if pred.refiner is not None else {})
    return ChunkResult(EmitterSet.cat(found), sr_sum.numpy(),
                       block.sum(axis=0, dtype=np.float64), counts)


def localize_chunks(pred: Predictor, stack, chunk_frames: int = 256, batch_size: int = 16,
                    start_frame: int = 0):
    """Yield ``(t0, ChunkResult)`` over a ``Stack`` from ``start_frame`` on (a multiple of
    ``chunk_frames`` when resuming), reading one chunk at a time: memory bounded by the
    chunk, whatever the movie's length."""
    n = len(stack)
    for t0 in range(start_frame, n, chunk_frames):
        block, before, after = read_chunk(stack, t0, t0 + chunk_frames, pred.context_frames)
        yield t0, localize_chunk(pred, block, t0, batch_size, before, after)


def read_chunk(stack, t0: int, t1: int, context_frames: int = 0):
    """(block, before, after): frames ``t0..t1-1`` of a ``Stack`` and, for temporal
    context, up to ``context_frames`` frames on each side of it (None without context)."""
    n = len(stack)
    t1 = min(t1, n)
    k = context_frames
    if not k:
        return stack.read(t0, t1), None, None
    ext = stack.read(max(0, t0 - k), min(n, t1 + k))
    lead = t0 - max(0, t0 - k)
    return ext[lead:lead + t1 - t0], ext[:lead], ext[lead + t1 - t0:]


def localize_stack(pred: Predictor, stack, chunk_frames: int = 256, batch_size: int = 16,
                   progress: bool = True) -> tuple[EmitterSet, np.ndarray, np.ndarray]:
    """Localizations, summed output image (float64; the method's ``output_image``) and
    widefield sum of a whole ``Stack``, in memory (``steps.localize`` streams to disk)."""
    from tqdm import tqdm

    n, h, w = stack.data.shape
    u = pred.card.upsampling
    sr_sum = np.zeros((h * u, w * u))
    wf_sum = np.zeros((h, w))
    found = []
    with tqdm(total=n, disable=not progress, unit="frame", desc="localize") as bar:
        for t0, r in localize_chunks(pred, stack, chunk_frames, batch_size):
            sr_sum += r.sr_sum
            wf_sum += r.wf_sum
            found.append(r.emitters)
            bar.update(min(chunk_frames, n - t0))
    em = EmitterSet.cat(found)
    em.id = torch.arange(len(em))
    return em, sr_sum, wf_sum
