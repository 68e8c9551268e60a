"""Steps that measure localizations and write reports (what `evaluate`, `render`, `crlb`
and `frc` run). Inputs are files; outputs are written atomically."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from deepsmlm.config import Experiment, load_experiment
from deepsmlm.errors import UserError
from deepsmlm.io.atomic import atomic_path, atomic_write_text
from deepsmlm.io.localizations import detect_format, read_localizations, read_picasso_info


def field_of(locs_path: str | os.PathLike, experiment: str | os.PathLike | None = None
             ) -> tuple[float, float] | None:
    """Field of view (width, height) in nm: from ``experiment``, an ``experiment.yaml``
    beside the file, or Picasso metadata; None when unknown."""
    path = Path(locs_path)
    exp_path = Path(experiment) if experiment else path.parent / "experiment.yaml"
    if experiment or exp_path.is_file():
        exp = load_experiment(exp_path)
        px = exp.optics.pixel_size_nm
        return exp.frame.width_px * px, exp.frame.height_px * px
    if detect_format(path) == "picasso":
        info = {k: v for d in read_picasso_info(path) for k, v in d.items()}
        if {"Width", "Height", "Pixelsize"} <= set(info):
            return info["Width"] * info["Pixelsize"], info["Height"] * info["Pixelsize"]
    return None


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def run_evaluate(pred_path, truth_path, tol_xy_nm: float = 250.0, tol_z_nm: float = 500.0,
                 method: str = "greedy", border_nm: float = 0.0, experiment=None,
                 pixel_size_nm: float | None = None, json_out=None) -> dict:
    """Match PRED to TRUTH and compute every metric; optionally write JSON."""
    from deepsmlm.evaluation.metrics import evaluate

    pred = read_localizations(pred_path, pixel_size_nm).numpy()
    truth = read_localizations(truth_path, pixel_size_nm).numpy()
    field = field_of(truth_path, experiment) or field_of(pred_path, experiment)
    if border_nm > 0 and field is None:
        raise UserError("--border-nm needs the field of view: give --experiment")
    res = evaluate(truth["frame"], truth["xyz_nm"], pred["frame"], pred["xyz_nm"],
                   gt_photons=truth["photons"], tol_xy_nm=tol_xy_nm, tol_z_nm=tol_z_nm,
                   method=method, field_nm=field, border_nm=border_nm)
    res.update(pred=str(pred_path), truth=str(truth_path))
    if json_out:
        atomic_write_text(json_out, json.dumps(_json_safe(res), indent=2))
    return res


def format_report(res: dict) -> str:
    """A short human-readable table of an evaluation."""
    def f(v, fmt="{:.2f}"):
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    lines = [
        f"matching: {res['method']}, tolerance {res['tol_xy_nm']:.0f} nm lateral, "
        f"{res['tol_z_nm']:.0f} nm axial",
        f"ground truth {res['n_gt']}, predicted {res['n_pred']}: TP {res['tp']}, "
        f"FP {res['fp']}, FN {res['fn']}",
        f"Jaccard {f(res['jaccard'])} %   recall {f(res['recall'], '{:.3f}')}   "
        f"precision {f(res['precision'], '{:.3f}')}",
        f"RMSE lateral {f(res['rmse_xy_nm'])} nm   axial {f(res['rmse_z_nm'])} nm   "
        f"bias ({f(res['bias_x_nm'])}, {f(res['bias_y_nm'])}, {f(res['bias_z_nm'])}) nm",
        f"efficiency lateral {f(res['efficiency_xy'])}   axial {f(res['efficiency_z'])}",
    ]
    if res.get("by_density"):
        lines.append("by density (emitters/µm² per frame):  Jaccard  RMSE_xy  n_gt")
        for b in res["by_density"]:
            hi = "∞" if b["hi"] > 1e6 else f"{b['hi']:g}"
            lines.append(f"  [{b['lo']:g}, {hi})".ljust(38)
                         + f"{f(b['jaccard']):>7}  {f(b['rmse_xy_nm']):>7}  {b['tp'] + b['fn']}")
    return "\n".join(lines)


def run_render(locs_path, pixel_nm: float, out, sigma_nm: float | None = None,
               use_precision: bool = False, experiment=None,
               pixel_size_nm: float | None = None) -> np.ndarray:
    """Render LOCS to a float32 TIFF (pixel size in its tags) and a PNG preview."""
    from deepsmlm.io.frames import write_stack
    from deepsmlm.plotting import image_preview
    from deepsmlm.render import render_gaussian, render_histogram

    if pixel_nm <= 0:
        raise UserError(f"--pixel-nm must be > 0, got {pixel_nm}")
    locs = read_localizations(locs_path, pixel_size_nm).numpy()
    xy = locs["xyz_nm"][:, :2]
    field = field_of(locs_path, experiment)
    if field is None:
        if len(xy) == 0:
            raise UserError(f"{locs_path}: no localizations and no field of view to render")
        field = (float(xy[:, 0].max()) + pixel_nm, float(xy[:, 1].max()) + pixel_nm)
    rows = math.ceil(field[1] / pixel_nm)
    cols = math.ceil(field[0] / pixel_nm)
    if rows * cols > 400e6:
        raise UserError(f"a {rows}×{cols} image is too large; raise --pixel-nm")
    if use_precision:
        if "uncertainty_nm" not in locs:
            raise UserError(f"{locs_path}: no uncertainty column for --sigma precision")
        img = render_gaussian(xy, pixel_nm, field, locs["uncertainty_nm"])
    elif sigma_nm:
        img = render_gaussian(xy, pixel_nm, field, sigma_nm)
    else:
        img = render_histogram(xy, pixel_nm, field)
    out = Path(out)
    write_stack(out, img[None], pixel_nm, axes="ZYX")
    image_preview(img, pixel_nm, out.with_suffix(".png"),
                  f"{len(xy)} localizations, {pixel_nm:g} nm pixels")
    return img


def crlb_table(exp: Experiment, photons: float, background: float, z_nm: np.ndarray) -> dict:
    from deepsmlm.build import build_camera, build_psf
    from deepsmlm.evaluation.crlb import crlb

    return crlb(build_psf(exp), z_nm, photons, background, build_camera(exp))


def run_crlb(experiment, photons: float, background: float, out,
             z_range: tuple[float, float, float] | None = None) -> dict:
    """``out/crlb.csv`` (z [nm], crlb_x/y/z [nm]) and ``out/crlb.png``."""
    from deepsmlm.plotting import crlb_plot
    from deepsmlm.workflows import _out_dir, default_z_nm

    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    if photons <= 0 or background < 0:
        raise UserError(f"need --photons > 0 and --background >= 0, got {photons}, {background}")
    if z_range is None:
        z = default_z_nm(exp) if exp.optics.psf != "gaussian" else np.array([exp.optics.focus_nm])
    else:
        a, b, step = z_range
        z = np.arange(a, b + 1e-6 * step, step)
    res = crlb_table(exp, photons, background, z)
    out = _out_dir(out)
    rows = ["z [nm],crlb_x [nm],crlb_y [nm],crlb_z [nm]"]
    for i in range(len(z)):
        vals = [res["z_nm"][i], res["crlb_x"][i], res["crlb_y"][i], res["crlb_z"][i]]
        rows.append(",".join("nan" if not np.isfinite(v) else f"{v:.4f}" for v in vals))
    atomic_write_text(out / "crlb.csv", "\n".join(rows) + "\n")
    crlb_plot(res, out / "crlb.png", f"CRLB: {photons:g} photons, {background:g} background/px")
    return res


def run_frc(locs_path, pixel_nm: float = 5.0, block_frames: int | None = None, out=None,
            experiment=None, pixel_size_nm: float | None = None):
    """FRC resolution; writes ``frc.csv`` and ``frc.png`` into ``out`` (default: beside LOCS)."""
    from deepsmlm.evaluation.frc import frc_resolution
    from deepsmlm.plotting import frc_plot

    locs = read_localizations(locs_path, pixel_size_nm).numpy()
    try:
        res = frc_resolution(locs["xyz_nm"][:, :2], locs["frame"], pixel_nm,
                             field_of(locs_path, experiment), block_frames)
    except ValueError as err:
        raise UserError(f"{locs_path}: {err}") from None
    out = Path(out) if out else Path(locs_path).parent
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(locs_path).stem
    with atomic_path(out / f"{stem}_frc.csv") as tmp:
        np.savetxt(tmp, np.column_stack([res.q_per_nm, res.frc, res.frc_raw]), delimiter=",",
                   header="q [1/nm],frc,frc_raw", comments="", fmt="%.6g")
    frc_plot(res, out / f"{stem}_frc.png")
    return res
