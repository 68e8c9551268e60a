"""Helpers shared by the benchmark scripts: the benchmark experiments, the machine's
matmul rate, and the localize → read → score chain of the 3D benchmarks.

The scripts run as ``python benchmarks/X.py``: this folder then leads the import path, so
``import common`` (and ``from peers.picasso_peer import ...``) works without editing it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from deepsmlm.config import Experiment, experiment_from_dict, load_experiment

ROOT = Path(__file__).resolve().parents[1]
# the repository's configs/ (not api.builtin_config: a relative mask path such as
# 3d-tetrapod.yaml's ../../shared/data is meant from here, symlinks not resolved)
CONFIGS = ROOT / "configs"
CONFIG_2D = CONFIGS / "2d-dense.yaml"
CONFIG_3D = CONFIGS / "3d-tetrapod.yaml"
# 2D benchmarks (picasso_baseline, deepstorm2d): emitters/µm² per frame of the held-out
# movies (seed 1000 + index)
DENSITIES = (0.5, 1.0, 2.0, 4.0, 6.0)
# 3D benchmarks (deepstorm3d, deep_optics): emitters per ROI_PX × ROI_PX region
COUNTS = (5, 10, 20, 30, 40)
ROI_PX = 64  # side of the scored region of the 3D benchmarks [px]
# DeepSTORM3D's reporting: Hungarian assignment within a 100 nm sphere
SPHERE_100NM = dict(method="hungarian", tol_xy_nm=100.0, tol_z_nm=100.0, tol_3d_nm=100.0)
# frames with the PSF a little off the one trained on (real data never match): 20 mλ RMS of
# coma (Noll 7) and 30 mλ of spherical aberration (Noll 11), in rad RMS
MISMATCH = {7: 0.02 * 2 * math.pi, 11: 0.03 * 2 * math.pi}


def matmul_gflops(device: str = "cpu", n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matmul rate (GFLOP/s) of an n×n product, after one warm-up."""
    a = torch.randn(n, n, device=device)
    a @ a
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        a @ a
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * repeats / (time.perf_counter() - t) / 1e9


# -- experiments ---------------------------------------------------------------------------

def edited_experiment(config: str | Path, *, emitters: dict | None = None,
                      frame: dict | None = None, training: dict | None = None) -> Experiment:
    """The experiment of ``config`` with keys of its emitters/frame/training sections
    replaced (validated again; relative paths stay relative to the config's folder). A
    ``training`` naming another method than the config's replaces the whole section."""
    config = Path(config)
    d = load_experiment(config).to_dict()
    if training and training.get("model", d["training"]["model"]) != d["training"]["model"]:
        d["training"] = {}
    for section, changes in (("emitters", emitters), ("frame", frame),
                             ("training", training)):
        if changes:
            d[section].update(changes)
    return experiment_from_dict(d, base_dir=config.parent)


def density_experiment(density: float | None = None, config: str | Path = CONFIG_2D,
                       **training) -> Experiment:
    """``config`` (2d-dense.yaml) at ``density`` emitters/µm² per frame (None: the config's),
    with training keys replaced."""
    return edited_experiment(config, training=training, emitters=None if density is None
                             else {"density_per_um2": density})


def count_experiment(count: int, config: str | Path = CONFIG_3D) -> Experiment:
    """The config's experiment with ``count`` emitters in every frame."""
    return edited_experiment(config, emitters={"n_per_frame": [count, count]})


def field_experiment(count: int, context_px: int, config: str | Path = CONFIG_3D
                     ) -> Experiment:
    """``count`` emitters per ROI_PX × ROI_PX region, in frames of (ROI_PX + 2 context_px)²
    px at the same density."""
    side = ROI_PX + 2 * context_px
    n = round(count * (side / ROI_PX) ** 2)
    return edited_experiment(config, emitters={"n_per_frame": [n, n]},
                             frame={"height_px": side, "width_px": side})


def roi_experiment(count: int, context_px: int, config: str | Path = CONFIG_3D) -> Experiment:
    """``count_experiment`` (64×64 frames) or, with ``context_px``, ``field_experiment``."""
    return (field_experiment(count, context_px, config) if context_px
            else count_experiment(count, config))


# -- scoring 3D movies ---------------------------------------------------------------------

def roi_area_um2(pixel_nm: float) -> float:
    """Area of the scored ROI_PX × ROI_PX region [µm²]."""
    return (ROI_PX * pixel_nm / 1000) ** 2


def central_rows(table: dict, context_px: int, pixel_nm: float) -> dict:
    """The rows of a localization table (``EmitterSet.numpy()``) inside the central
    ROI_PX × ROI_PX region of a (ROI_PX + 2 context_px)² px frame."""
    from deepsmlm.evaluation.matching import inside_border

    side_nm = (ROI_PX + 2 * context_px) * pixel_nm
    keep = inside_border(table["xyz_nm"], (side_nm, side_nm), context_px * pixel_nm)
    return {k: v[keep] for k, v in table.items()}


def write_field(movie_dir: str | Path, context_px: int) -> None:
    """``field.json`` beside a movie: the context around its scored central region."""
    (Path(movie_dir) / "field.json").write_text(json.dumps({"context_px": context_px,
                                                            "roi_px": ROI_PX}))


def movie_context_px(movie_dir: str | Path) -> int:
    """The context of a movie written with ``write_field`` (0 without field.json)."""
    field = Path(movie_dir) / "field.json"
    return json.loads(field.read_text())["context_px"] if field.is_file() else 0


def localize_movie(model: str | Path, movie_dir: str | Path, out: str | Path,
                   context_px: int, pixel_nm: float, device: str = "cpu"
                   ) -> tuple[dict, dict, dict]:
    """``movie_dir/frames.tif`` through the model (``api.run_localize``) into ``out``;
    returns (its summary, truth, localizations), the tables (``EmitterSet.numpy()``)
    restricted to the central region when ``context_px``."""
    from deepsmlm.api import run_localize
    from deepsmlm.io.localizations import read_csv

    movie_dir, out = Path(movie_dir), Path(out)
    loc = run_localize(model, movie_dir / "frames.tif", out, device=device, progress=False)
    t = read_csv(movie_dir / "truth.csv").numpy()
    q = read_csv(out / "localizations.csv").numpy()
    if context_px:  # score the central region only
        t, q = central_rows(t, context_px, pixel_nm), central_rows(q, context_px, pixel_nm)
    return loc, t, q


def uncertainty_fit(truth: dict, found: dict, axes: int, field=None, border_nm: float = 0.0
                    ) -> dict:
    """std of error/σ per axis (the first ``axes`` of x, y, z) over the greedy 250 nm /
    500 nm matches (``UNCERTAINTY_MATCH``, on which training fits σ), overall and by photon
    quartile (``evaluation.metrics.uncertainty_calibration``); 1 where σ fit the errors."""
    from deepsmlm.evaluation.matching import match
    from deepsmlm.evaluation.metrics import UNCERTAINTY_MATCH, uncertainty_calibration

    m = match(truth["frame"], truth["xyz_nm"], found["frame"], found["xyz_nm"],
              **UNCERTAINTY_MATCH, field_nm=field, border_nm=border_nm)
    err = (found["xyz_nm"][m.pred_index] - truth["xyz_nm"][m.gt_index])[:, :axes]
    sig = found["uncertainty_xyz_nm"][m.pred_index][:, :axes]
    c = uncertainty_calibration(err, sig, truth["photons"][m.gt_index])
    return {"n": c["n"], "std": c["std"].tolist(), "rmse_nm": c["rmse_nm"].tolist(),
            "mean_sigma_nm": c["mean_sigma_nm"].tolist(),
            "by_photons": [{**b, "std": b["std"].tolist()} for b in c["by_photons"]]}
