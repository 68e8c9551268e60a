"""Experiment config → objects. With the steps (``deepsmlm.steps``), the only code that
reads the config tree.

Components elsewhere take explicit arguments; this module translates the experiment file
into them (PSF, camera, structure, emission, background, simulator, training patches).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from deepsmlm.camera import Camera
from deepsmlm.config import Experiment, FileMask, FrameConfig, Optics, ZernikeMask
from deepsmlm.emitters import EmitterSet
from deepsmlm.errors import UserError
from deepsmlm.optics import masks
from deepsmlm.optics.multicolor import MulticolorPSF, mask_phase_scale
from deepsmlm.optics.psf import PSF, AstigmaticGaussianPSF, GaussianPSF, PupilPSF
from deepsmlm.optics.pupil import PupilGrid
from deepsmlm.optics.vectorial import VectorialPSF
from deepsmlm.simulation import emission, structures
from deepsmlm.simulation.background import ConstantBackground, SmoothBackground
from deepsmlm.simulation.simulator import Simulator


def pupil_grid(optics: Optics) -> PupilGrid:
    return PupilGrid(optics.pupil_grid_px, optics.wavelength_nm, optics.na_eff)


def file_mask(m: FileMask) -> tuple[np.ndarray, float]:
    """A file mask's phase [rad] as oriented for the microscope (numpy (N, N)) and the
    radius, in its pixels, of the pupil edge NA_eff/λ (given, from the sidecar JSON, or
    from the support)."""
    arr = masks.orient_phase(masks.load_phase_array(m.path, m.key),
                             m.flip_x, m.flip_y, m.transpose)
    radius = (m.pupil_radius_px or masks.sidecar_pupil_radius_px(m.path)
              or masks.estimate_pupil_radius_px(arr))
    return arr, radius


def pupil_maps(optics: Optics, grid: PupilGrid) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The experiment's phase mask [rad] and pupil transmission (a file mask's
    ``amplitude_path``; None: uniform) on ``grid``, each file read once."""
    m = optics.mask
    if isinstance(m, ZernikeMask):
        return masks.zernike_mask(grid, m.noll), None
    if not isinstance(m, FileMask):
        return torch.zeros(grid.n_px, grid.n_px), None
    arr, radius = file_mask(m)
    phase = masks.resample_phase(arr, radius, grid)
    if m.amplitude_path is None:
        return phase, None
    amp = masks.orient_phase(masks.load_phase_array(m.amplitude_path), m.flip_x, m.flip_y,
                             m.transpose)
    if amp.shape != arr.shape:
        raise UserError(f"{m.amplitude_path}: shape {amp.shape} differs from the phase "
                        f"mask's {arr.shape}")
    return phase, masks.resample_amplitude(amp, radius, grid)


def with_mask_file(exp: Experiment, path) -> Experiment:
    """A copy of ``exp`` whose phase mask is the file ``path`` (a design's mask.npy, its
    pupil radius read from the mask.json beside it)."""
    out = exp.model_copy(deep=True)
    out.optics = out.optics.model_copy(update={"mask": FileMask(kind="file", path=str(path))})
    return out


def mask_phase(optics: Optics, grid: PupilGrid) -> torch.Tensor:
    """The experiment's phase mask on ``grid`` [rad], (n_px, n_px)."""
    return pupil_maps(optics, grid)[0]


def default_patch_px(optics: Optics) -> int:
    """Patch side for the pupil model: room for a Tetrapod-sized PSF with a file mask,
    about 3.5 Airy diameters around a clear or Zernike PSF; odd, below the grid period."""
    if optics.patch_px is not None:
        return optics.patch_px
    airy_nm = 1.22 * optics.wavelength_nm / optics.na
    if isinstance(optics.mask, FileMask):
        extent_nm = 6500.0
    else:
        extent_nm = 7.0 * airy_nm + 2.0 * sum(abs(a) for a in optics.mask.model_dump()
                                              .get("noll", {}).values()) * airy_nm
    p = int(math.ceil(extent_nm / optics.pixel_size_nm)) | 1
    period_px = int(pupil_grid(optics).period_nm / optics.pixel_size_nm)
    largest_odd = period_px - 1 if (period_px - 1) % 2 else period_px - 2
    return max(3, min(p, largest_odd))


def build_psf(exp: Experiment) -> PSF:
    """The experiment's PSF; with ``emitters.species``, one per species' wavelength
    (``optics.multicolor.MulticolorPSF``)."""
    if exp.emitters.species:
        return build_multicolor_psf(exp)
    o = exp.optics
    z_lo, z_hi = exp.emitters.z_range_nm
    if o.psf == "gaussian":
        return GaussianPSF(o.sigma_nm, o.pixel_size_nm, o.patch_px)
    if o.psf == "astigmatic-gaussian":
        zmax = max(abs(z_lo - o.focus_nm), abs(z_hi - o.focus_nm))
        return AstigmaticGaussianPSF(o.sigma_nm, o.astigmatism.focal_offset_nm,
                                     o.astigmatism.depth_of_focus_nm, o.focus_nm,
                                     o.pixel_size_nm, o.patch_px, zmax)
    grid = pupil_grid(o)
    aberr = masks.zernike_mask(grid, o.aberrations.noll) if o.aberrations.noll else None
    try:
        phase, amplitude = pupil_maps(o, grid)
        cls = VectorialPSF if o.psf == "vectorial" else PupilPSF
        return cls(grid, o.n_sample, o.n_immersion, o.focus_nm, o.pixel_size_nm,
                   default_patch_px(o), o.pixel_oversampling, phase, aberr, amplitude)
    except ValueError as err:
        raise UserError(f"optics: {err}") from None


def build_multicolor_psf(exp: Experiment) -> MulticolorPSF:
    """One PSF per species at its emission wavelength: the mask and aberrations are the
    experiment's (phases at ``optics.wavelength_nm``) scaled by the thin-element law; a
    Gaussian's σ (given or 0.21 λ/NA) scales with λ (docs of ``optics/multicolor.py``)."""
    o = exp.optics
    lam_d = o.wavelength_nm
    waves = [sp.wavelength_nm for sp in exp.emitters.species]
    per = [o.model_copy(update={"wavelength_nm": w,
                                "gaussian_sigma_nm": o.sigma_nm * w / lam_d}) for w in waves]
    if o.psf in ("gaussian", "astigmatic-gaussian"):  # one patch size: the widest PSF's
        single = exp.emitters.model_copy(update={"species": None})
        widest = build_psf(exp.model_copy(update={"optics": per[int(np.argmax(waves))],
                                                  "emitters": single}))
        psfs = [build_psf(exp.model_copy(update={
            "optics": q.model_copy(update={"patch_px": widest.patch_px}), "emitters": single}))
            for q in per]
        return MulticolorPSF(psfs, waves)
    grid_d = pupil_grid(o)
    aberr = masks.zernike_mask(grid_d, o.aberrations.noll) if o.aberrations.noll else None
    phase, amplitude = pupil_maps(o, grid_d)
    patch = max(default_patch_px(q) for q in per)
    mscale = [mask_phase_scale(w, lam_d, o.mask_dispersion) for w in waves]
    ascale = [lam_d / w for w in waves]
    cls = VectorialPSF if o.psf == "vectorial" else PupilPSF
    try:
        psfs = [cls(pupil_grid(q), o.n_sample, o.n_immersion, o.focus_nm, o.pixel_size_nm,
                    patch, o.pixel_oversampling, phase * m,
                    None if aberr is None else aberr * a, amplitude)
                for q, m, a in zip(per, mscale, ascale, strict=True)]
    except ValueError as err:
        raise UserError(f"optics: {err}") from None
    return MulticolorPSF(psfs, waves, mscale, ascale)


def build_camera(exp: Experiment) -> Camera:
    return Camera.from_config(exp.camera)


def field_nm(exp: Experiment) -> tuple[float, float]:
    """Field of view (width, height) in nm."""
    px = exp.optics.pixel_size_nm
    return exp.frame.width_px * px, exp.frame.height_px * px


# structures that build_structure draws at random (the others depend on the field only)
RANDOM_STRUCTURES = ("filaments",)


def build_structure(exp: Experiment, generator: torch.Generator | None = None
                    ) -> emission.Structure:
    e = exp.emitters
    w, h = field_nm(exp)
    z = tuple(e.z_range_nm)
    if e.structure == "filaments":
        return structures.Filaments.random(e.n_filaments, w, h, z, e.filament_persistence_nm,
                                           generator)
    if e.structure == "ellipsoid":
        return structures.EllipsoidSurface.fitting(w, h, z)
    return structures.UniformVolume(w, h, z)


def photon_distribution(exp: Experiment) -> emission.PhotonDistribution:
    p = exp.emitters.photons
    return emission.PhotonDistribution(p.distribution, p.lo, p.hi, p.mean, p.std)


def sample_emitters(exp: Experiment, n_frames: int, generator: torch.Generator | None = None,
                    structure: emission.Structure | None = None) -> EmitterSet:
    """Draw a structure (unless given) and the emitters of ``n_frames`` frames on it."""
    return emitter_stream(exp, generator, structure).take(n_frames)


def emitter_stream(exp: Experiment, generator: torch.Generator | None = None,
                   structure: emission.Structure | None = None):
    """The experiment's emitters as a stream: ``take(n)`` gives the next n frames (memory
    bounded by what is taken; the first ``take(T)`` equals ``sample_emitters(exp, T)``)."""
    e = exp.emitters
    structure = structure or build_structure(exp, generator)
    photons = photon_distribution(exp)
    w, h = field_nm(exp)
    mean_active = (e.density_per_um2 or 0.0) * w * h * 1e-6
    if e.blinking is not None:
        stream = emission.BlinkingStream(structure, mean_active, e.blinking.mean_on_frames,
                                         e.blinking.duty_cycle, photons, generator)
    else:
        stream = emission.IndependentStream(structure, photons, mean_active,
                                            tuple(e.n_per_frame) if e.n_per_frame else None,
                                            generator)
    mix = species_mix(exp)
    return stream if mix is None else emission.SpeciesStream(stream, mix, generator)


def species_mix(exp: Experiment) -> emission.SpeciesMix | None:
    """The experiment's species (fractions and photon laws), or None (single colour)."""
    sp = exp.emitters.species
    if not sp:
        return None

    def law(p):
        return None if p is None else emission.PhotonDistribution(p.distribution, p.lo, p.hi,
                                                                  p.mean, p.std)

    return emission.SpeciesMix(tuple(s.fraction for s in sp), tuple(law(s.photons) for s in sp))


def build_background(exp: Experiment):
    b = exp.background
    if b.kind == "nonuniform":
        return SmoothBackground(tuple(b.photons_per_px),
                                b.length_scale_nm / exp.optics.pixel_size_nm)
    return ConstantBackground(tuple(b.photons_per_px))


def build_simulator(exp: Experiment) -> Simulator:
    return Simulator(build_psf(exp), build_camera(exp), build_background(exp),
                     (exp.frame.height_px, exp.frame.width_px),
                     exp.emitters.blur_sigma_nm / exp.optics.pixel_size_nm)


def build_method(exp: Experiment):
    """The registered method that ``training.model`` names."""
    from deepsmlm import methods

    return methods.get(exp.training.model)


def training_emitters(exp: Experiment):
    """draw(n, generator) → the emitters of n training frames of the experiment's size:
    counts from ``training.n_per_patch_range`` (per patch, scaled to the margin) or
    ``training.density_range_per_um2`` when set (each frame then on a random structure of its
    own), else the experiment's own emitters."""
    t = exp.training
    side = exp.frame.width_px
    patch_px = t.patch_px
    pixel_nm = exp.optics.pixel_size_nm

    def draw(n: int, generator: torch.Generator) -> EmitterSet:
        if t.n_per_patch_range is None and t.density_range_per_um2 is None:
            return sample_emitters(exp, n, generator)
        if t.n_per_patch_range is not None:
            lo, hi = t.n_per_patch_range
            per_patch = torch.randint(lo, hi + 1, (n,), generator=generator).float()
            counts = torch.poisson(per_patch * (side / patch_px) ** 2,
                                   generator=generator).long()
        else:
            side_um = side * pixel_nm / 1000
            lo, hi = t.density_range_per_um2
            dens = lo + (hi - lo) * torch.rand(n, generator=generator)
            counts = torch.poisson(dens * side_um ** 2, generator=generator).long()
        if exp.emitters.structure in RANDOM_STRUCTURES:
            # each sample on a structure of its own (one random set of filaments per batch
            # would give all its samples, and the validation patches of a batch, one geometry)
            em = emission.emit_on_own_structures(lambda: build_structure(exp, generator),
                                                 counts, photon_distribution(exp), generator)
        else:  # a structure that is not drawn at random: one for all (the same draws)
            em = emission.emit_independent(build_structure(exp, generator), n, counts,
                                           photon_distribution(exp), generator)
        mix = species_mix(exp)
        return em if mix is None else mix.assign(em, generator)

    return draw


def _photons_max(p) -> float:
    """The largest photons a distribution of the experiment file draws (about)."""
    return {"uniform": p.hi, "constant": p.mean, "exponential": 4.0 * p.mean,
            "lognormal": p.mean + 4.0 * p.std}[p.distribution]


def build_scene(exp: Experiment):
    """What a method may know of the experiment (``methods.base.Scene``)."""
    from deepsmlm.methods.base import Scene

    species = exp.emitters.species or []
    photons_max = max([_photons_max(exp.emitters.photons)]
                      + [_photons_max(s.photons) for s in species if s.photons is not None])
    return Scene(exp.optics.pixel_size_nm, tuple(exp.emitters.z_range_nm), float(photons_max),
                 float(exp.background.photons_per_px[1]), tuple(s.name for s in species),
                 tuple(s.wavelength_nm for s in species))


def build_patch_sampler(exp: Experiment, differentiable: bool = False):
    """Training patches of ``training.patch_px``² pixels cut from simulated frames with
    ``training.margin_px`` around them, with the method's targets."""
    from deepsmlm.data.context import stay_probability
    from deepsmlm.data.datasets import PatchSampler

    t = exp.training
    side = t.patch_px + 2 * t.margin_px
    big = exp.model_copy(deep=True)
    big.frame = FrameConfig(height_px=side, width_px=side)
    encode = build_method(exp).encoder(t, build_scene(exp))
    simulator = build_simulator(big)
    blinking = exp.emitters.blinking
    return PatchSampler(simulator, training_emitters(big), encode, t.patch_px, t.margin_px,
                        exp.optics.pixel_size_nm, differentiable,
                        aberration_jitter(exp, simulator.psf), context_frames(exp),
                        stay_probability(None if blinking is None else blinking.mean_on_frames))


def context_frames(exp: Experiment) -> int:
    """Neighbouring frames on each side the method reads with each frame (0: none)."""
    return int(getattr(exp.training, "context_frames", 0))


def aberration_jitter(exp: Experiment, psf):
    """perturb(generator): the PSF's aberrations set to the experiment's plus random Noll
    5–15 modes: independent Gaussian coefficients whose total RMS is, on average,
    ``training.aberration_jitter_rad`` — or, for a range [lo, hi], a scale drawn uniformly
    in it for each sample (None when 0)."""
    rms = exp.training.aberration_jitter_rad
    lo, hi = (rms, rms) if isinstance(rms, (int, float)) else rms
    if hi == 0:
        return None
    if not (isinstance(psf, PupilPSF) or getattr(psf, "pupil_based", False)):
        raise UserError("training.aberration_jitter_rad needs optics.psf: pupil or vectorial")
    grid = pupil_grid(exp.optics)
    modes = torch.stack([masks.zernike_mask(grid, {j: 1.0}) for j in range(5, 16)])
    base = psf.aberration_phase.clone()

    def perturb(generator: torch.Generator) -> None:
        scale = lo if lo == hi else lo + (hi - lo) * float(torch.rand(1, generator=generator))
        c = torch.randn(len(modes), generator=generator) * (scale / math.sqrt(len(modes)))
        psf.aberration_phase = base + torch.einsum("k,kij->ij", c, modes)

    return perturb


def crlb_operating_point(exp: Experiment) -> tuple[float, float]:
    """Photons and background per pixel of the CRLB objective: the design section's, or the
    middle of the experiment's ranges."""
    d, e, b = exp.design, exp.emitters.photons, exp.background.photons_per_px
    photons = d.crlb_photons if d.crlb_photons is not None else (
        0.5 * (e.lo + e.hi) if e.distribution == "uniform" else e.mean)
    background = d.crlb_background_per_px if d.crlb_background_per_px is not None \
        else 0.5 * (b[0] + b[1])
    return float(photons), float(background)


def calibrated_crop_px(exp: Experiment) -> int | None:
    """The square a ``deepsmlm calibrate`` pupil was fitted on (``crop_px`` of the
    calibration.json beside the experiment's mask file), or None for any other PSF."""
    import json

    mask = exp.optics.mask
    if getattr(mask, "kind", None) != "file":
        return None
    cal = Path(mask.path).parent / "calibration.json"
    try:
        crop = json.loads(cal.read_text(encoding="utf-8")).get("crop_px")
    except (OSError, ValueError, AttributeError):
        return None
    return int(crop) if isinstance(crop, int) and crop >= 3 else None


def build_refiner(exp: Experiment, camera: Camera, fit_z: bool, fits_photons: bool = False,
                  roi_px: int | None = None):
    """``refine.Refiner`` through the experiment's PSF, emitter blur and z range (± 10 %);
    ``camera``: the movie's; ``roi_px`` None: the calibration's crop (``calibrated_crop_px``)
    or, for any other PSF, the PSF's patch. A method that reports no z (``fit_z`` False) on
    an experiment with a depth range has z fitted as a nuisance."""
    from deepsmlm.refine import Refiner

    lo, hi = exp.emitters.z_range_nm
    margin = 0.1 * (hi - lo)
    return Refiner(build_psf(exp).eval(), camera,
                   exp.emitters.blur_sigma_nm / exp.optics.pixel_size_nm, fit_z,
                   (lo - margin, hi + margin), nuisance_z=not fit_z and hi > lo,
                   fits_photons=fits_photons, roi_px=roi_px or calibrated_crop_px(exp))
