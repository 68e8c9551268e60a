"""``deepsmlm calibrate``: the microscope's pupil from a bead z-stack (phase retrieval).

Reads the stack (ADU → photons with the experiment's camera), finds the beads, excludes
hot and saturated pixels, and fits the pupil of the experiment's PSF model (``pupil`` or
``vectorial``) to every bead plane by Poisson likelihood (``calibration/pupil_fit.py``).
The design mask of the experiment, if any, is the starting phase; Zernike corrections (and
optionally a pixel map) are fitted on top.

Writes into ``--out``:
  pupil_phase.npy / .json   the retrieved pupil phase [rad] on the calibration grid (the
                            JSON holds ``pupil_radius_px`` for the experiment's NA_eff)
  pupil_amplitude.npy       the retrieved pupil transmission (1 = uniform)
  experiment.yaml           the experiment with the retrieved pupil as its file mask and the
                            fitted blur as ``emitters.blur_sigma_nm``
  experiment_aberrations.yaml   (when the fit is Zernike-only and the pupils coincide) the
                            design mask kept, the fit as ``optics.aberrations``
  calibration.json          coefficients, beads, focus, per-plane correlation and residual,
                            photons, background, bad pixels, timings
  planes.png, agreement.png measured and model planes side by side; per-plane agreement
  model_stack.tif           the model planes of the first bead (photons)
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from deepsmlm.config import Aberrations, Experiment, FileMask, ZernikeMask
from deepsmlm.errors import UserError
from deepsmlm.steps.common import as_experiment, json_safe, out_dir


def calibration_optics(exp: Experiment, patch_px: int):
    """The experiment's optics as a bead on the coverslip sees them: no index mismatch
    (sample index = immersion index), focus 0, the full NA, no aberrations (they are what
    the fit finds), patches of ``patch_px``; a file mask's radius rescaled from the
    experiment's NA_eff edge to the NA edge."""
    from deepsmlm.build import file_mask

    o = exp.optics
    update: dict = {"n_sample": o.n_immersion, "focus_nm": 0.0, "supercritical": False,
                    "aberrations": Aberrations(), "patch_px": patch_px}
    if isinstance(o.mask, FileMask):
        radius = file_mask(o.mask)[1]
        update["mask"] = o.mask.model_copy(
            update={"pupil_radius_px": radius * o.na / o.na_eff})
    return o.model_copy(update=update)


def run_calibrate(stack_path, experiment, out, z_step_nm: float, *, crop_px: int | None = None,
                  z_direction: str = "up", max_beads: int = 4, steps: int = 150,
                  pixel_map_steps: int = 0, zernike_max: int = 45,
                  saturation_adu: float | None = None, fit_blur: bool = True,
                  seed: int = 0, progress: bool = True) -> dict:
    """Calibrate the PSF of ``experiment`` on the bead stack; returns the summary dict."""
    import torch

    from deepsmlm.build import build_camera, build_psf
    from deepsmlm.calibration import bead_stack as bs
    from deepsmlm.calibration.pupil_fit import FitSettings, fit_pupil
    from deepsmlm.io.frames import read_stack

    exp = as_experiment(experiment)
    o = exp.optics
    if o.psf not in ("pupil", "vectorial"):
        raise UserError(f"calibrate fits a pupil: optics.psf must be 'pupil' or 'vectorial', "
                        f"not {o.psf!r}")
    if not (math.isfinite(z_step_nm) and z_step_nm > 0):
        raise UserError(f"--z-step-nm must be a positive number of nm, got {z_step_nm}")
    if z_direction not in ("up", "down"):
        raise UserError(f"--z-direction must be 'up' or 'down', not {z_direction!r}")
    if not 5 <= zernike_max <= 231:
        raise UserError(f"--zernike-max must be a Noll index in 5–231, got {zernike_max}")
    if not Path(stack_path).is_file():
        raise UserError(f"bead stack not found: {stack_path}")
    t_start = time.perf_counter()
    raw = read_stack(stack_path).data
    adu = bs.check_stack(np.asarray(raw), str(stack_path))
    sat = saturation_adu if saturation_adu is not None else bs.default_saturation_adu(raw)
    bad = bs.find_bad_pixels(adu, sat)
    camera = build_camera(exp)
    photons = camera.to_photons(torch.from_numpy(adu)).double().numpy()
    photons = np.clip(photons, 0.0, None)
    n_planes, height, width = photons.shape
    crop = crop_px or min(o.patch_px or 61, height, width)
    crop = crop if crop % 2 else crop - 1
    if crop < 9:
        raise UserError(f"--crop-px {crop}: too small for a bead (≥ 9 px)")
    beads, skipped = bs.find_beads(photons, bad.weight, crop, max_beads)
    crops = np.stack([bs.crop(photons, b, crop) for b in beads])
    weights = np.stack([bs.crop(bad.weight, b, crop) for b in beads])
    if (weights.mean(axis=(2, 3)) < 0.5).any():
        b, t = np.argwhere(weights.mean(axis=(2, 3)) < 0.5)[0]
        raise UserError(f"bead {b} plane {t}: more than half of its pixels are saturated or "
                        "hot; lower the exposure or pass a larger --saturation-adu")

    cal = calibration_optics(exp, patch_px=crop + 2 * 8)  # room for the blur and a shift
    psf = build_psf(exp.model_copy(update={"optics": cal}))
    grid, base = psf.grid, psf.mask_phase.clone()  # the design mask: the fit's start
    stages = tuple(s for s in (15, 28, 45, 66, 91) if s < zernike_max) + (zernike_max,)
    settings = FitSettings(z_step_nm=z_step_nm, direction=1 if z_direction == "up" else -1,
                           zernike_stages=stages, steps_per_stage=steps,
                           pixel_steps=pixel_map_steps, fit_blur=fit_blur,
                           blur_sigma_nm=(exp.emitters.blur_sigma_nm or 30.0) if fit_blur
                           else exp.emitters.blur_sigma_nm, seed=seed)
    report = _progress_printer() if progress else None
    torch.manual_seed(seed)
    try:
        fit = fit_pupil(psf, crops, weights, settings, base_phase=base, progress=report)
    except FloatingPointError as err:  # never a NaN result: say so and stop
        raise UserError(f"{stack_path}: {err}; check the camera settings (photons per "
                        "count) and the crop, or fit fewer modes") from None

    import json

    from deepsmlm.io.atomic import atomic_write_text
    from deepsmlm.io.lock import folder_lock

    out = out_dir(out)
    with folder_lock(out, "calibrate"):  # one writer at a time
        summary = _write(out, exp, grid, fit, beads, skipped, bad, crops, weights,
                         n_planes, z_step_nm, settings, stack_path)
        summary["seconds"] = time.perf_counter() - t_start
        atomic_write_text(out / "calibration.json", json.dumps(json_safe(summary), indent=2))
    return summary


def _progress_printer():
    last = {"stage": None}

    def report(stage: str, step: int, n: int, loss: float) -> None:
        if stage != last["stage"] or step == n - 1 or step % 50 == 0:
            print(f"  {stage:<34s} step {step + 1:>4d}/{n}  deviance/px {loss:9.3f}",
                  flush=True)
        last["stage"] = stage
    return report


def _write(out: Path, exp: Experiment, grid, fit, beads, skipped, bad, crops, weights,
           n_planes: int, z_step_nm: float, settings, stack_path) -> dict:
    import json

    import yaml

    from deepsmlm.io.atomic import atomic_path, atomic_write_text
    from deepsmlm.io.frames import write_stack
    from deepsmlm.plotting import calibration_agreement, calibration_planes

    o = exp.optics
    n = grid.n_px
    radius_na = n / 2.0                       # the calibration grid's edge is NA/λ
    radius_exp = radius_na * o.na_eff / o.na  # the experiment's pupil edge NA_eff/λ
    for name, arr in (("pupil_phase.npy", fit.phase.astype(np.float64)),
                      ("pupil_amplitude.npy", fit.amplitude.astype(np.float64))):
        with atomic_path(out / name) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
    atomic_write_text(out / "pupil_phase.json", json.dumps({
        "pupil_radius_px": radius_exp, "na_radius_px": radius_na,
        "wavelength_nm": o.wavelength_nm, "na": o.na,
        "note": "pupil phase [rad] retrieved by deepsmlm calibrate; pupil_radius_px is the "
                "experiment's NA_eff edge, na_radius_px the objective's NA edge"}, indent=2))

    data = exp.to_dict()
    data["optics"]["mask"] = {"kind": "file", "path": "pupil_phase.npy",
                              "amplitude_path": "pupil_amplitude.npy",
                              "pupil_radius_px": float(radius_exp)}
    data["optics"]["aberrations"] = {"noll": {}}
    if settings.fit_blur:
        data["emitters"]["blur_sigma_nm"] = round(float(fit.blur_sigma_nm), 1)
    atomic_write_text(out / "experiment.yaml", yaml.safe_dump(data, sort_keys=False))
    written = ["experiment.yaml"]
    if settings.pixel_steps == 0 and abs(o.na_eff - o.na) < 1e-9 \
            and not isinstance(o.mask, ZernikeMask):
        alt = exp.to_dict()
        alt["optics"]["aberrations"] = {"noll": {int(j): round(float(a), 4)
                                                 for j, a in fit.noll.items()}}
        if settings.fit_blur:
            alt["emitters"]["blur_sigma_nm"] = round(float(fit.blur_sigma_nm), 1)
        atomic_write_text(out / "experiment_aberrations.yaml",
                          yaml.safe_dump(alt, sort_keys=False))
        written.append("experiment_aberrations.yaml")

    z = fit.z_nm(n_planes, z_step_nm)
    write_stack(out / "model_stack.tif", fit.model[0].astype(np.float32), o.pixel_size_nm,
                axes="ZYX")
    calibration_planes(crops[0], fit.model[0], z[0], o.pixel_size_nm, out / "planes.png",
                       f"bead 1 of {Path(stack_path).name} — {o.psf} model")
    calibration_agreement(z, fit.correlation, fit.residual, out / "agreement.png")
    corr = fit.correlation
    return {
        "stack": str(stack_path), "psf": o.psf, "planes": n_planes, "z_step_nm": z_step_nm,
        "crop_px": int(crops.shape[-1]),  # the square fitted about each bead
        "z_direction": "up" if fit.direction > 0 else "down",
        "pupil_grid_px": n, "noll": {str(j): a for j, a in fit.noll.items()},
        "amplitude_noll": {str(j): a for j, a in fit.amplitude_noll.items()},
        "blur_sigma_nm": fit.blur_sigma_nm, "deviance_per_px": fit.deviance,
        "correlation_min": float(corr.min()), "correlation_mean": float(corr.mean()),
        "beads": [{
            "x_px": float(b.left + fit.xy_px[i, 0]), "y_px": float(b.top + fit.xy_px[i, 1]),
            "focus_plane": float(fit.focus_plane(z_step_nm)[i]),
            "z_plane0_nm": float(fit.offset_nm[i]),
            "z_nm": z[i].tolist(), "correlation": corr[i].tolist(),
            "residual": fit.residual[i].tolist(), "photons": fit.photons[i].tolist(),
            "background_photons_per_px": fit.background[i].tolist()}
            for i, b in enumerate(beads)],
        "skipped_beads": skipped,
        "bad_pixels": {"hot": bad.hot_px, "saturated_planes": bad.saturated_planes,
                       "saturated_px": bad.n_saturated_px},
        "fit_seconds": fit.seconds, "written": written,
        "settings": {k: (list(v) if isinstance(v, tuple) else v)
                     for k, v in vars(settings).items()},
    }
