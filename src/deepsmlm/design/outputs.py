"""Files a design writes: the mask for the experiment file, for an SLM, and for people.

- ``mask.npy``: the phase [rad] on the pupil grid (float64, zero outside the aperture), with
  ``mask.json`` beside it: ``pupil_radius_px`` (the grid's n_px/2 — the pupil edge NA_eff/λ
  lies that many pixels from the centre (n_px−1)/2), wavelength and NA_eff. The experiment
  file loads it with ``mask: {kind: file, path: mask.npy}`` (the radius is read from the
  JSON when the file does not give one).
- ``mask_slm.tif``: the phase wrapped to [0, 2π) as 8 bits (0 ↔ 0, 256 ↔ 2π), for a
  spatial light modulator with a linear 2π lookup table.
- ``mask_levels.npy``: with ``design.height_levels`` = L, the phase wrapped and rounded to
  the L levels 2πk/L of a printed mask (its CRLB is in design.json).
- ``mask.png``: the wrapped phase; ``psf.png``: the PSF across z, start above, learned below;
  ``footprint.png``: the radius holding 80 % of the photons and the orientation of the
  PSF's principal axis against z (``shape_report``, drawn by ``plotting.footprint_plot``;
  the numbers are in design.json).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from deepsmlm.io.atomic import atomic_path
from deepsmlm.io.tensors import write_json
from deepsmlm.optics.pupil import PupilGrid


def write_mask(phase: torch.Tensor, grid: PupilGrid, out: Path, extra: dict | None = None
               ) -> None:
    """mask.npy + mask.json + mask_slm.tif (all atomic)."""
    import tifffile

    ap = grid.aperture(torch.float64).numpy()
    arr = phase.detach().double().cpu().numpy() * ap
    with atomic_path(out / "mask.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    write_json(out / "mask.json", {"pupil_radius_px": grid.n_px / 2.0,
                                   "grid_px": grid.n_px, "wavelength_nm": grid.wavelength_nm,
                                   "na_eff": grid.na_eff, "units": "rad",
                                   **(extra or {})})
    with atomic_path(out / "mask_slm.tif") as tmp:
        tifffile.imwrite(tmp, slm_levels(arr, ap), photometric="minisblack")


def slm_levels(phase_rad: np.ndarray, aperture: np.ndarray) -> np.ndarray:
    """Phase wrapped to [0, 2π) as uint8 grey levels; 0 outside the aperture."""
    wrapped = np.mod(phase_rad, 2 * math.pi)
    levels = np.floor(wrapped / (2 * math.pi) * 256.0).astype(np.int64) % 256
    return (levels * (aperture > 0)).astype(np.uint8)


def write_levels(phase: torch.Tensor, grid: PupilGrid, out: Path, levels: int) -> torch.Tensor:
    """mask_levels.npy: the phase quantised to ``levels`` etch depths; returns it."""
    from deepsmlm.design.phase_models import quantise

    q = quantise(phase.detach().double(), levels) * grid.aperture(torch.float64)
    with atomic_path(out / "mask_levels.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, q.cpu().numpy(), allow_pickle=False)
    return q.float()


def shape_report(exp, phases: dict[str, torch.Tensor], n_z: int = 9) -> dict:
    """Footprint and rotation of the PSF of each phase over the experiment's z range (the
    first species' PSF for a multicolor experiment): z [nm], radius holding 80 % of the
    photons [nm] per z and its mean (and the same for 50 %: a compact core with faint
    rings has a small 50 % and a large 80 % radius), principal-axis angle [deg, unwrapped
    over z] and elongation per z, and the angle's total turn over the range."""
    from deepsmlm.optics.psf_shape import energy_radius_nm, principal_axis_deg, unwrap_deg

    z, stacks = psf_stacks(exp, list(phases.values()), n_z=n_z, size_px=10**6)
    step = len(stacks) // len(phases)  # one stack per species and phase
    out = {"z_nm": z.tolist()}
    for i, name in enumerate(phases):
        img = torch.from_numpy(stacks[i * step])
        r = energy_radius_nm(img, exp.optics.pixel_size_nm, 0.8)
        r50 = energy_radius_nm(img, exp.optics.pixel_size_nm, 0.5)
        ang, el = principal_axis_deg(img)
        turn = unwrap_deg(ang.numpy())
        out[name] = {"radius80_nm": r.tolist(), "mean_radius80_nm": float(r.mean()),
                     "radius50_nm": r50.tolist(), "mean_radius50_nm": float(r50.mean()),
                     "angle_deg": turn.tolist(), "elongation": el.tolist(),
                     "turn_deg": float(turn[-1] - turn[0])}
    return out


def species_labels(exp) -> list[str]:
    """One label suffix per emission wavelength: "" for one colour, " name (λ nm)" per
    species of a multicolor experiment (the order of ``species_views``)."""
    return [f" {sp.name} ({sp.wavelength_nm:.0f} nm)" for sp in exp.emitters.species or []] \
        or [""]


def species_views(exp, psf) -> list[tuple[str, object, float]]:
    """(label, PSF, mask scale) per emission wavelength: the PSF itself for one colour;
    each species' PSF and its thin-element mask scale for a multicolor experiment."""
    if not getattr(psf, "takes_species", False):
        return [("", psf, 1.0)]
    return list(zip(species_labels(exp), psf.psfs, psf.mask_scales, strict=True))


def psf_stacks(exp, phases: list[torch.Tensor], n_z: int = 9, size_px: int = 41
               ) -> tuple[np.ndarray, list[np.ndarray]]:
    """z (n_z,) and, per phase (and per species, species fastest, for a multicolor
    experiment), the PSF at those depths (n_z, size, size), 1 photon."""
    from deepsmlm.build import build_psf
    from deepsmlm.evaluation.crlb import centred_positions

    psf = build_psf(exp)
    z_lo, z_hi = exp.emitters.z_range_nm
    z = np.linspace(z_lo, z_hi, n_z)
    views = species_views(exp, psf)
    stacks = []
    with torch.no_grad():
        for p in phases:
            for _, one, scale in views:
                xyz = centred_positions(one, z)
                img, _ = one.patches(xyz, torch.ones(n_z), mask_phase=p.float() * scale)
                c, h = one.patch_px // 2, min(size_px, one.patch_px) // 2
                stacks.append(img[:, c - h:c + h + 1, c - h:c + h + 1].numpy())
    return z, stacks


def write_figures(exp, grid: PupilGrid, phase: torch.Tensor, start: torch.Tensor,
                  out: Path, labels: tuple[str, str] = ("start", "learned")) -> None:
    """mask.png and psf.png (one row per mask, and per species' wavelength)."""
    from deepsmlm.plotting import mask_image, psf_rows

    ap = grid.aperture(torch.float64).numpy()
    mask_image([start.double().numpy() * ap, phase.detach().double().numpy() * ap], ap,
               labels, out / "mask.png")
    z, stacks = psf_stacks(exp, [start, phase.detach()])
    suffixes = species_labels(exp)
    psf_rows(stacks, z, exp.optics.pixel_size_nm,
             tuple(f"{lab}{suf}" for lab in labels for suf in suffixes), out / "psf.png")

