"""``deepsmlm estimate``: measure a raw movie (``calibration.movie``); print a skeleton."""

from __future__ import annotations

import numpy as np

from deepsmlm.errors import UserError
from deepsmlm.steps.common import check_camera, check_number


def run_estimate(movie, pixel_size_nm=None, baseline_adu=None, e_per_adu=None,
                 em_gain=None, qe=None, max_frames: int = 500) -> tuple[dict, str]:
    """Measure a raw movie; returns the numbers and an experiment skeleton (YAML)."""
    from deepsmlm.calibration.movie import estimate_movie, experiment_skeleton
    from deepsmlm.io.movies import open_movie

    check_number("--pixel-size-nm", pixel_size_nm, above=0.0)
    check_camera({"baseline_adu": baseline_adu, "e_per_adu": e_per_adu, "em_gain": em_gain,
                  "qe": qe})
    stack = open_movie(movie)  # a TIFF, a TIFF series or a Zarr array
    frames = np.asarray(stack.read(0, max_frames), dtype=np.float64)
    lo, hi = float(frames.min()), float(frames.max())
    if lo == hi:
        raise UserError(f"{movie}: a flat movie (every pixel of the first {len(frames)} "
                        f"frames is {lo:g} ADU): nothing to measure")
    px = pixel_size_nm or stack.pixel_size_nm
    given = None not in (e_per_adu, em_gain, qe)
    k = qe * em_gain / e_per_adu if given else None
    excess = 2.0 if (em_gain or 1.0) > 1 else 1.0
    try:
        est = estimate_movie(frames, px, baseline_adu, k, excess)
    except (ZeroDivisionError, np.linalg.LinAlgError) as err:
        raise UserError(f"{movie}: the photon transfer fit failed ({err}); give the camera "
                        "values (--baseline-adu, --e-per-adu, --em-gain, --qe)") from None
    if not (np.isfinite(est["adu_per_photon"]) and est["adu_per_photon"] > 0):
        raise UserError(f"{movie}: cannot measure the camera gain from these frames "
                        f"(photon transfer slope {est['photon_transfer_slope']:.3g}); give "
                        "--e-per-adu, --em-gain and --qe")
    camera = {"qe": qe or 1.0, "em_gain": em_gain or 1.0, "e_per_adu": e_per_adu or
              (qe or 1.0) * (em_gain or 1.0) / est["adu_per_photon"],
              "baseline_adu": est["baseline_adu"], "read_noise_e": 0.0}
    est["camera_from"] = "given" if given else "photon transfer (rough; give camera values)"
    h, w = stack.data.shape[1:]
    return est, experiment_skeleton(est, h, w, px, camera)
