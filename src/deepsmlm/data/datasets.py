"""Training data simulated on the fly from the experiment (no dataset on disk).

A batch is a set of small frames (``patch_px``² camera pixels) cut from slightly larger
simulated frames (``margin_px`` on each side, so light of emitters just outside enters the
patch as it does in a real frame), with the spike targets of the emitters inside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deepsmlm.camera import Camera
from deepsmlm.config import Experiment, experiment_from_dict
from deepsmlm.data.targets import spike_image, voxel_grid
from deepsmlm.emitters import EmitterSet


@dataclass
class Normalizer:
    """Camera ADU → network input, independent of the brightest emitter in a frame.

    ``photons``: x = (photons − mean)/std with photons from the camera model and a fixed
    (mean, std) measured once on simulated training frames.
    ``per-frame``: the published normalisation — each frame scaled to [0, 1] by its own
    min and max, then (x − mean)/std with fixed (mean, std).
    """

    kind: str
    mean: float
    std: float
    camera: Camera

    def __call__(self, adu: torch.Tensor) -> torch.Tensor:
        x = adu.float()
        if self.kind == "per-frame":
            lo = x.amin(dim=(-2, -1), keepdim=True)
            hi = x.amax(dim=(-2, -1), keepdim=True)
            x = (x - lo) / (hi - lo).clamp_min(1e-6)
        else:
            x = self.camera.to_photons(x)
        return ((x - self.mean) / self.std).unsqueeze(-3)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "mean": self.mean, "std": self.std,
                "camera": self.camera.as_dict()}

    @classmethod
    def from_dict(cls, d: dict, camera: Camera | None = None) -> Normalizer:
        return cls(d["kind"], float(d["mean"]), float(d["std"]), camera or Camera(**d["camera"]))

    @classmethod
    def fit(cls, kind: str, camera: Camera, frames_adu: torch.Tensor) -> Normalizer:
        """(mean, std) of frames prepared the same way (photons or [0, 1] per frame)."""
        probe = cls(kind, 0.0, 1.0, camera)(frames_adu)
        return cls(kind, float(probe.mean()), float(probe.std().clamp_min(1e-6)), camera)


@dataclass
class Batch:
    inputs_adu: torch.Tensor  # (B, P, P)
    spikes: torch.Tensor  # (B, 1, U·P, U·P) spikes, or (B, D, U·P, U·P) occupancy (3D)
    emitters: EmitterSet  # positions in the patch frame (nm), frames 0..B−1

    def __len__(self) -> int:
        return len(self.inputs_adu)


class PatchSampler:
    """Simulates training patches from an experiment.

    ``differentiable``: frames rendered with the camera's Gaussian noise model (no
    rounding), so gradients reach the PSF's parameters (mask design).
    """

    def __init__(self, exp: Experiment, differentiable: bool = False):
        from deepsmlm.build import build_simulator

        t = exp.training
        self.exp = exp
        self.patch_px, self.margin_px, self.upsampling = t.patch_px, t.margin_px, t.upsampling
        big = exp.to_dict()
        side = t.patch_px + 2 * t.margin_px
        big["frame"] = {"height_px": side, "width_px": side}
        self.big = experiment_from_dict(big)
        self.simulator = build_simulator(self.big)
        self.pixel_nm = exp.optics.pixel_size_nm
        self.differentiable = differentiable

    def __call__(self, n: int, generator: torch.Generator) -> Batch:
        from deepsmlm.build import build_structure, photon_distribution, sample_emitters
        from deepsmlm.simulation import emission

        t = self.exp.training
        side = self.patch_px + 2 * self.margin_px
        if t.density_range_per_um2 is not None or t.n_per_patch_range is not None:
            if t.n_per_patch_range is not None:  # counts per patch, scaled to the margin
                lo, hi = t.n_per_patch_range
                per_patch = torch.randint(lo, hi + 1, (n,), generator=generator).float()
                counts = torch.poisson(per_patch * (side / self.patch_px) ** 2,
                                       generator=generator).long()
            else:
                side_um = side * self.pixel_nm / 1000
                lo, hi = t.density_range_per_um2
                dens = lo + (hi - lo) * torch.rand(n, generator=generator)
                counts = torch.poisson(dens * side_um ** 2, generator=generator).long()
            em = emission.emit_independent(build_structure(self.big, generator), n, counts,
                                           photon_distribution(self.big), generator)
        else:
            em = sample_emitters(self.big, n, generator)
        if self.differentiable:  # Gaussian reparameterisation of the camera noise
            signal, bg = self.simulator.expected_photons(em, n, generator)
            adu = self.simulator.camera.sample_differentiable(signal + bg, generator)
        else:
            adu = self.simulator(em, n, generator)
        m, p = self.margin_px, self.patch_px
        crop = adu[:, m:m + p, m:m + p]
        shift = torch.tensor([m * self.pixel_nm, m * self.pixel_nm, 0.0])
        xyz = em.xyz_nm - shift
        inside = ((xyz[:, :2] >= 0) & (xyz[:, :2] < p * self.pixel_nm)).all(1)
        em = EmitterSet(xyz[inside], em.photons[inside], em.frame[inside], em.id[inside])
        u = self.upsampling
        if t.model == "deepstorm3d":
            target = voxel_grid(em.xyz_nm, em.frame, (n, t.depth_planes, p * u, p * u),
                                self.pixel_nm / u, tuple(self.exp.emitters.z_range_nm),
                                trilinear=t.target_encoding == "trilinear")
        else:
            target = spike_image(em.xyz_nm[:, :2], em.frame, (n, p * u, p * u),
                                 self.pixel_nm / u)
        return Batch(crop, target, em)


def fixed_batches(sampler: PatchSampler, n_frames: int, batch_size: int, seed: int
                  ) -> list[Batch]:
    """A validation set that is the same for the same seed."""
    gen = torch.Generator().manual_seed(seed)
    return [sampler(min(batch_size, n_frames - s), gen) for s in range(0, n_frames, batch_size)]


def batches_from_stack(frames_adu: np.ndarray, truth: EmitterSet, pixel_nm: float,
                       patch_px: int, upsampling: int, n_patches: int,
                       generator: torch.Generator) -> Batch:
    """Random patches of a user's simulated stack with its ground truth (the original
    Deep-STORM workflow: a ThunderSTORM stack + CSV)."""
    t_frames, h, w = frames_adu.shape
    if h < patch_px or w < patch_px:
        raise ValueError(f"frames {h}×{w} are smaller than the patch {patch_px}")
    ti = torch.randint(t_frames, (n_patches,), generator=generator)
    r0 = torch.randint(h - patch_px + 1, (n_patches,), generator=generator)
    c0 = torch.randint(w - patch_px + 1, (n_patches,), generator=generator)
    crops, xyz, frames = [], [], []
    for k in range(n_patches):
        t, r, c = int(ti[k]), int(r0[k]), int(c0[k])
        crops.append(torch.from_numpy(np.asarray(frames_adu[t, r:r + patch_px, c:c + patch_px],
                                                 dtype=np.float32)))
        sel = truth.frame == t
        p = truth.xyz_nm[sel] - torch.tensor([c * pixel_nm, r * pixel_nm, 0.0])
        ok = ((p[:, :2] >= 0) & (p[:, :2] < patch_px * pixel_nm)).all(1)
        xyz.append(p[ok])
        frames.append(torch.full((int(ok.sum()),), k, dtype=torch.long))
    xyz_t, fr = torch.cat(xyz), torch.cat(frames)
    em = EmitterSet(xyz_t, torch.ones(len(fr)), fr)
    u = upsampling
    spikes = spike_image(xyz_t[:, :2], fr, (n_patches, patch_px * u, patch_px * u), pixel_nm / u)
    return Batch(torch.stack(crops), spikes, em)
