"""``deepsmlm simulate``: a movie and its ground truth from an experiment."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from deepsmlm.config import Experiment
from deepsmlm.emitters import EmitterSet
from deepsmlm.steps.common import as_experiment, out_dir


@dataclass
class Movie:
    """A simulated movie: frames in ADU (T, H, W), the ground truth, and its experiment."""

    frames_adu: np.ndarray
    emitters: EmitterSet
    experiment: Experiment


def simulate(exp: Experiment, n_frames: int, seed: int = 0, chunk_frames: int = 64,
             device: str | torch.device = "cpu") -> Movie:
    """Simulate ``n_frames`` frames of the experiment, in memory. Same seed, same result
    (per device); ``simulate_to_disk`` gives the same frames streamed to a file.

    Emitters are drawn for the whole movie (blinking spans frames); frames are rendered in
    chunks of ``chunk_frames``."""
    emitters, gen = draw_emitters(exp, n_frames, seed)
    frames = np.empty((n_frames, exp.frame.height_px, exp.frame.width_px),
                      dtype=frame_dtype(exp))
    for t0, block in render_chunks(exp, emitters, n_frames, gen, seed, chunk_frames, device):
        frames[t0:t0 + len(block)] = block
    return Movie(frames, emitters, exp)


def draw_emitters(exp: Experiment, n_frames: int, seed: int = 0
                  ) -> tuple[EmitterSet, torch.Generator]:
    """The ground truth of a movie (the first draws of the seed's generator), and the
    generator that goes on to render its frames (``render_chunks``)."""
    from deepsmlm.build import sample_emitters

    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    gen = torch.Generator().manual_seed(int(seed))
    return sample_emitters(exp, n_frames, gen), gen


def frame_dtype(exp: Experiment):
    return np.uint16 if exp.camera.bit_depth <= 16 else np.uint32


def render_chunks(exp: Experiment, emitters: EmitterSet, n_frames: int,
                  gen: torch.Generator, seed: int = 0, chunk_frames: int = 64,
                  device: str | torch.device = "cpu"):
    """Yield ``(t0, frames in ADU)`` chunk by chunk, drawing from ``gen`` (on a GPU, from a
    device generator seeded ``seed + 1``)."""
    from deepsmlm.build import build_simulator

    sim = build_simulator(exp)
    sim.psf.to(device)
    dev_gen = gen if torch.device(device).type == "cpu" else \
        torch.Generator(device=device).manual_seed(int(seed) + 1)
    dtype = frame_dtype(exp)
    with torch.no_grad():
        for t0 in range(0, n_frames, chunk_frames):
            t1 = min(n_frames, t0 + chunk_frames)
            sel = (emitters.frame >= t0) & (emitters.frame < t1)
            part = emitters.subset(sel)
            part = EmitterSet(part.xyz_nm.to(device), part.photons.to(device),
                              (part.frame - t0).to(device), part.id)
            yield t0, sim(part, t1 - t0, dev_gen).cpu().numpy().astype(dtype)


def write_movie(movie: Movie, out: str | os.PathLike) -> None:
    """``out/frames.tif`` (uint16 ADU, T×H×W), ``truth.csv``, ``experiment.yaml``."""
    from deepsmlm.io.frames import write_stack
    from deepsmlm.io.localizations import write_csv

    out = out_dir(out)
    write_stack(out / "frames.tif", movie.frames_adu, movie.experiment.optics.pixel_size_nm)
    write_csv(movie.emitters, out / "truth.csv")
    movie.experiment.save(out / "experiment.yaml")


def simulate_to_disk(exp: Experiment, n_frames: int, out: str | os.PathLike, seed: int = 0,
                     chunk_frames: int = 64, device: str | torch.device = "cpu",
                     progress: bool = False) -> EmitterSet:
    """``write_movie(simulate(...))`` without the movie in memory: frames are rendered and
    written chunk by chunk (``io.frames.StackWriter``), so memory is bounded by a chunk
    and the ground truth. Returns the ground truth."""
    from tqdm import tqdm

    from deepsmlm.io.frames import StackWriter
    from deepsmlm.io.localizations import write_csv

    out = out_dir(out)
    emitters, gen = draw_emitters(exp, n_frames, seed)
    shape = (exp.frame.height_px, exp.frame.width_px)
    with StackWriter(out / "frames.tif", n_frames, shape, frame_dtype(exp),
                     exp.optics.pixel_size_nm) as writer, \
            tqdm(total=n_frames, disable=not progress, unit="frame", desc="simulate") as bar:
        for t0, block in render_chunks(exp, emitters, n_frames, gen, seed, chunk_frames,
                                       device):
            writer.write(t0, block)
            bar.update(len(block))
    write_csv(emitters, out / "truth.csv")
    exp.save(out / "experiment.yaml")
    return emitters


def run_simulate(experiment, n_frames: int, out, seed: int = 0, progress: bool = False
                 ) -> EmitterSet:
    """``deepsmlm simulate``: the movie streamed to ``out`` (one run per folder at a time);
    returns the ground truth."""
    from deepsmlm.io.lock import folder_lock

    exp = as_experiment(experiment)
    out = out_dir(out)
    with folder_lock(out, "simulate"):
        return simulate_to_disk(exp, n_frames, out, seed=seed, progress=progress)
