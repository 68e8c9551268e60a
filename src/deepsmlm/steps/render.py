"""``deepsmlm render``: a super-resolution image of localizations (TIFF + PNG)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from deepsmlm.errors import UserError
from deepsmlm.io.localizations import read_localizations
from deepsmlm.steps.common import check_number, field_of


def run_render(locs_path, pixel_nm: float, out, sigma_nm: float | None = None,
               use_precision: bool = False, experiment=None,
               pixel_size_nm: float | None = None) -> np.ndarray:
    """Render LOCS to a float32 TIFF (pixel size in its tags) and a PNG preview."""
    from deepsmlm.io.frames import write_stack
    from deepsmlm.plotting import image_preview
    from deepsmlm.render import render_gaussian, render_histogram

    check_number("--pixel-nm", pixel_nm, above=0.0)
    check_number("--sigma", sigma_nm, above=0.0)
    check_number("--pixel-size-nm", pixel_size_nm, above=0.0)
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give an image file name, e.g. "
                        f"{out / 'sr.tif'}")
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise UserError(f"--out {out}: the image is a TIFF; give a name ending in .tif")
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
        if "uncertainty_xyz_nm" not in locs:
            raise UserError(f"{locs_path}: no uncertainty column for --sigma precision")
        sigma_xy = locs["uncertainty_xyz_nm"][:, :2]
        unknown = int((~np.isfinite(sigma_xy).all(axis=1)).sum())
        if unknown:
            raise UserError(f"{locs_path}: {unknown} of {len(xy)} localizations have no x/y "
                            "uncertainty (NaN) for --sigma precision; give --sigma in nm")
        img = render_gaussian(xy, pixel_nm, field, sigma_xy)  # σx, σy per localization
    elif sigma_nm:
        img = render_gaussian(xy, pixel_nm, field, sigma_nm)
    else:
        img = render_histogram(xy, pixel_nm, field)
    write_stack(out, img[None], pixel_nm, axes="ZYX")
    image_preview(img, pixel_nm, out.with_suffix(".png"),
                  f"{len(xy)} localizations, {pixel_nm:g} nm pixels")
    return img
