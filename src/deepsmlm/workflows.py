"""Steps that read an experiment and write result files (what the CLI commands run).

Each function validates its inputs, computes through ``deepsmlm.api``, and writes every
file atomically, so an interrupted run leaves no half-written file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from deepsmlm.api import Movie, psf_stack, simulate
from deepsmlm.config import Experiment, load_experiment, save_experiment
from deepsmlm.errors import UserError


def builtin_config(name: str) -> Path:
    """Path of an example experiment shipped with the package (``configs/NAME``)."""
    return Path(__file__).parent / "configs" / name


def _load(experiment: str | os.PathLike | Experiment) -> Experiment:
    return experiment if isinstance(experiment, Experiment) else load_experiment(experiment)


def _out_dir(out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create output folder {out}: {err.strerror}") from None
    return out


def write_movie(movie: Movie, out: str | os.PathLike) -> None:
    """``out/frames.tif`` (uint16 ADU, T×H×W), ``truth.csv``, ``experiment.yaml``."""
    from deepsmlm.io.frames import write_stack
    from deepsmlm.io.localizations import write_csv

    out = _out_dir(out)
    write_stack(out / "frames.tif", movie.frames_adu, movie.experiment.optics.pixel_size_nm)
    write_csv(movie.emitters, out / "truth.csv")
    save_experiment(movie.experiment, out / "experiment.yaml")


def run_simulate(experiment, n_frames: int, out, seed: int = 0) -> Movie:
    exp = _load(experiment)
    movie = simulate(exp, n_frames, seed=seed)
    write_movie(movie, out)
    return movie


def default_z_nm(exp: Experiment) -> np.ndarray:
    """PSF planes: 9 across the emitters' z range, or focus ± 1 µm in 250 nm steps."""
    lo, hi = exp.emitters.z_range_nm
    if hi > lo:
        return np.linspace(lo, hi, 9)
    f = exp.optics.focus_nm
    return np.arange(f - 1000.0, f + 1000.0 + 1e-6, 250.0)


def run_psf(experiment, out, z_range: tuple[float, float, float] | None = None,
            size_px: int | None = None) -> np.ndarray:
    """``out/psf.tif`` (float32 D×H×W, one photon), ``psf_z.csv``, ``psf.png``."""
    from deepsmlm.io.atomic import atomic_write_text
    from deepsmlm.io.frames import write_stack
    from deepsmlm.plotting import psf_montage

    exp = _load(experiment)
    if z_range is None:
        z = default_z_nm(exp)
    else:
        a, b, step = z_range
        z = np.arange(a, b + 1e-6 * step, step)
    stack = psf_stack(exp, z, size_px)
    out = _out_dir(out)
    px = exp.optics.pixel_size_nm
    write_stack(out / "psf.tif", stack, px, axes="ZYX")
    atomic_write_text(out / "psf_z.csv", "z [nm]\n" + "".join(f"{v:.3f}\n" for v in z))
    o = exp.optics
    title = (f"{o.psf} PSF, λ {o.wavelength_nm:.0f} nm, NA {o.na}, mask {o.mask.kind}, "
             f"focus {o.focus_nm:.0f} nm")
    psf_montage(stack, z, px, out / "psf.png", title)
    return z


def run_demo(out, n_frames: int = 200, seed: int = 0) -> dict:
    """The main job on built-in data (for now: simulation and PSFs; later the full chain).

    Simulates a dense 2D microtubule-like movie and a 3D astigmatic one, draws their PSFs
    and a preview of the first frames with the ground truth, and prints a summary.
    """
    from deepsmlm.plotting import frame_preview

    out = _out_dir(out)
    summary = {}
    for name, frames in (("2d-dense", n_frames), ("3d-astigmatic", max(1, n_frames // 2))):
        exp = load_experiment(builtin_config(f"{name}.yaml"))
        t0 = time.perf_counter()
        movie = simulate(exp, frames, seed=seed)
        dt = time.perf_counter() - t0
        write_movie(movie, out / name)
        run_psf(exp, out / name / "psf")
        em = movie.emitters
        px = exp.optics.pixel_size_nm
        xy = [em.xyz_nm[em.frame == t, :2].numpy() / px for t in range(min(frames, 4))]
        frame_preview(movie.frames_adu, xy, out / name / "preview.png",
                      f"{name}: frames (ADU) with the ground truth")
        area_um2 = exp.frame.height_px * exp.frame.width_px * (px / 1000.0) ** 2
        per_frame = len(em) / frames
        summary[name] = dict(frames=frames, emitters=len(em), emitters_per_frame=per_frame,
                             density_per_um2=per_frame / area_um2, frames_per_s=frames / dt)
        print(f"{name:14s} {frames:4d} frames {exp.frame.height_px}×{exp.frame.width_px} px, "
              f"{per_frame:6.1f} emitters/frame ({per_frame / area_um2:.2f}/µm²), "
              f"simulated at {frames / dt:6.1f} frames/s → {out / name}")
    return summary
