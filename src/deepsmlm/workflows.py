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


def sr_correlation(sr_sum: np.ndarray, truth_xy_nm: np.ndarray, fine_pixel_nm: float) -> float:
    """Pearson r of the summed SR image and the ground truth rendered on the same grid,
    both blurred by a Gaussian of σ = 1 fine pixel (DESIGN §6)."""
    import torch

    from deepsmlm.render import pearson, render_gaussian
    from deepsmlm.simulation.simulator import gaussian_blur

    h, w = sr_sum.shape
    gt = render_gaussian(truth_xy_nm, fine_pixel_nm, (w * fine_pixel_nm, h * fine_pixel_nm),
                         fine_pixel_nm)
    blurred = gaussian_blur(torch.from_numpy(sr_sum.astype(np.float32))[None], 1.0)[0].numpy()
    return pearson(blurred, gt)


DEMO_TRAINING = dict(upsampling=4, channels=[16, 32, 64, 128], patch_px=24, batch_size=16,
                     steps_per_epoch=50, max_epochs=200, early_stop_epochs=200,
                     lr_patience_epochs=4, val_frames=48)


def run_demo(out, n_frames: int = 200, seed: int = 0, train_minutes: float = 5.0) -> dict:
    """The main job on built-in data.

    1. Simulate a dense microtubule-like 2D movie (64×64 px, ≈ 6 emitters/µm²) and a 3D
       astigmatic one, with their PSFs and previews.
    2. Train a CPU-scale Deep-STORM model (U = 4, channels 16–128) on frames simulated on
       the fly for ``train_minutes``.
    3. Reconstruct the dense movie, evaluate against the ground truth, write
       ``out/deepstorm/`` (sr.png, localizations, metrics.json) and print a summary.
    """
    import json

    from deepsmlm.config import experiment_from_dict
    from deepsmlm.deepstorm_steps import run_localize
    from deepsmlm.io.frames import read_stack
    from deepsmlm.io.localizations import read_csv
    from deepsmlm.measure import _json_safe, format_report, run_evaluate
    from deepsmlm.plotting import frame_preview
    from deepsmlm.training.deepstorm import train_deepstorm

    t_start = time.perf_counter()
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

    d = load_experiment(builtin_config("2d-dense.yaml")).to_dict()
    d["training"].update(DEMO_TRAINING, seed=seed + 1)
    exp = experiment_from_dict(d)
    print(f"training Deep-STORM (CPU-scale: U = 4, channels 16–128) for {train_minutes:g} min …")
    model_dir = out / "deepstorm" / "model"
    if model_dir.exists():
        import shutil

        shutil.rmtree(model_dir)
    settings = train_deepstorm(exp, model_dir, max_minutes=train_minutes, progress=False)
    res_dir = out / "deepstorm"
    loc = run_localize(model_dir, out / "2d-dense" / "frames.tif", res_dir, progress=False)
    metrics = run_evaluate(res_dir / "localizations.csv", out / "2d-dense" / "truth.csv",
                           experiment=out / "2d-dense" / "experiment.yaml")
    sr = np.asarray(read_stack(res_dir / "sr.tif", allow_single_frame=True).data[0])
    truth = read_csv(out / "2d-dense" / "truth.csv").numpy()
    r = sr_correlation(sr, truth["xyz_nm"][:, :2], settings["fine_pixel_nm"])
    metrics.update(sr_correlation=r, localize_frames_per_s=loc["frames_per_s"],
                   training_minutes=settings["training"]["seconds"] / 60,
                   training_samples=settings["training"]["samples"])
    from deepsmlm.io.atomic import atomic_write_text

    atomic_write_text(res_dir / "metrics.json", json.dumps(_json_safe(metrics), indent=2))
    total = time.perf_counter() - t_start
    print(format_report(metrics))
    print(f"\nDeep-STORM on {n_frames} dense frames: Jaccard {metrics['jaccard']:.1f} %, "
          f"RMSE {metrics['rmse_xy_nm']:.1f} nm, SR-image correlation r = {r:.3f}; "
          f"trained {metrics['training_minutes']:.1f} min, localized at "
          f"{loc['frames_per_s']:.1f} frames/s; demo took {total / 60:.1f} min → {res_dir}")
    summary["deepstorm"] = metrics
    return summary
