"""``deepsmlm psf``: the experiment's PSF as a z-stack, its planes and a montage."""

from __future__ import annotations

import numpy as np
import torch

from deepsmlm.config import Experiment
from deepsmlm.errors import UserError
from deepsmlm.steps.common import (
    MAX_PSF_SIZE_PX,
    as_experiment,
    check_array_bytes,
    gigabytes,
    out_dir,
    species_choice,
    species_psf,
    z_planes,
)


def psf_stack(exp: Experiment, z_nm: np.ndarray, size_px: int | None = None,
              species: str | None = None) -> np.ndarray:
    """PSF of one photon at the centre of a ``size_px``² frame for each z: float32 (D, S, S).

    The emitter sits at the centre of the central pixel (``size_px`` odd by default). A
    multicolor experiment's PSF is that of ``species`` (a name; default the first).
    """
    from deepsmlm.build import build_psf

    if size_px is not None and size_px > MAX_PSF_SIZE_PX:
        raise UserError(f"--size-px {size_px} is too large (at most {MAX_PSF_SIZE_PX}); "
                        f"{len(z_nm)} planes would need "
                        f"{gigabytes(4.0 * len(z_nm) * size_px**2)}")
    if size_px is not None:
        check_array_bytes(4.0 * len(z_nm) * size_px**2,
                          f"{len(z_nm)} planes of {size_px}×{size_px} px",
                          "use fewer planes (--z-nm) or a smaller --size-px")
    psf = species_psf(exp, build_psf(exp), species)
    size = size_px or psf.patch_px
    px = exp.optics.pixel_size_nm
    z = torch.as_tensor(np.asarray(z_nm, dtype=np.float32))
    centre = (size // 2 + 0.5) * px
    xyz = torch.stack([torch.full_like(z, centre), torch.full_like(z, centre), z], dim=1)
    with torch.no_grad():
        out = psf.render(xyz, torch.ones_like(z), torch.arange(len(z)), (len(z), size, size))
    return out.numpy().astype(np.float32)


def run_psf(experiment, out, z_range: tuple[float, float, float] | None = None,
            size_px: int | None = None, species: str | None = None) -> np.ndarray:
    """``out/psf.tif`` (float32 D×H×W, one photon), ``psf_z.csv``, ``psf.png`` (of one
    species of a multicolor experiment: ``species``, default the first)."""
    from deepsmlm.io.atomic import atomic_write_text
    from deepsmlm.io.frames import write_stack
    from deepsmlm.plotting import psf_montage

    exp = as_experiment(experiment)
    z = z_planes(exp, z_range)
    stack = psf_stack(exp, z, size_px, species)
    out = out_dir(out)
    px = exp.optics.pixel_size_nm
    write_stack(out / "psf.tif", stack, px, axes="ZYX")
    atomic_write_text(out / "psf_z.csv", "z [nm]\n" + "".join(f"{v:.3f}\n" for v in z))
    o = exp.optics
    colour = species_choice(exp, species)[1] or f"λ {o.wavelength_nm:.0f} nm"
    title = f"{o.psf} PSF, {colour}, NA {o.na}, mask {o.mask.kind}, focus {o.focus_nm:.0f} nm"
    psf_montage(stack, z, px, out / "psf.png", title)
    return z
