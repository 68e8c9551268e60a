"""Refine a network's localizations by maximum likelihood through the experiment's PSF.

The network finds the emitters and gives a first estimate; ``localize --refine`` then fits,
frame by frame, every localization's x, y (z in 3D), photons and a smooth background to the
camera frames, through the image-formation model the network was trained on (the model
folder's ``experiment.yaml``: PSF, mask, pupil amplitude, emitter blur, camera):

    μ(t, pixel) = blur(Σ_i N_i · h(x_i, y_i, z_i))(pixel) + b_t(pixel)    photons at the sample

b_t is bilinear between values on a grid of ``background_px`` spacing (8 camera pixels;
0: one constant per frame): a constant background where the sample's is not flat pulls z
and the PSF's spread (measured on the 3D benchmark frames, 50–150 photons/px varying over
2 µm: from the true positions, half the fits ran off with a constant, 3 % with the grid).

Camera noise is a shifted Poisson variable with the camera's variance in photon units
(``evaluation.crlb.pixel_variance``: v(μ) = a·μ + r, a = F/QE, r = (F·c + (σ_read/G)²)/QE²):
    y = d/a + r/a²  ~  Poisson(μ/a + r/a²)
has that mean and variance (Huang et al., Nat. Methods 2013, for sCMOS read noise; F = 2 for an
EMCCD). All localizations of a frame are fitted together, so overlapping PSFs share their light,
over the pixels within ``roi_px`` of one (default: the crop the pupil was fitted on when the
PSF comes from ``deepsmlm calibrate``, else the PSF's patch — the region the PSF model is
known to hold for). Adam on (x/px, y/px, z/100 nm,
log N, background) with a cosine step size; z stays inside the experiment's range (± 10 %).

Uncertainties are the Cramér–Rao bound at the fitted parameters, emitters whose patches
overlap bounded together with the frame's background (blur included):
``uncertainty_x/y/z [nm]`` in the tables.
A fit that runs off — farther than ``max_shift_px`` laterally or ``max_shift_z_nm`` in z from
the network's estimate, or not finite — keeps the network's estimate and σ (NaN for a
method without σ); the count is reported.

A 2D method reports no depth, but where its experiment spreads the emitters over a depth
range (``emitters.z_range_nm``, e.g. the SMLM challenge's ±750 nm) a defocused spot is not
the in-focus PSF: z is then fitted as a nuisance (``nuisance_z``: the spot's defocus, not
written), started off the focus (a PSF symmetric about the focus has no z gradient there),
and the lateral bound is the one with z unknown. With no depth range a 2D method's z is not
fitted. Where
the table's value column holds photons (fastloc), it gets the fitted photons; a confidence
(Deep-STORM, DeepSTORM3D) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from deepsmlm.camera import Camera
from deepsmlm.emitters import EmitterSet
from deepsmlm.evaluation.crlb import (
    bound_from_fisher,
    fisher_information,
    model_and_jacobian,
    pixel_variance,
)
from deepsmlm.optics.psf import PSF, gather_patches, patch_origin, place_patches
from deepsmlm.simulation.simulator import gaussian_blur

Z_UNIT_NM = 100.0  # z is optimised in units of 100 nm, x and y in camera pixels


def shifted_poisson(camera: Camera) -> tuple[float, float]:
    """(a, r) of the camera's variance v(μ) = a·μ + r in photon units
    (``evaluation.crlb.pixel_variance``, linear in μ)."""
    r, v1 = pixel_variance(torch.tensor([0.0, 1.0], dtype=torch.float64), camera).tolist()
    return v1 - r, r


def shifted_deviance(mu: torch.Tensor, data: torch.Tensor, a: float, r: float,
                     weight: torch.Tensor | None = None) -> torch.Tensor:
    """Summed Poisson deviance of the shifted variables y = d/a + r/a², λ = μ/a + r/a²
    (over the pixels where ``weight`` is set)."""
    off = r / a ** 2
    lam = (mu / a + off).clamp_min(1e-9)
    y = (data / a + off).clamp_min(0.0)
    term = lam - y + torch.where(y > 0, y * torch.log(y.clamp_min(1e-12) / lam),
                                 torch.zeros_like(y))
    return 2.0 * (term.sum() if weight is None else (term * weight).sum())


def roi_mask(xyz_nm: torch.Tensor, frame_idx: torch.Tensor, pixel_size_nm: float,
             roi_px: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """The pixels (T, H, W) that the fit sees: ``roi_px`` × ``roi_px`` about each
    localization, unioned."""
    ones = torch.ones(len(xyz_nm), roi_px, roi_px)
    origin = patch_origin(xyz_nm[:, :2], pixel_size_nm, roi_px)
    return place_patches(ones, origin, frame_idx, shape) > 0


def _render(psf: PSF, blur_px: float, xyz_nm, photons, frame_idx, shape, species):
    return gaussian_blur(psf.render(xyz_nm, photons, frame_idx, shape, species=species), blur_px)


def initial_photons(psf: PSF, blur_px: float, frames_ph: torch.Tensor, xyz_nm: torch.Tensor,
                    frame_idx: torch.Tensor, background: torch.Tensor,
                    species: torch.Tensor | None) -> torch.Tensor:
    """Each emitter's photons by least squares on its own patch, neighbours ignored
    (the network's value column is a confidence, not photons)."""
    extra = (species,) if psf.takes_species else ()
    with torch.no_grad():
        h, origin = psf.patches(xyz_nm, torch.ones(len(xyz_nm)), *extra)
        h = gaussian_blur(h, blur_px)
        d, inside = gather_patches(frames_ph, origin, frame_idx, h.shape[-1])
        d = (d - background[frame_idx][:, None, None]) * inside
        hh = (h * h * inside).sum((1, 2)).clamp_min(1e-12)
        return ((h * d).sum((1, 2)) / hh).clamp_min(10.0)


def fit_frames(psf: PSF, blur_px: float, camera: Camera, frames_ph: torch.Tensor,
               xyz_nm: torch.Tensor, frame_idx: torch.Tensor, fit_z: bool,
               z_bounds_nm: tuple[float, float], steps: int = 150,
               species: torch.Tensor | None = None, lr: float = 0.05,
               roi_px: int | None = None, background_grid: int | tuple[int, int] = 1
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Maximum-likelihood x, y, z [nm] (N, 3), photons (N,) and background map (T, H, W)
    of the emitters ``xyz_nm`` in frames ``frame_idx`` of ``frames_ph`` (T, H, W, photons),
    over the pixels within ``roi_px`` × ``roi_px`` of a localization (None: whole frames);
    the background is smooth, bilinear between ``background_grid`` (rows, columns; an int:
    square) values per frame (1: a constant). z is fitted only with ``fit_z``."""
    px = psf.pixel_size_nm
    a, r = shifted_poisson(camera)
    weight = None
    if roi_px is not None:
        weight = roi_mask(xyz_nm, frame_idx, px, roi_px, frames_ph.shape).float()
        seen = weight.flatten(1).sum(1) > 0
        masked = torch.where(weight > 0, frames_ph, torch.full_like(frames_ph, float("nan")))
        bg0 = masked.flatten(1).nanmedian(1).values
        bg0 = torch.where(seen, bg0, torch.zeros_like(bg0))
    else:
        bg0 = frames_ph.flatten(1).median(1).values
    bg0 = bg0.clamp_min(1e-3)
    n0 = initial_photons(psf, blur_px, frames_ph, xyz_nm, frame_idx, bg0, species)
    xy = (xyz_nm[:, :2] / px).clone().requires_grad_(True)
    z = (xyz_nm[:, 2] / Z_UNIT_NM).clone().requires_grad_(fit_z)
    log_n = torch.log(n0).requires_grad_(True)
    gh, gw = ((background_grid, background_grid) if isinstance(background_grid, int)
              else background_grid)
    # log of the background on a gh × gw grid per frame: Adam's steps are then relative, as
    # for the photons (a background of 100 photons/px moves as fast as one of 1)
    bg_raw = torch.log(bg0)[:, None, None].repeat(1, gh, gw).requires_grad_(True)

    def background():
        b = torch.exp(bg_raw)
        if (gh, gw) == (1, 1):
            return b.expand(-1, *frames_ph.shape[-2:])
        return torch.nn.functional.interpolate(b[:, None], size=frames_ph.shape[-2:],
                                               mode="bilinear", align_corners=True)[:, 0]

    params = [xy, log_n, bg_raw] + ([z] if fit_z else [])
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=0.1 * lr)
    lo, hi = (v / Z_UNIT_NM for v in z_bounds_nm)
    for _ in range(steps):
        opt.zero_grad()
        xyz = torch.cat([xy * px, (z * Z_UNIT_NM)[:, None]], 1)
        mu = (_render(psf, blur_px, xyz, torch.exp(log_n), frame_idx, frames_ph.shape, species)
              + background())
        shifted_deviance(mu, frames_ph, a, r, weight).backward()
        opt.step()
        sched.step()
        if fit_z:
            with torch.no_grad():
                z.clamp_(lo, hi)
    with torch.no_grad():
        xyz = torch.cat([xy * px, (z * Z_UNIT_NM)[:, None]], 1)
        return xyz, torch.exp(log_n), background().clone()


def patch_jacobians(psf: PSF, blur_px: float, xyz_nm: torch.Tensor, photons: torch.Tensor,
                    species: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each emitter's blurred signal (M, P, P), its derivatives by x, y, z, N (M, P, P, 4)
    and its patch origin (M, 2)."""
    if psf.takes_species:  # one wavelength's PSF at a time
        m, p = len(xyz_nm), psf.patch_px
        sig, jac = torch.zeros(m, p, p), torch.zeros(m, p, p, 4)
        for s in species.unique().tolist():
            k = species == s
            sig[k], jac[k], _ = patch_jacobians(psf.psfs[s], blur_px, xyz_nm[k], photons[k])
        return sig, jac, patch_origin(xyz_nm[:, :2], psf.pixel_size_nm, p)
    mu, jac = model_and_jacobian(psf, xyz_nm, photons, torch.zeros_like(photons))
    sig = gaussian_blur(mu, blur_px)
    jac = torch.stack([gaussian_blur(jac[..., q], blur_px) for q in range(4)], -1)
    return sig, jac, patch_origin(xyz_nm[:, :2], psf.pixel_size_nm, psf.patch_px)


def overlap_groups(origin: torch.Tensor, frame_idx: torch.Tensor, patch_px: int) -> list:
    """Index tensors of the emitters whose patches overlap, directly or through others,
    in the same frame (union–find)."""
    parent = list(range(len(origin)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for t in frame_idx.unique().tolist():
        k = (frame_idx == t).nonzero()[:, 0]
        o = origin[k]
        near = ((o[:, None] - o[None]).abs() < patch_px).all(-1)
        for a, b in near.triu(1).nonzero().tolist():
            parent[root(int(k[a]))] = root(int(k[b]))
    groups: dict[int, list[int]] = {}
    for i in range(len(origin)):
        groups.setdefault(root(i), []).append(i)
    return [torch.tensor(g) for g in groups.values()]


def crlb_nm(psf: PSF, blur_px: float, camera: Camera, xyz_nm: torch.Tensor,
            photons: torch.Tensor, frame_idx: torch.Tensor, background: torch.Tensor,
            frame_shape: tuple[int, int], fit_z: bool, species: torch.Tensor | None = None,
            roi_px: int | None = None) -> torch.Tensor:
    """σ of x, y, z [nm] (N, 3) at the given parameters (NaN for z when it is not fitted).

    The bound of the fitted model: the emitters whose patches overlap are bounded together
    (their parameters and the local background level, over the pixels their patches
    cover), so a neighbour's light counts as it does in the fit; blur included; over the
    pixels the fit sees (``roi_px``, as ``fit_frames``). ``background``: per frame (T,) or
    the fitted map (T, H, W) (the noise it adds is the map's; its shape is taken as known,
    one level free per group)."""
    n = len(xyz_nm)
    out = torch.full((n, 3), float("nan"), dtype=torch.float64)
    if not n:
        return out
    sig, jac, origin = patch_jacobians(psf, blur_px, xyz_nm.float(), photons.float(), species)
    if not fit_z:
        jac = jac[..., [0, 1, 3]]
    q = jac.shape[-1]
    p = sig.shape[-1]
    h, w = frame_shape
    bmap = background if background.ndim == 3 else background[:, None, None].expand(-1, h, w)
    seen = None
    if roi_px is not None:
        seen = roi_mask(xyz_nm, frame_idx, psf.pixel_size_nm, roi_px,
                        (int(frame_idx.max()) + 1, h, w))
    for g in overlap_groups(origin, frame_idx, p):
        top = origin[g].min(0).values.clamp_min(0)
        bottom = (origin[g] + p).max(0).values.clamp(max=torch.tensor([h, w]))
        box = (int(bottom[0] - top[0]), int(bottom[1] - top[1]))
        local = origin[g] - top
        k = len(g)
        cols = place_patches(jac[g].permute(0, 3, 1, 2).reshape(k * q, p, p),
                             local.repeat_interleave(q, 0), torch.arange(k * q), (k * q, *box))
        mu = place_patches(sig[g], local, torch.zeros(k, dtype=torch.long), (1, *box))[0]
        t = int(frame_idx[g[0]])
        mu = mu + bmap[t, top[0]:bottom[0], top[1]:bottom[1]]
        design = torch.cat([cols.reshape(k * q, -1), torch.ones(1, box[0] * box[1])], 0)
        if seen is not None:  # pixels outside the fitted region carry no information
            design = design * seen[t, top[0]:bottom[0], top[1]:bottom[1]].reshape(1, -1)
        info = fisher_information(mu.reshape(1, -1, 1), design.T.reshape(1, -1, 1, k * q + 1),
                                  camera)
        sd = bound_from_fisher(info)[0, :k * q].view(k, q)
        out[g, 0], out[g, 1] = sd[:, 0], sd[:, 1]
        if fit_z:
            out[g, 2] = sd[:, 2]
    return out


def nuisance_start_nm(z_bounds_nm: tuple[float, float]) -> float:
    """Where a fit of z as a nuisance starts: the middle of the range, or, when the range
    straddles the focus, the middle of its upper half (a PSF symmetric about the focus has
    no z gradient at z = 0, so a fit started there would never leave it)."""
    lo, hi = z_bounds_nm
    return 0.5 * hi if lo < 0.0 < hi else 0.5 * (lo + hi)


@dataclass
class Refiner:
    """``localize --refine``: called on each batch of frames after decoding
    (``build.build_refiner`` makes one for a model's experiment)."""

    psf: PSF
    camera: Camera
    blur_px: float
    fit_z: bool
    z_bounds_nm: tuple[float, float]
    steps: int = 150
    max_shift_px: float = 1.5
    max_shift_z_nm: float = 300.0
    nuisance_z: bool = False  # fit z, but keep the network's in the table (a 2D method)
    fits_photons: bool = False  # write the fitted photons (the table's value column is photons)
    roi_px: int | None = None  # the fitted square about each localization (None: the PSF patch)
    background_px: int = 8  # spacing of the smooth background's grid (0: one value per frame)
    counts: dict = field(default_factory=lambda: {"refined": 0, "kept_network": 0})

    @property
    def uncertainty_columns(self) -> int:
        return 3 if self.fit_z else 2

    def __call__(self, frames_adu: torch.Tensor, em: EmitterSet, t0: int) -> EmitterSet:
        """``em``'s localizations (global frame numbers) in ``frames_adu`` (T, H, W), whose
        first frame is ``t0``, refined."""
        if not len(em):
            return em
        frames_ph = self.camera.to_photons(frames_adu.float())  # read noise may go below 0
        idx = (em.frame - t0).long()
        sp = em.species.clamp_min(0) if (self.psf.takes_species and em.species is not None) \
            else None
        start = em.xyz_nm.float()
        fit_z = self.fit_z or self.nuisance_z
        first = start.clone()
        if self.nuisance_z:
            first[:, 2] = nuisance_start_nm(self.z_bounds_nm)
        roi = self.roi_px or self.psf.patch_px
        grid = (tuple(max(1, round(n / self.background_px)) for n in frames_ph.shape[-2:])
                if self.background_px > 0 else 1)
        xyz, photons, bg = fit_frames(self.psf, self.blur_px, self.camera, frames_ph, first,
                                      idx, fit_z, self.z_bounds_nm, self.steps, sp,
                                      roi_px=roi, background_grid=grid)
        shift_xy = torch.linalg.norm(xyz[:, :2] - start[:, :2], dim=1) / self.psf.pixel_size_nm
        ok = (torch.isfinite(xyz).all(1) & torch.isfinite(photons)
              & (shift_xy <= self.max_shift_px))
        if self.fit_z:
            ok &= (xyz[:, 2] - start[:, 2]).abs() <= self.max_shift_z_nm
        sd = torch.full((len(em), 3), float("nan"), dtype=torch.float64)
        if ok.any():
            sd[ok] = crlb_nm(self.psf, self.blur_px, self.camera, xyz[ok], photons[ok],
                             idx[ok], bg, frames_adu.shape[-2:], fit_z,
                             None if sp is None else sp[ok], roi)
        if em.uncertainty_xyz_nm is not None:  # a fit not used: the network's σ stand
            sd[~ok] = em.uncertainty_xyz_nm[~ok].to(sd.dtype)
        if self.nuisance_z:  # the depth was a nuisance: the network's z, no z bound
            xyz[:, 2] = start[:, 2]
            sd[:, 2] = float("nan")
        self.counts["refined"] += int(ok.sum())
        self.counts["kept_network"] += int((~ok).sum())
        out_xyz = torch.where(ok[:, None], xyz, start)
        value = torch.where(ok, photons, em.photons) if self.fits_photons else em.photons
        return EmitterSet(out_xyz, value, em.frame, em.id, sd.float(), em.species,
                          em.species_probability)
