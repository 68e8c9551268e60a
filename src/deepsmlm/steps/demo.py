"""``deepsmlm demo``: the main job on built-in data, end to end."""

from __future__ import annotations

import time

from deepsmlm.config import load_experiment
from deepsmlm.steps.common import builtin_config, json_safe, out_dir
from deepsmlm.steps.evaluate import format_report, run_evaluate
from deepsmlm.steps.localize import run_localize
from deepsmlm.steps.psf import run_psf
from deepsmlm.steps.simulate import simulate, write_movie

# The demo trains the method of configs/2d-dense.yaml (fastloc: in the same 5 min on one
# CPU thread it beat the demo's earlier CPU-scale Deep-STORM at every density;
# docs/benchmarks.md, "fastloc", the demo).
# the image whose correlation with the truth the demo reports: localizations on a grid of
# camera pixel / SR_UPSAMPLING
SR_UPSAMPLING = 4


def run_demo(out, n_frames: int = 200, seed: int = 0, train_minutes: float = 5.0) -> dict:
    """The main job on built-in data.

    1. Simulate a dense microtubule-like 2D movie (64×64 px, ≈ 6 emitters/µm²) and a 3D
       astigmatic one, with their PSFs and previews.
    2. Train the camera-resolution localizer (fastloc, the training section of
       ``2d-dense.yaml``) on frames simulated on the fly for ``train_minutes``.
    3. Reconstruct the dense movie, evaluate against the ground truth, write
       ``out/fastloc/`` (sr.png, localizations, metrics.json) and print a summary.
    """
    import json

    from deepsmlm.evaluation.image import sr_correlation
    from deepsmlm.io.localizations import read_csv
    from deepsmlm.plotting import frame_preview
    from deepsmlm.render import render_histogram
    from deepsmlm.training.train import train

    t_start = time.perf_counter()
    out = out_dir(out)
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

    exp = load_experiment(builtin_config("2d-dense.yaml"))
    t = exp.training
    exp.training = type(t).model_validate({**t.model_dump(), "seed": seed + 1})
    print(f"training {t.model} for {train_minutes:g} min …")
    model_dir = out / t.model / "model"
    if model_dir.exists():
        import shutil

        shutil.rmtree(model_dir)
    card = train(exp, model_dir, max_minutes=train_minutes, progress=False)
    res_dir = out / t.model
    loc = run_localize(model_dir, out / "2d-dense" / "frames.tif", res_dir, progress=False)
    metrics = run_evaluate(res_dir / "localizations.csv", out / "2d-dense" / "truth.csv",
                           experiment=out / "2d-dense" / "experiment.yaml")
    truth = read_csv(out / "2d-dense" / "truth.csv").numpy()
    found = read_csv(res_dir / "localizations.csv").numpy()
    fine_nm = card.pixel_size_nm / SR_UPSAMPLING
    field = (exp.frame.width_px * card.pixel_size_nm, exp.frame.height_px * card.pixel_size_nm)
    sr = render_histogram(found["xyz_nm"][:, :2], fine_nm, field)
    r = sr_correlation(sr, truth["xyz_nm"][:, :2], fine_nm)
    metrics.update(sr_correlation=r, localize_frames_per_s=loc["frames_per_s"],
                   training_minutes=card.training["seconds"] / 60,
                   training_samples=card.training["samples"])
    from deepsmlm.io.atomic import atomic_write_text

    atomic_write_text(res_dir / "metrics.json", json.dumps(json_safe(metrics), indent=2))
    total = time.perf_counter() - t_start
    print(format_report(metrics))
    print(f"\n{t.model} on {n_frames} dense frames: Jaccard {metrics['jaccard']:.1f} %, "
          f"RMSE {metrics['rmse_xy_nm']:.1f} nm, SR-image correlation r = {r:.3f}; "
          f"trained {metrics['training_minutes']:.1f} min, localized at "
          f"{loc['frames_per_s']:.1f} frames/s; demo took {total / 60:.1f} min → {res_dir}")
    summary[t.model] = metrics
    return summary
