"""``deepsmlm crlb``: the Cramér–Rao bound of the experiment's PSF and camera per z."""

from __future__ import annotations

import numpy as np

from deepsmlm.config import Experiment
from deepsmlm.io.atomic import atomic_write_text
from deepsmlm.steps.common import as_experiment, check_number, out_dir, species_psf, z_planes


def crlb_table(exp: Experiment, photons: float, background: float, z_nm: np.ndarray,
               species: str | None = None) -> dict:
    """CRLB per z (of one species of a multicolor experiment: ``species``, default the
    first)."""
    from deepsmlm.build import build_camera, build_psf
    from deepsmlm.evaluation.crlb import crlb

    psf = species_psf(exp, build_psf(exp), species)
    return crlb(psf, z_nm, photons, background, build_camera(exp))


def run_crlb(experiment, photons: float, background: float, out,
             z_range: tuple[float, float, float] | None = None,
             species: str | None = None) -> dict:
    """``out/crlb.csv`` (z [nm], crlb_x/y/z [nm]) and ``out/crlb.png``."""
    from deepsmlm.plotting import crlb_plot

    check_number("--photons", photons, above=0.0)
    check_number("--background", background, at_least=0.0)
    exp = as_experiment(experiment)
    if z_range is None and exp.optics.psf == "gaussian":
        z = np.array([exp.optics.focus_nm])
    else:
        z = z_planes(exp, z_range)
    res = crlb_table(exp, photons, background, z, species)
    out = out_dir(out)
    rows = ["z [nm],crlb_x [nm],crlb_y [nm],crlb_z [nm]"]
    for i in range(len(z)):
        vals = [res["z_nm"][i], res["crlb_x"][i], res["crlb_y"][i], res["crlb_z"][i]]
        rows.append(",".join("nan" if not np.isfinite(v) else f"{v:.4f}" for v in vals))
    atomic_write_text(out / "crlb.csv", "\n".join(rows) + "\n")
    crlb_plot(res, out / "crlb.png", f"CRLB: {photons:g} photons, {background:g} background/px")
    return res
