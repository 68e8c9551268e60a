"""``deepsmlm render``: a super-resolution image of localizations (TIFF + PNG); with
``--by species`` one image per species and an RGB composite, one colour per species."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from deepsmlm.errors import UserError
from deepsmlm.io.localizations import read_localizations
from deepsmlm.steps.common import check_number, field_of, species_names_of

BY_CHOICES = ("species",)


def run_render(locs_path, pixel_nm: float, out, sigma_nm: float | None = None,
               use_precision: bool = False, experiment=None,
               pixel_size_nm: float | None = None, by: str | None = None) -> np.ndarray:
    """Render LOCS to a float32 TIFF (pixel size in its tags) and a PNG preview; returns
    the image.

    ``by="species"`` (a table with a ``species`` column): ``out`` is still the image of
    every localization; beside it ``OUT_<name>.tif`` for each species (its name from the
    experiment, the file's metadata or ``localize.json``, else its index), and the PNG is
    the RGB composite, one colour per species (``render.species_rgb``) with a legend.
    Localizations of unknown species (−1) are in ``out`` only."""
    from deepsmlm.io.frames import write_stack
    from deepsmlm.plotting import image_preview

    check_number("--pixel-nm", pixel_nm, above=0.0)
    check_number("--sigma", sigma_nm, above=0.0)
    check_number("--pixel-size-nm", pixel_size_nm, above=0.0)
    if by is not None and by not in BY_CHOICES:
        raise UserError(f"--by must be one of {', '.join(BY_CHOICES)}, got {by!r}")
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give an image file name, e.g. "
                        f"{out / 'sr.tif'}")
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise UserError(f"--out {out}: the image is a TIFF; give a name ending in .tif")
    locs = read_localizations(locs_path, pixel_size_nm).numpy()
    if by == "species" and "species" not in locs:
        raise UserError(f"{locs_path}: no species column for --by species (a single-colour "
                        "table); render it without --by")
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
    sigma = sigma_nm or None
    if use_precision:
        if "uncertainty_xyz_nm" not in locs:
            raise UserError(f"{locs_path}: no uncertainty column for --sigma precision")
        sigma = locs["uncertainty_xyz_nm"][:, :2]  # σx, σy per localization
        unknown = int((~np.isfinite(sigma).all(axis=1)).sum())
        if unknown:
            raise UserError(f"{locs_path}: {unknown} of {len(xy)} localizations have no x/y "
                            "uncertainty (NaN) for --sigma precision; give --sigma in nm")
    species_out = None
    if by == "species":
        species_out = _species_planes(locs_path, locs, experiment, pixel_nm, field, sigma,
                                      rows * cols)
    img = _render(xy, pixel_nm, field, sigma)
    write_stack(out, img[None], pixel_nm, axes="ZYX")
    if species_out is None:
        image_preview(img, pixel_nm, out.with_suffix(".png"),
                      f"{len(xy)} localizations, {pixel_nm:g} nm pixels")
        return img
    from deepsmlm.plotting import species_preview
    from deepsmlm.render import species_rgb

    planes, names = species_out
    for plane, name in zip(planes, names):
        write_stack(species_tif(out, name), plane[None], pixel_nm, axes="ZYX")
    counts = [int((locs["species"] == k).sum()) for k in range(len(names))]
    unknown = len(xy) - sum(counts)
    title = ", ".join(f"{n} {c}" for n, c in zip(names, counts)) + (
        f", unknown {unknown}" if unknown else "") + f"; {pixel_nm:g} nm pixels"
    species_preview(species_rgb(planes), names, pixel_nm, out.with_suffix(".png"), title)
    return img


def species_tif(out: Path, name: str) -> Path:
    """The TIFF of one species beside ``out``: ``OUT_<name>.tif``."""
    return out.with_name(f"{out.stem}_{name}{out.suffix}")


def _render(xy, pixel_nm, field, sigma):
    from deepsmlm.render import render_gaussian, render_histogram

    if sigma is None:
        return render_histogram(xy, pixel_nm, field)
    return render_gaussian(xy, pixel_nm, field, sigma)


def _species_planes(locs_path, locs: dict, experiment, pixel_nm: float, field, sigma,
                    pixels: int) -> tuple[np.ndarray, list[str]]:
    """One rendering per species (K, rows, cols) and the species' names."""
    from deepsmlm.plotting import SPECIES_COLOURS
    from deepsmlm.render import render_species

    names = species_names_of(locs_path, experiment)
    top = int(locs["species"].max(initial=-1)) + 1
    k = max(len(names), top)
    if k == 0:
        raise UserError(f"{locs_path}: every localization's species is unknown (-1); "
                        "nothing to render --by species")
    if k > len(SPECIES_COLOURS):
        raise UserError(f"{locs_path}: {k} species, but --by species has colours for "
                        f"{len(SPECIES_COLOURS)}")
    if k * pixels > 400e6:
        raise UserError(f"{k} species of {pixels} pixels each are too large; raise "
                        "--pixel-nm")
    names = list(names) + [str(i) for i in range(len(names), k)]
    return render_species(locs["xyz_nm"][:, :2], locs["species"], k, pixel_nm, field,
                          sigma), names
