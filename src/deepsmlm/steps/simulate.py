"""``deepsmlm simulate``: a movie and its ground truth from an experiment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepsmlm.config import Experiment
from deepsmlm.emitters import EmitterSet
from deepsmlm.errors import UserError
from deepsmlm.steps.common import as_experiment, check_array_bytes, gigabytes, out_dir


@dataclass
class Movie:
    """A simulated movie: frames in ADU (T, H, W), the ground truth, and its experiment."""

    frames_adu: np.ndarray
    emitters: EmitterSet
    experiment: Experiment


def simulate(exp: Experiment, n_frames: int, seed: int = 0, chunk_frames: int | None = None,
             device: str | torch.device = "cpu") -> Movie:
    """Simulate ``n_frames`` frames of the experiment, in memory. Same seed and chunking,
    same result (per device); ``simulate_to_disk`` streams the same frames to a file."""
    check_movie_bytes(exp, n_frames)
    frames = np.empty((n_frames, exp.frame.height_px, exp.frame.width_px),
                      dtype=frame_dtype(exp))
    truth = []
    for t0, block, emitters in render_chunks(exp, n_frames, seed, chunk_frames, device):
        frames[t0:t0 + len(block)] = block
        truth.append(emitters)
    return Movie(frames, EmitterSet.cat(truth), exp)


def default_chunk_frames(exp: Experiment) -> int:
    """Frames rendered at a time: 64, fewer for large frames (about 2²⁰ pixels a chunk, so
    the camera's noise draws stay near 100 MB whatever the frame size)."""
    return max(1, min(64, 2**20 // (exp.frame.height_px * exp.frame.width_px)))


def frame_dtype(exp: Experiment):
    return np.uint16 if exp.camera.bit_depth <= 16 else np.uint32


def render_chunks(exp: Experiment, n_frames: int, seed: int = 0,
                  chunk_frames: int | None = None, device: str | torch.device = "cpu"):
    """Yield ``(t0, frames in ADU, their emitters)`` chunk by chunk: the emitters of a
    chunk are drawn from the experiment's stream (blinking carries over), then rendered.
    Memory is bounded by a chunk, whatever ``n_frames``."""
    from deepsmlm.build import build_simulator, emitter_stream

    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    chunk_frames = chunk_frames or default_chunk_frames(exp)
    gen = torch.Generator().manual_seed(int(seed))
    stream = emitter_stream(exp, gen)
    sim = build_simulator(exp)
    sim.psf.to(device)
    dev_gen = gen if torch.device(device).type == "cpu" else \
        torch.Generator(device=device).manual_seed(int(seed) + 1)
    dtype = frame_dtype(exp)
    with torch.no_grad():
        for t0 in range(0, n_frames, chunk_frames):
            t1 = min(n_frames, t0 + chunk_frames)
            em = stream.take(t1 - t0)
            part = EmitterSet(em.xyz_nm.to(device), em.photons.to(device),
                              (em.frame - t0).to(device), em.id,
                              species=None if em.species is None else em.species.to(device))
            yield t0, sim(part, t1 - t0, dev_gen).cpu().numpy().astype(dtype), em


def movie_bytes(exp: Experiment, n_frames: int) -> float:
    h, w = exp.frame.height_px, exp.frame.width_px
    return float(n_frames) * h * w * np.dtype(frame_dtype(exp)).itemsize


def check_movie_bytes(exp: Experiment, n_frames: int) -> None:
    """A UserError, before anything is drawn, when the movie would not fit in memory
    (``simulate``, in memory)."""
    h, w = exp.frame.height_px, exp.frame.width_px
    check_array_bytes(movie_bytes(exp, n_frames), f"--frames {n_frames} of {h}×{w} px",
                      "simulate fewer frames, or stream them to disk (simulate_to_disk)")


def check_disk_bytes(exp: Experiment, n_frames: int, out: Path) -> None:
    """A UserError, before anything is drawn, when the movie would not fit on the disk of
    ``out`` (``simulate_to_disk``; the ground truth adds a few percent)."""
    import shutil

    need = movie_bytes(exp, n_frames)
    free = shutil.disk_usage(out).free
    if need > free:
        h, w = exp.frame.height_px, exp.frame.width_px
        raise UserError(f"--frames {n_frames} of {h}×{w} px would need {gigabytes(need)} "
                        f"on disk, {gigabytes(free)} free in {out}; simulate fewer frames "
                        "or write elsewhere")


def write_movie(movie: Movie, out: str | os.PathLike) -> None:
    """``out/frames.tif`` (uint16 ADU, T×H×W), ``truth.csv``, ``experiment.yaml``."""
    from deepsmlm.io.frames import write_stack
    from deepsmlm.io.localizations import write_csv

    out = out_dir(out)
    write_stack(out / "frames.tif", movie.frames_adu, movie.experiment.optics.pixel_size_nm)
    write_csv(movie.emitters, out / "truth.csv")
    movie.experiment.save(out / "experiment.yaml")


def simulate_to_disk(exp: Experiment, n_frames: int, out: str | os.PathLike, seed: int = 0,
                     chunk_frames: int | None = None, device: str | torch.device = "cpu",
                     progress: bool = False) -> int:
    """``write_movie(simulate(...))`` without the movie in memory: frames are rendered and
    written chunk by chunk with their ground truth (``io.frames.StackWriter``, a CSV
    appended per chunk), so memory is bounded by a chunk, whatever ``n_frames``. Returns
    the number of emitters."""
    from tqdm import tqdm

    from deepsmlm.io.atomic import atomic_path
    from deepsmlm.io.frames import StackWriter
    from deepsmlm.io.localizations import CsvAppender, write_csv

    out = out_dir(out)
    check_disk_bytes(exp, n_frames, out)
    shape = (exp.frame.height_px, exp.frame.width_px)
    n_emitters = 0
    with StackWriter(out / "frames.tif", n_frames, shape, frame_dtype(exp),
                     exp.optics.pixel_size_nm) as writer, atomic_path(out / "truth.csv") as tmp, \
            tqdm(total=n_frames, disable=not progress, unit="frame", desc="simulate") as bar:
        truth = CsvAppender(tmp, species=bool(exp.emitters.species), species_probability=False)
        for t0, block, emitters in render_chunks(exp, n_frames, seed, chunk_frames, device):
            writer.write(t0, block)
            truth.append(emitters)
            n_emitters += len(emitters)
            bar.update(len(block))
        if not truth.size_bytes:  # no emitter at all: the header (with species if any)
            empty = EmitterSet.empty()
            if exp.emitters.species:
                empty.species = torch.zeros(0, dtype=torch.long)
            write_csv(empty, tmp)
        truth.close()
    exp.save(out / "experiment.yaml")
    return n_emitters


def run_simulate(experiment, n_frames: int, out, seed: int = 0, progress: bool = False
                 ) -> int:
    """``deepsmlm simulate``: the movie streamed to ``out`` (one run per folder at a time);
    returns the number of emitters."""
    from deepsmlm.io.atomic import remove_stale_temporaries
    from deepsmlm.io.lock import folder_lock

    exp = as_experiment(experiment)
    out = out_dir(out)
    with folder_lock(out, "simulate"):
        remove_stale_temporaries(out)  # of a simulate killed before it could rename
        return simulate_to_disk(exp, n_frames, out, seed=seed, progress=progress)
