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


def species_names_of(locs_path: str | os.PathLike,
                     experiment: str | os.PathLike | None = None) -> list[str]:
    """The names of a localization table's species indices: from ``experiment``
    (``emitters.species``), the file's Picasso metadata, a ``localize.json`` beside it
    (``species_names``) or an ``experiment.yaml`` beside it; empty when none says."""
    import json

    from deepsmlm.io.localizations import read_species_names

    def of_experiment(p: Path) -> list[str]:
        species = load_experiment(p).emitters.species
        return [sp.name for sp in species] if species else []

    path = Path(locs_path)
    if experiment:
        names = of_experiment(Path(experiment))
        if names:
            return names
    names = read_species_names(path)
    if names:
        return names
    run = path.parent / "localize.json"
    if run.is_file():
        try:
            names = json.loads(run.read_text(encoding="utf-8")).get("species_names")
        except (OSError, ValueError, AttributeError):
            names = None
        if isinstance(names, list) and names and all(isinstance(v, str) for v in names):
            return names
    beside = path.parent / "experiment.yaml"
    return of_experiment(beside) if not experiment and beside.is_file() else []


def open_run(experiment, out: str | os.PathLike, resume: bool, what: str, folder_word: str,
             holds: str, stages: tuple[str, ...] = ()) -> Experiment:
    """The experiment of a run in ``out`` (``what``: train or design): a resumed run takes
    the one saved there; a new one needs ``experiment`` and a folder without a run.
    ``stages``: paths inside ``out`` that, like the checkpoint, mark a run begun (the early
    stages of a design from scratch)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    stages = [out / p for p in stages]
    if resume:
        ckpt = out / "checkpoint"  # last.safetensors (format 1: + state.json)
        if not ((ckpt / "last.safetensors").is_file() or (ckpt / "state.json").is_file()
                or any(p.exists() for p in stages)):
            raise UserError(f"--resume: no checkpoint in {out}")
        return load_experiment(out / "experiment.yaml")
    if experiment is None:
        raise UserError(f"{what} needs an experiment file (or --resume with --out "
                        f"{folder_word})")
    if (out / "checkpoint").exists() or any(p.exists() for p in stages):
        raise UserError(f"{out} already holds {holds}; use --resume or another --out")
    return as_experiment(experiment)


def locked_run(experiment, out: str | os.PathLike, resume: bool, what: str,
               folder_word: str, holds: str, check=None, stages: tuple[str, ...] = ()):
    """``open_run`` under the output folder's lock (``io.lock``): the folder is created
    once the run is known to be valid (``check(exp)`` too, when given), then locked — by
    rank 0 alone under torchrun — and checked again, so two runs started together cannot
    both take it. Use as ``with locked_run(...) as exp:``."""
    import contextlib

    from deepsmlm.io.lock import folder_lock
    from deepsmlm.training.distributed import is_main_process

    exp = open_run(experiment, out, resume, what, folder_word, holds, stages)
    if check is not None:
        check(exp)
    if not is_main_process():
        return contextlib.nullcontext(exp)

    @contextlib.contextmanager
    def held():
        with folder_lock(out_dir(out), what):
            yield open_run(exp, out, resume, what, folder_word, holds, stages)

    return held()


def check_minutes(max_minutes: float | None) -> None:
    if max_minutes is not None and not (math.isfinite(max_minutes) and max_minutes > 0):
        raise UserError(f"--max-minutes must be > 0, got {max_minutes}")


def check_number(name: str, value: float | None, *, above: float | None = None,
                 at_least: float | None = None, at_most: float | None = None) -> None:
    """A UserError naming option ``name`` unless ``value`` (None: not given) is a finite
    number within the bounds (``above`` exclusive, ``at_least``/``at_most`` inclusive)."""
    if value is None:
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number, got {value!r}") from None
    rules = [f"> {above:g}" if above is not None else "",
             f">= {at_least:g}" if at_least is not None else "",
             f"<= {at_most:g}" if at_most is not None else ""]
    ok = (math.isfinite(v) and (above is None or v > above)
          and (at_least is None or v >= at_least) and (at_most is None or v <= at_most))
    if not ok:
        rule = " and ".join(r for r in rules if r)
        raise UserError(f"{name} must be a finite number{' ' + rule if rule else ''}, "
                        f"got {value!r}")


def check_camera(values: dict[str, float | None], names: dict[str, str] | None = None) -> None:
    """Camera values given by the user (None = not given): baseline_adu any finite
    number, e_per_adu and em_gain > 0, 0 < qe <= 1. ``names`` maps a key to the option
    that set it (default ``--KEY``)."""
    names = names or {}
    bounds = {"baseline_adu": {}, "e_per_adu": {"above": 0.0}, "em_gain": {"above": 0.0},
              "qe": {"above": 0.0, "at_most": 1.0}, "read_noise_e": {"at_least": 0.0}}
    for key, value in values.items():
        option = names.get(key, "--" + key.replace("_", "-"))
        check_number(option, value, **bounds.get(key, {}))


def check_localize_options(threshold: float | None, camera: dict | None) -> None:
    """``localize``'s numbers: a finite threshold; camera overrides as ``check_camera``."""
    check_number("--threshold", threshold)
    check_camera(camera or {}, {k: "--camera-" + k.replace("_", "-") for k in camera or {}})


def check_device(text: str) -> str:
    """``text`` as a torch device this build and machine can use (cpu, cuda, cuda:N, mps);
    a UserError names the device and why not."""
    name = str(text).strip()
    if name == "cpu":
        return name
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {text!r} (expected cpu, cuda, cuda:N or mps)"
                        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise UserError(f"device {text!r}: {why} (torch {torch.__version__}); "
                            "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device {text!r}: there are only "
                            f"{torch.cuda.device_count()} CUDA devices")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"device {text!r}: MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise UserError(f"unsupported device {text!r} (expected cpu, cuda, cuda:N or mps)")
    return name


# how far (relative) a movie's or an experiment's pixel size may be from the model's
PIXEL_SIZE_TOLERANCE = 0.02


def check_movie_fits_model(stack, card, tolerance: float = PIXEL_SIZE_TOLERANCE) -> None:
    """A UserError when the movie's pixel size (TIFF metadata, when present) differs from
    the model's by more than ``tolerance`` (relative): the model would localize on the
    wrong scale."""
    px, movie_px = card.pixel_size_nm, stack.pixel_size_nm
    if movie_px is not None and abs(movie_px - px) > tolerance * px:
        raise UserError(f"{stack.path}: pixel size {movie_px:.1f} nm (its metadata) but the "
                        f"model was trained for {px:.1f} nm; train a model for this pixel "
                        "size, or, if the metadata is wrong, give the true one with "
                        "--pixel-size-nm")


# Refuse, up front, arrays that would not fit: the limit and what would be needed are named.
MAX_ARRAY_BYTES = 32 * 2**30
MAX_PSF_SIZE_PX = 4096


def gigabytes(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"


def check_array_bytes(n_bytes: float, what: str, hint: str) -> None:
    """A UserError when an array of ``n_bytes`` would exceed the in-memory limit."""
    limit = min(MAX_ARRAY_BYTES, _memory_bytes() // 2 or MAX_ARRAY_BYTES)
    if n_bytes > limit:
        raise UserError(f"{what} would need {gigabytes(n_bytes)} of memory (limit "
                        f"{gigabytes(limit)}); {hint}")


def _memory_bytes() -> int:
    """Physical memory of this machine in bytes (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def species_choice(exp, species: str | None) -> tuple[int | None, str]:
    """Which species of a multicolor experiment (by name; default the first) — its index
    and a label for titles; (None, "") for a single-colour experiment. An unknown name is a
    UserError."""
    listed = exp.emitters.species or []
    if not listed:
        if species is not None:
            raise UserError(f"--species {species}: the experiment lists no emitters.species")
        return None, ""
    names = [s.name for s in listed]
    name = names[0] if species is None else species
    if name not in names:
        raise UserError(f"--species {name}: not one of the experiment's species "
                        f"({', '.join(names)})")
    k = names.index(name)
    return k, f"{name} ({listed[k].wavelength_nm:.0f} nm)"


def species_psf(exp, psf, species: str | None):
    """The PSF of one species of a multicolor experiment (``species_choice``), or the
    single-colour PSF as it is."""
    k, _ = species_choice(exp, species)
    return psf if k is None else psf.psfs[k]


def check_method_scene(exp) -> None:
    """A UserError, before any folder is made, when the experiment's method cannot model
    its scene (e.g. a colour classifier with fewer than two species)."""
    from deepsmlm.build import build_method, build_scene

    build_method(exp).card_settings(exp.training, build_scene(exp))
