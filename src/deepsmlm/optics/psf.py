"""PSF models: emitters (nm, photons) → expected photons per camera pixel.

Every model renders a small square patch around each emitter (batched over emitters, no
Python loop per emitter) and ``render`` places the patches into frames. Positions follow
DESIGN §3: x along columns, y along rows, origin at the top-left corner of the top-left
pixel, so pixel i spans [i, i+1)·pixel_size_nm. Shapes: N emitters, P patch pixels,
T frames, H×W frame.

Models:
- ``PupilPSF``: scalar Fourier optics, |F{P}|² with F the forward transform, by a matrix
  DFT so that pupil sampling and pixel size are independent; normalised to the emitter's
  photons over the infinite plane.
- ``GaussianPSF`` / ``AstigmaticGaussianPSF``: integrated (erf) Gaussians, exact per pixel.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from deepsmlm.optics.pupil import PupilGrid, defocus_phase_terms


def patch_origin(xy_nm: torch.Tensor, pixel_size_nm: float, patch_px: int) -> torch.Tensor:
    """Top-left pixel (row, col) of each emitter's patch, long (N, 2).

    The emitter's own pixel sits at index P//2 of the patch.
    """
    ij = torch.floor(xy_nm.detach().flip(-1) / pixel_size_nm).long()  # (row, col)
    return ij - patch_px // 2


def patch_pixels(origin: torch.Tensor, frame_idx: torch.Tensor, patch_px: int,
                 shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat index (N, P, P) into frames of ``shape`` (T, H, W) of each patch's pixels, and
    whether each lies inside its frame (outside: the index is T·H·W, one past the end)."""
    n_frames, height, width = shape
    ar = torch.arange(patch_px, device=origin.device)
    rows = origin[:, 0, None] + ar  # (N, P)
    cols = origin[:, 1, None] + ar
    valid = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None]
    flat = (frame_idx.long()[:, None, None] * height + rows[:, :, None]) * width + cols[:, None]
    return torch.where(valid, flat, n_frames * height * width), valid


def place_patches(values: torch.Tensor, origin: torch.Tensor, frame_idx: torch.Tensor,
                  shape: tuple[int, int, int]) -> torch.Tensor:
    """Sum patches (N, P, P) into frames (T, H, W); parts outside the frame are dropped.

    Differentiable with respect to ``values``.
    """
    n, p, _ = values.shape
    size = shape[0] * shape[1] * shape[2]
    if n == 0:
        return values.new_zeros(shape)
    flat, _ = patch_pixels(origin.to(values.device), frame_idx.to(values.device), p, shape)
    out = values.new_zeros(size + 1).index_add(0, flat.reshape(-1), values.reshape(-1))
    return out[:size].view(shape)


def gather_patches(frames: torch.Tensor, origin: torch.Tensor, frame_idx: torch.Tensor,
                   patch_px: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixels (N, P, P) of ``frames`` (T, H, W) under each patch (the adjoint of
    ``place_patches``), and which of them lie inside the frame (outside: 0)."""
    flat, valid = patch_pixels(origin, frame_idx, patch_px, tuple(frames.shape))
    padded = torch.cat([frames.reshape(-1), frames.new_zeros(1)])
    return padded[flat], valid


class PSF(nn.Module):
    """Base class: subclasses implement ``patches``. A PSF that depends on the emitter's
    species (``takes_species``: ``optics.multicolor.MulticolorPSF``) takes it as a third
    argument of ``patches``; the others ignore a species given to ``render``."""

    pixel_size_nm: float
    patch_px: int
    takes_species: bool = False

    def patches(self, xyz_nm: torch.Tensor, photons: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected photons per pixel around each emitter: values (N, P, P), origin (N, 2)."""
        raise NotImplementedError

    def render(self, xyz_nm: torch.Tensor, photons: torch.Tensor, frame_idx: torch.Tensor,
               shape: tuple[int, int, int], chunk: int = 2048,
               species: torch.Tensor | None = None) -> torch.Tensor:
        """Expected photon image (T, H, W) of emitters xyz_nm (N, 3) with photons (N,)
        (and species (N,) for a PSF that ``takes_species``)."""
        if len(photons) == 0:
            return torch.zeros(shape, device=xyz_nm.device)
        out = None
        for s in range(0, len(photons), chunk):
            extra = (species[s:s + chunk],) if self.takes_species else ()
            vals, origin = self.patches(xyz_nm[s:s + chunk], photons[s:s + chunk], *extra)
            part = place_patches(vals, origin, frame_idx[s:s + chunk], shape)
            out = part if out is None else out + part
        return out

    def forward(self, xyz_nm: torch.Tensor, photons: torch.Tensor) -> torch.Tensor:
        return self.patches(xyz_nm, photons)[0]


# ------------------------------------------------------------------ Gaussian models
def integrated_gaussian_patches(xy_nm: torch.Tensor, sigma_x_nm: torch.Tensor,
                                sigma_y_nm: torch.Tensor, photons: torch.Tensor,
                                pixel_size_nm: float, patch_px: int
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel integrals of an elliptical Gaussian of total ``photons``: (N, P, P), (N, 2).

    value[r, c] = photons · ∫_row r ∫_col c N(x; x0, σx²) N(y; y0, σy²) dx dy, by erf.
    """
    origin = patch_origin(xy_nm, pixel_size_nm, patch_px)
    edges = torch.arange(patch_px + 1, device=xy_nm.device, dtype=xy_nm.dtype)
    # pixel edges relative to the emitter, nm: (N, P+1)
    ex = (origin[:, 1, None] + edges) * pixel_size_nm - xy_nm[:, 0, None]
    ey = (origin[:, 0, None] + edges) * pixel_size_nm - xy_nm[:, 1, None]
    cx = torch.erf(ex / (math.sqrt(2.0) * sigma_x_nm[:, None]))
    cy = torch.erf(ey / (math.sqrt(2.0) * sigma_y_nm[:, None]))
    px = 0.5 * (cx[:, 1:] - cx[:, :-1])
    py = 0.5 * (cy[:, 1:] - cy[:, :-1])
    return photons[:, None, None] * py[:, :, None] * px[:, None, :], origin


class GaussianPSF(PSF):
    """Integrated isotropic 2D Gaussian of width ``sigma_nm`` (z ignored)."""

    def __init__(self, sigma_nm: float, pixel_size_nm: float, patch_px: int | None = None):
        super().__init__()
        self.sigma_nm = float(sigma_nm)
        self.pixel_size_nm = float(pixel_size_nm)
        self.patch_px = patch_px or _odd(2 * math.ceil(4 * sigma_nm / pixel_size_nm) + 1)

    def patches(self, xyz_nm, photons):
        sigma = torch.full_like(photons, self.sigma_nm)
        return integrated_gaussian_patches(xyz_nm[:, :2], sigma, sigma, photons,
                                           self.pixel_size_nm, self.patch_px)


class AstigmaticGaussianPSF(PSF):
    """Integrated elliptical Gaussian whose x and y foci sit at focus ± focal_offset.

    σx(z) = σ0·sqrt(1 + ((z − focus − c)/d)²),  σy(z) = σ0·sqrt(1 + ((z − focus + c)/d)²).
    """

    def __init__(self, sigma_nm: float, focal_offset_nm: float, depth_of_focus_nm: float,
                 focus_nm: float, pixel_size_nm: float, patch_px: int | None = None,
                 z_max_abs_nm: float = 1000.0):
        super().__init__()
        self.sigma_nm = float(sigma_nm)
        self.focal_offset_nm = float(focal_offset_nm)
        self.depth_of_focus_nm = float(depth_of_focus_nm)
        self.focus_nm = float(focus_nm)
        self.pixel_size_nm = float(pixel_size_nm)
        widest = self.sigmas(torch.tensor([z_max_abs_nm + focal_offset_nm + focus_nm]))[0]
        self.patch_px = patch_px or _odd(2 * math.ceil(4 * float(widest) / pixel_size_nm) + 1)

    def sigmas(self, z_nm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dz = z_nm - self.focus_nm
        c, d = self.focal_offset_nm, self.depth_of_focus_nm
        sx = self.sigma_nm * torch.sqrt(1 + ((dz - c) / d) ** 2)
        sy = self.sigma_nm * torch.sqrt(1 + ((dz + c) / d) ** 2)
        return sx, sy

    def patches(self, xyz_nm, photons):
        sx, sy = self.sigmas(xyz_nm[:, 2])
        return integrated_gaussian_patches(xyz_nm[:, :2], sx, sy, photons,
                                           self.pixel_size_nm, self.patch_px)


# ------------------------------------------------------------------ pupil model
class PupilPSF(PSF):
    """Scalar pupil PSF (DESIGN §4.1), computed by a matrix DFT on a patch per emitter.

    For emitter n at (x, y, z) and image sample points (X, Y) relative to it:
        E_n(X, Y) = dk² Σ_k P_n(k)·exp(−i2π(kx·X + ky·Y)),  P_n = A·e^{iφ}·e^{i kz_s z − i kz_i f}
        I_n = photons_n·|E_n|² / (dk² Σ_k |P_n(k)|²)        [photons/nm², ∫ I dA = photons]
    The image is the *forward* (centred) Fourier transform of the pupil field, as a lens
    does it and as the DeepSTORM3D code that designed the shipped masks computes it, so a
    mask file renders as it did there (docs/conventions.md, "Fourier sign"). The emitter's
    lateral position enters as the pupil ramp exp(+i2π k·(x, y)), which moves the image to
    +(x, y); a positive x-tilt phase therefore moves the PSF towards +x.
    The pixel value is I averaged over ``oversampling``² sub-pixel points × pixel area.

    ``mask_phase`` [rad] (n_px, n_px) is a tensor attribute; make it an ``nn.Parameter``
    (``set_mask_phase(..., learnable=True)``) to learn it, or hand the PSF a phase model
    (``set_mask_source``: a module whose ``forward()`` gives the phase) to learn its
    parameters instead (``deepsmlm.design.phase_models``).
    """

    def __init__(self, grid: PupilGrid, n_sample: float, n_immersion: float, focus_nm: float,
                 pixel_size_nm: float, patch_px: int, oversampling: int = 1,
                 mask_phase: torch.Tensor | None = None,
                 aberration_phase: torch.Tensor | None = None,
                 pupil_amplitude: torch.Tensor | None = None):
        super().__init__()
        if patch_px * pixel_size_nm > grid.period_nm:
            raise ValueError(
                f"patch of {patch_px} px × {pixel_size_nm} nm exceeds the pupil grid's image "
                f"period {grid.period_nm:.0f} nm; raise optics.pupil_grid_px or lower patch_px")
        self.grid = grid
        self.focus_nm = float(focus_nm)
        self.pixel_size_nm = float(pixel_size_nm)
        self.patch_px = int(patch_px)
        self.oversampling = int(oversampling)
        n = grid.n_px
        kz_s, kz_i = defocus_phase_terms(grid, n_sample, n_immersion)
        self.register_buffer("kz_sample", kz_s, persistent=False)
        self.register_buffer("kz_immersion", kz_i, persistent=False)
        self.register_buffer("aperture", grid.aperture(torch.float32), persistent=False)
        self.register_buffer("k_1d", grid.k_1d(torch.float32), persistent=False)
        self.evanescent = bool((kz_s.imag.abs() * self.aperture).max() > 0)
        # Shared image-plane DFT: samples at sub-pixel centres relative to the emitter's own
        # pixel corner; the in-pixel offset enters as a pupil phase ramp.
        sub = (torch.arange(patch_px * oversampling, dtype=torch.float64) + 0.5) / oversampling
        pos_nm = (sub - patch_px // 2) * pixel_size_nm
        dft = torch.exp(-2j * math.pi * pos_nm[:, None] * grid.k_1d(torch.float64)[None, :])
        self.register_buffer("dft", dft.to(torch.complex64), persistent=False)  # (P·os, n)
        zero = torch.zeros(n, n)
        self.register_buffer("aberration_phase",
                             zero.clone() if aberration_phase is None else aberration_phase.float(),
                             persistent=False)
        # relative transmission inside the aperture (apodisation, a calibrated pupil): 1 = none
        self.register_buffer("pupil_amplitude",
                             torch.ones(n, n) if pupil_amplitude is None
                             else pupil_amplitude.float(), persistent=False)
        self.mask_phase: torch.Tensor
        self.register_buffer("mask_phase", zero.clone(), persistent=False)
        self.mask_source: nn.Module | None = None
        if mask_phase is not None:
            self.set_mask_phase(mask_phase)

    def set_mask_phase(self, phase: torch.Tensor, learnable: bool = False) -> None:
        """Replace the phase mask [rad], shape (n_px, n_px)."""
        phase = phase.detach().to(self.aperture.device, torch.float32).clone()
        if "mask_phase" in self._buffers:
            del self._buffers["mask_phase"]
        elif "mask_phase" in self._parameters:
            del self._parameters["mask_phase"]
        if learnable:
            self.mask_phase = nn.Parameter(phase)
        else:
            self.register_buffer("mask_phase", phase, persistent=False)

    def set_mask_source(self, source: nn.Module | None) -> None:
        """Take the mask phase from ``source()`` (a phase model) instead of ``mask_phase``."""
        self.mask_source = source

    def current_mask_phase(self) -> torch.Tensor:
        """The mask phase [rad] the PSF renders with now, (n_px, n_px)."""
        return self.mask_phase if self.mask_source is None else self.mask_source()

    def pupil(self, z_nm: torch.Tensor, shift_nm: torch.Tensor | None = None,
              mask_phase: torch.Tensor | None = None, amplitude: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pupil fields P_n(k) for depths z_nm (N,): complex64 (N, n_px, n_px), and Σ|P_n|².

        ``shift_nm`` (N, 2) adds the lateral phase ramp exp(+i2π(kx·x + ky·y)), which moves
        the image (a forward transform of the pupil) by +(x, y). ``mask_phase`` and
        ``amplitude`` (n_px, n_px) replace the PSF's own mask and pupil amplitude for this
        call (PSF calibration fits them through here).
        """
        phi = (self.current_mask_phase() if mask_phase is None else mask_phase) \
            + self.aberration_phase
        base = phi - self.kz_immersion.real * self.focus_nm  # (n, n)
        z = z_nm.float()[:, None, None]
        phase = torch.addcmul(base, self.kz_sample.real, z)  # (N, n, n)
        if shift_nm is not None:
            two_pi_k = 2.0 * math.pi * self.k_1d
            phase = phase + (shift_nm[:, 0, None, None].float() * two_pi_k)
            phase = phase + (shift_nm[:, 1, None, None].float() * two_pi_k[:, None])
        rel = self.pupil_amplitude if amplitude is None else amplitude
        if self.evanescent:  # supercritical light decays with depth
            amp = (self.aperture * rel) * torch.exp(-self.kz_sample.imag * z.clamp_min(0.0))
            energy = (amp ** 2).sum(dim=(1, 2))
        else:
            amp = (self.aperture * rel)[None]
            energy = (amp[0] ** 2).sum().expand(phase.shape[0])
        return torch.polar(amp, phase), energy

    def emitter_pupils(self, xyz_nm: torch.Tensor, mask_phase: torch.Tensor | None = None,
                       amplitude: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each emitter's pupil field with its in-pixel offset as a ramp (N, n, n), Σ|P|²
        (N,), and its patch origin (N, 2)."""
        xy_px = xyz_nm[:, :2] / self.pixel_size_nm
        frac_nm = (xy_px - torch.floor(xy_px.detach())) * self.pixel_size_nm  # in-pixel offset
        origin = patch_origin(xyz_nm[:, :2], self.pixel_size_nm, self.patch_px)
        pupil, energy = self.pupil(xyz_nm[:, 2], frac_nm, mask_phase, amplitude)
        return pupil, energy, origin

    def to_pixels(self, intensity: torch.Tensor, photons: torch.Tensor,
                  energy: torch.Tensor) -> torch.Tensor:
        """|E|² at the sub-pixel samples (N, P·os, P·os) → expected photons per pixel
        (N, P, P): averaged over the oversampling, normalised by the pupil energy."""
        os_, p = self.oversampling, self.patch_px
        if os_ > 1:
            intensity = intensity.reshape(-1, p, os_, p, os_).mean(dim=(2, 4))
        scale = photons * (self.grid.dk * self.pixel_size_nm) ** 2 / energy
        return intensity * scale[:, None, None]

    def patches(self, xyz_nm, photons, mask_phase: torch.Tensor | None = None,
                amplitude: torch.Tensor | None = None):
        pupil, energy, origin = self.emitter_pupils(xyz_nm, mask_phase, amplitude)
        n, m = pupil.shape[0], self.grid.n_px
        dft_t = self.dft.t()  # (n_px, P·os), shared by x and y
        # E_n = A · P_n · Aᵀ as two large GEMMs over all emitters
        half = (pupil.reshape(n * m, m) @ dft_t).view(n, m, -1)  # (N, ky, X)
        field = (half.transpose(1, 2).reshape(-1, m) @ dft_t).view(n, -1, dft_t.shape[1])
        intensity = (field.real ** 2 + field.imag ** 2).transpose(1, 2)  # (N, Y, X)
        return self.to_pixels(intensity, photons, energy), origin


def _odd(n: int) -> int:
    return n if n % 2 == 1 else n + 1
