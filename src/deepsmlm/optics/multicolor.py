"""Image formation at several emission wavelengths (multicolor SMLM with one grayscale
camera; Hershko et al., Opt. Express 27, 6158 (2019)).

Each species (dye) emits at one wavelength λ_k (the peak of its spectrum: one wavelength
per species, a stated simplification). Per species the PSF is the experiment's PSF model
with λ_k in every wavelength-dependent term:

- the pupil cut-off NA/λ_k: the pupil grid spans 2·NA_eff/λ_k, so the same n_px samples
  cover the same *physical* back-focal-plane disc (radius f·NA, independent of λ) at every
  wavelength — a mask pixel sits on the same pupil sample for every species;
- the defocus and index-mismatch phases kz_n(k)·z with the wavelength λ_k;
- a phase mask given at the design wavelength λ_d (``optics.wavelength_nm``) acts as a thin
  element of height h: φ_k = 2π·h·(n(λ_k) − 1)/λ_k, so φ_k = φ_d · (λ_d/λ_k) ·
  (n(λ_k) − 1)/(n(λ_d) − 1) (``mask_phase_scale``; n constant without dispersion, the
  Sellmeier index of fused silica with ``dispersion="fused-silica"``). An SLM's phase is
  set for λ_d and, neglecting the liquid crystal's own dispersion, follows the same law
  with n constant;
- the objective's aberrations are optical path differences: φ_k = φ_d · λ_d/λ_k.

``MulticolorPSF`` holds one PSF per species and renders each emitter with its species'
PSF (batched per species); all share the mask, which stays one differentiable phase map at
λ_d (``set_mask_source`` / ``set_mask_phase`` as for ``PupilPSF``). Photons are normalised
per emitter over the infinite plane at every wavelength.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from deepsmlm.optics.psf import PSF, PupilPSF


def fused_silica_index(wavelength_nm: float) -> float:
    """Refractive index of fused silica (Malitson, JOSA 55, 1205 (1965), Sellmeier, λ in µm)."""
    lam2 = (wavelength_nm / 1000.0) ** 2
    terms = ((0.6961663, 0.0684043), (0.4079426, 0.1162414), (0.8974794, 9.896161))
    return math.sqrt(1.0 + sum(b * lam2 / (lam2 - c * c) for b, c in terms))


def mask_phase_scale(wavelength_nm: float, design_nm: float, dispersion: str = "none") -> float:
    """φ(λ)/φ(λ_design) of a thin phase element: λ_d/λ × (n(λ) − 1)/(n(λ_d) − 1)."""
    scale = design_nm / wavelength_nm
    if dispersion == "fused-silica":
        scale *= (fused_silica_index(wavelength_nm) - 1.0) / (fused_silica_index(design_nm) - 1.0)
    elif dispersion != "none":
        raise ValueError(f"unknown mask dispersion {dispersion!r}; allowed: none, fused-silica")
    return scale


class ScaledPhase(nn.Module):
    """A phase source seen at another wavelength: ``source() × scale``."""

    def __init__(self, source: nn.Module, scale: float):
        super().__init__()
        self.source, self.scale = source, float(scale)

    def forward(self) -> torch.Tensor:
        return self.source() * self.scale


class FixedPhase(nn.Module):
    """A phase map as a module: a buffer, or a parameter when ``learnable``."""

    def __init__(self, phase: torch.Tensor, learnable: bool = False):
        super().__init__()
        phase = phase.detach().float().clone()
        if learnable:
            self.phase = nn.Parameter(phase)
        else:
            self.register_buffer("phase", phase, persistent=False)

    def forward(self) -> torch.Tensor:
        return self.phase


class MulticolorPSF(PSF):
    """One PSF per species; ``patches(xyz, photons, species)`` renders emitter n with the
    PSF of ``species[n]``. ``mask_scales[k]`` is species k's ``mask_phase_scale`` and
    ``aberration_scales[k]`` its λ_d/λ_k (pupil models only)."""

    takes_species = True

    def __init__(self, psfs: list[PSF], wavelengths_nm: list[float],
                 mask_scales: list[float] | None = None,
                 aberration_scales: list[float] | None = None):
        super().__init__()
        if not psfs or len(psfs) != len(wavelengths_nm):
            raise ValueError("one PSF per species wavelength")
        sizes = {(p.patch_px, p.pixel_size_nm) for p in psfs}
        if len(sizes) != 1:
            raise ValueError(f"the species' PSFs need one patch size and pixel, got {sizes}")
        self.psfs = nn.ModuleList(psfs)
        self.wavelengths_nm = [float(w) for w in wavelengths_nm]
        self.patch_px, self.pixel_size_nm = next(iter(sizes))
        self.pupil_based = all(isinstance(p, PupilPSF) for p in psfs)
        self.mask_scales = list(mask_scales or [1.0] * len(psfs))
        self.aberration_scales = list(aberration_scales or [1.0] * len(psfs))
        self.mask_source: nn.Module | None = None
        if self.pupil_based:  # the design-wavelength mask, shared by every species
            base = psfs[0].current_mask_phase() / self.mask_scales[0]
            self._aberration = psfs[0].aberration_phase.detach() / self.aberration_scales[0]
            self.set_mask_source(FixedPhase(base))

    @property
    def n_species(self) -> int:
        return len(self.psfs)

    def _need_pupil(self, what: str) -> None:
        if not self.pupil_based:
            raise ValueError(f"{what} needs a pupil PSF (optics.psf: pupil or vectorial)")

    # ---------------------------------------------------------------- the shared mask
    def set_mask_source(self, source: nn.Module | None) -> None:
        """Every species renders with ``source()`` [rad at λ_design] × its mask scale."""
        self._need_pupil("a phase mask")
        self.mask_source = source
        for psf, s in zip(self.psfs, self.mask_scales, strict=True):
            psf.set_mask_source(None if source is None else ScaledPhase(source, s))

    def set_mask_phase(self, phase: torch.Tensor, learnable: bool = False) -> None:
        """The mask phase [rad] at the design wavelength, (n_px, n_px)."""
        device = self.psfs[0].aperture.device
        self.set_mask_source(FixedPhase(phase.to(device), learnable))

    def current_mask_phase(self) -> torch.Tensor:
        """The mask phase [rad] at the design wavelength."""
        self._need_pupil("a phase mask")
        return self.mask_source()

    @property
    def aperture(self) -> torch.Tensor:
        """The pupil's aperture (the same samples at every wavelength)."""
        self._need_pupil("an aperture")
        return self.psfs[0].aperture

    @property
    def grid(self):
        """The design wavelength's pupil grid is not a child's; the first species' grid
        (the same n_px and normalised radius at every wavelength)."""
        self._need_pupil("a pupil grid")
        return self.psfs[0].grid

    @property
    def aberration_phase(self) -> torch.Tensor:
        """The objective's aberrations [rad at λ_design]; set to change every species'."""
        self._need_pupil("aberrations")
        return self._aberration

    @aberration_phase.setter
    def aberration_phase(self, phase: torch.Tensor) -> None:
        self._need_pupil("aberrations")
        self._aberration = phase
        for psf, s in zip(self.psfs, self.aberration_scales, strict=True):
            psf.aberration_phase = phase * s

    # ---------------------------------------------------------------- rendering
    def patches(self, xyz_nm: torch.Tensor, photons: torch.Tensor,
                species: torch.Tensor | None = None):
        if species is None:
            raise ValueError("a multicolor PSF needs each emitter's species")
        species = species.to(xyz_nm.device).long()
        if len(species) and (int(species.min()) < 0 or int(species.max()) >= self.n_species):
            raise ValueError(f"species index outside 0..{self.n_species - 1}")
        p = self.patch_px
        values = xyz_nm.new_zeros(len(photons), p, p)
        origin = torch.zeros(len(photons), 2, dtype=torch.long, device=xyz_nm.device)
        for k, psf in enumerate(self.psfs):
            idx = (species == k).nonzero().squeeze(1)
            if len(idx) == 0:
                continue
            v, o = psf.patches(xyz_nm[idx], photons[idx])
            values = values.index_copy(0, idx, v.to(values.dtype))
            origin[idx] = o
        return values, origin

    def render(self, xyz_nm, photons, frame_idx, shape, chunk: int = 2048, species=None):
        if species is None:
            raise ValueError("a multicolor PSF needs each emitter's species (emitters.species)")
        return super().render(xyz_nm, photons, frame_idx, shape, chunk, species)

    def forward(self, xyz_nm, photons, species=None):
        return self.patches(xyz_nm, photons, species)[0]
