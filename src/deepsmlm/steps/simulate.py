"""``deepsmlm simulate``: a movie and its ground truth from an experiment."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from deepsmlm.config import Experiment
from deepsmlm.emitters import EmitterSet
from deepsmlm.steps.common import as_experiment, check_array_bytes, out_dir


@dataclass
class Movie:
    """A simulated movie: frames in ADU (T, H, W), the ground truth, and its experiment."""

    frames_adu: np.ndarray
    emitters: EmitterSet
    experiment: Experiment


def simulate(exp: Experiment, n_frames: int, seed: int = 0, chunk_frames: int = 64,
             device: str | torch.device = "cpu") -> Movie:
    """Simulate ``n_frames`` frames of the experiment. Same seed, same result (per device).

    Emitters are drawn for the whole movie (blinking spans frames); frames are rendered in
    chunks of ``chunk_frames`` so memory stays bounded.
    """
    from deepsmlm.build import build_simulator, sample_emitters

    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    check_movie_bytes(exp, n_frames)
    gen = torch.Generator().manual_seed(int(seed))
    emitters = sample_emitters(exp, n_frames, gen)
    sim = build_simulator(exp)
    sim.psf.to(device)
    dev_gen = gen if torch.device(device).type == "cpu" else \
        torch.Generator(device=device).manual_seed(int(seed) + 1)
    dtype = np.uint16 if exp.camera.bit_depth <= 16 else np.uint32
    frames = np.empty((n_frames, exp.frame.height_px, exp.frame.width_px), dtype=dtype)
    with torch.no_grad():
        for t0 in range(0, n_frames, chunk_frames):
            t1 = min(n_frames, t0 + chunk_frames)
            sel = (emitters.frame >= t0) & (emitters.frame < t1)
            part = emitters.subset(sel)
            part = EmitterSet(part.xyz_nm.to(device), part.photons.to(device),
                              (part.frame - t0).to(device), part.id)
            frames[t0:t1] = sim(part, t1 - t0, dev_gen).cpu().numpy().astype(dtype)
    return Movie(frames, emitters, exp)


def check_movie_bytes(exp: Experiment, n_frames: int) -> None:
    """A UserError, before anything is drawn, when the movie would not fit in memory."""
    itemsize = 2 if exp.camera.bit_depth <= 16 else 4
    h, w = exp.frame.height_px, exp.frame.width_px
    check_array_bytes(float(n_frames) * h * w * itemsize,
                      f"--frames {n_frames} of {h}×{w} px",
                      "simulate fewer frames (several runs with different --seed)")


def write_movie(movie: Movie, out: str | os.PathLike) -> None:
    """``out/frames.tif`` (uint16 ADU, T×H×W), ``truth.csv``, ``experiment.yaml``."""
    from deepsmlm.io.frames import write_stack
    from deepsmlm.io.localizations import write_csv

    out = out_dir(out)
    write_stack(out / "frames.tif", movie.frames_adu, movie.experiment.optics.pixel_size_nm)
    write_csv(movie.emitters, out / "truth.csv")
    movie.experiment.save(out / "experiment.yaml")


def run_simulate(experiment, n_frames: int, out, seed: int = 0) -> Movie:
    movie = simulate(as_experiment(experiment), n_frames, seed=seed)
    write_movie(movie, out)
    return movie
