"""File-level steps of the Deep-STORM method (what `train`, `localize`, `estimate` run)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from deepsmlm.errors import UserError


def run_train(experiment, out, max_minutes: float | None = None, resume: bool = False,
              device: str = "cpu", stack=None, truth=None, progress: bool = True) -> dict:
    """Train a Deep-STORM model into the folder ``out`` (see ``training.deepstorm``)."""
    from deepsmlm.config import load_experiment
    from deepsmlm.training.deepstorm import train_deepstorm

    if max_minutes is not None and max_minutes <= 0:
        raise UserError(f"--max-minutes must be > 0, got {max_minutes}")
    data = None
    if stack is not None or truth is not None:
        if stack is None or truth is None:
            raise UserError("training from a stack needs both --stack and --truth")
        from deepsmlm.io.frames import read_stack
        from deepsmlm.io.localizations import read_localizations

        frames = np.asarray(read_stack(stack).data)
        data = (frames, read_localizations(truth))
    if not resume:
        if experiment is None:
            raise UserError("train needs an experiment file (or --resume with --out MODEL)")
        if Path(out).exists() and (Path(out) / "checkpoint").exists():
            raise UserError(f"{out} already holds a model; use --resume or another --out")
        experiment = load_experiment(experiment)
    return train_deepstorm(experiment, out, max_minutes=max_minutes, resume=resume,
                           device=device, progress=progress, stack=data)


def run_localize(model_dir, movie, out, chunk_frames: int = 256, batch_size: int = 16,
                 device: str = "cpu", camera: dict | None = None,
                 threshold: float | None = None, progress: bool = True) -> dict:
    """Localize a movie; writes localizations.csv/.hdf5, sr.tif, sr.png; returns a summary.

    sr.tif is the network output summed over frames (for 3D models also over the depth
    planes, a z projection); sr.png shows it beside the widefield sum (3D: localizations
    coloured by z)."""
    from deepsmlm.inference import Predictor, localize_stack
    from deepsmlm.io.frames import read_stack, write_stack
    from deepsmlm.io.localizations import write_csv, write_picasso
    from deepsmlm.plotting import widefield_vs_sr, widefield_vs_z
    from deepsmlm.workflows import _out_dir

    pred = Predictor.load(model_dir, device, camera)
    if threshold is not None:
        pred.settings["threshold"] = float(threshold)
    stack = read_stack(movie)
    px = pred.settings["pixel_size_nm"]
    if stack.pixel_size_nm is not None and abs(stack.pixel_size_nm - px) > 0.02 * px:
        print(f"warning: the movie's pixel size {stack.pixel_size_nm:.1f} nm differs from the "
              f"model's {px:.1f} nm; using the model's")
    out = _out_dir(out)
    t0 = time.perf_counter()
    em, sr, wf = localize_stack(pred, stack, chunk_frames, batch_size, progress)
    seconds = time.perf_counter() - t0
    n, h, w = stack.data.shape
    write_csv(em, out / "localizations.csv", value_column="confidence")
    write_picasso(em, out / "localizations.hdf5", px, (h, w), n, source=str(movie))
    fine = pred.fine_pixel_nm
    write_stack(out / "sr.tif", sr.astype(np.float32)[None], fine, axes="ZYX")
    title = f"{n} frames, {len(em)} localizations"
    if pred.settings["kind"] == "deepstorm3d":
        widefield_vs_z(wf, em.xyz_nm.numpy(), px, out / "sr.png", title)
    else:
        widefield_vs_sr(wf, sr, px, fine, out / "sr.png", title)
    return {"frames": n, "localizations": len(em), "seconds": seconds,
            "frames_per_s": n / seconds, "out": str(out)}


def run_estimate(movie, pixel_size_nm=None, baseline_adu=None, e_per_adu=None,
                 em_gain=None, qe=None, max_frames: int = 500) -> tuple[dict, str]:
    """Measure a raw movie; returns the numbers and an experiment skeleton (YAML)."""
    from deepsmlm.estimate import estimate_movie, experiment_skeleton
    from deepsmlm.io.frames import read_stack

    stack = read_stack(movie)
    frames = np.asarray(stack.data[:max_frames], dtype=np.float64)
    px = pixel_size_nm or stack.pixel_size_nm
    given = None not in (e_per_adu, em_gain, qe)
    k = qe * em_gain / e_per_adu if given else None
    excess = 2.0 if (em_gain or 1.0) > 1 else 1.0
    est = estimate_movie(frames, px, baseline_adu, k, excess)
    camera = {"qe": qe or 1.0, "em_gain": em_gain or 1.0, "e_per_adu": e_per_adu or
              (qe or 1.0) * (em_gain or 1.0) / est["adu_per_photon"],
              "baseline_adu": est["baseline_adu"], "read_noise_e": 0.0}
    est["camera_from"] = "given" if given else "photon transfer (rough; give camera values)"
    h, w = stack.data.shape[1:]
    return est, experiment_skeleton(est, h, w, px, camera)
