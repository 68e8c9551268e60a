"""Helpers shared by the steps: experiments, output folders, JSON, fields of view."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from deepsmlm.config import Experiment, load_experiment
from deepsmlm.errors import UserError


def builtin_config(name: str) -> Path:
    """Path of an example experiment shipped with the package (``configs/NAME``)."""
    return Path(__file__).parents[1] / "configs" / name


def as_experiment(experiment: str | os.PathLike | Experiment) -> Experiment:
    """An Experiment as given, or loaded and validated from its YAML file."""
    return experiment if isinstance(experiment, Experiment) else load_experiment(experiment)


def out_dir(out: str | os.PathLike) -> Path:
    """The output folder ``out``, created if needed (a UserError when it cannot be)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create output folder {out}: {err.strerror}") from None
    return out


def json_safe(obj):
    """``obj`` with NaN/inf → None and numpy scalars → Python numbers (strict JSON)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def default_z_nm(exp: Experiment) -> np.ndarray:
    """PSF planes: 9 across the emitters' z range, or focus ± 1 µm in 250 nm steps."""
    lo, hi = exp.emitters.z_range_nm
    if hi > lo:
        return np.linspace(lo, hi, 9)
    f = exp.optics.focus_nm
    return np.arange(f - 1000.0, f + 1000.0 + 1e-6, 250.0)


def z_planes(exp: Experiment, z_range: tuple[float, float, float] | None) -> np.ndarray:
    """``a:b:step`` planes (b included on the grid), or the experiment's default."""
    if z_range is None:
        return default_z_nm(exp)
    a, b, step = z_range
    return np.arange(a, b + 1e-6 * step, step)


def field_of(locs_path: str | os.PathLike, experiment: str | os.PathLike | None = None
             ) -> tuple[float, float] | None:
    """Field of view (width, height) in nm: from ``experiment``, an ``experiment.yaml``
    beside the file, or Picasso metadata; None when unknown."""
    from deepsmlm.build import field_nm
    from deepsmlm.io.localizations import detect_format, read_picasso_info

    path = Path(locs_path)
    exp_path = Path(experiment) if experiment else path.parent / "experiment.yaml"
    if experiment or exp_path.is_file():
        return field_nm(load_experiment(exp_path))
    if detect_format(path) == "picasso":
        info = {k: v for d in read_picasso_info(path) for k, v in d.items()}
        if {"Width", "Height", "Pixelsize"} <= set(info):
            return info["Width"] * info["Pixelsize"], info["Height"] * info["Pixelsize"]
    return None


def open_run(experiment, out: str | os.PathLike, resume: bool, what: str, folder_word: str,
             holds: str) -> Experiment:
    """The experiment of a run in ``out`` (``what``: train or design): a resumed run takes
    the one saved there; a new one needs ``experiment`` and a folder without a run."""
    out = Path(out)
    if resume:
        ckpt = out / "checkpoint"  # last.safetensors (format 1: + state.json)
        if not ((ckpt / "last.safetensors").is_file() or (ckpt / "state.json").is_file()):
            raise UserError(f"--resume: no checkpoint in {out}")
        return load_experiment(out / "experiment.yaml")
    if experiment is None:
        raise UserError(f"{what} needs an experiment file (or --resume with --out "
                        f"{folder_word})")
    if (out / "checkpoint").exists():
        raise UserError(f"{out} already holds {holds}; use --resume or another --out")
    return as_experiment(experiment)


def locked_run(experiment, out: str | os.PathLike, resume: bool, what: str,
               folder_word: str, holds: str):
    """``open_run`` under the output folder's lock (``io.lock``): the folder is created
    once the run is known to be valid, then locked — by rank 0 alone under torchrun — and
    checked again, so two runs started together cannot both take it. Use as
    ``with locked_run(...) as exp:``."""
    import contextlib

    from deepsmlm.io.lock import folder_lock
    from deepsmlm.training.distributed import is_main_process

    exp = open_run(experiment, out, resume, what, folder_word, holds)
    if not is_main_process():
        return contextlib.nullcontext(exp)

    @contextlib.contextmanager
    def held():
        with folder_lock(out_dir(out), what):
            yield open_run(exp, out, resume, what, folder_word, holds)

    return held()


def check_minutes(max_minutes: float | None) -> None:
    if max_minutes is not None and max_minutes <= 0:
        raise UserError(f"--max-minutes must be > 0, got {max_minutes}")
