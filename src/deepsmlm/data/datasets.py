"""Training data simulated on the fly (no dataset on disk), or cut from a user's stack.

A batch is a set of small frames (``patch_px``² camera pixels) cut from slightly larger
simulated frames (``margin_px`` on each side, so light of emitters just outside enters the
patch as it does in a real frame), with the method's targets of the emitters inside.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from deepsmlm.emitters import EmitterSet


@dataclass
class Batch:
    inputs_adu: torch.Tensor  # (B, P, P); with temporal context (B, 2k + 1, P, P)
    # the method's targets: e.g. (B, 1, U·P, U·P) spikes (Deep-STORM), or a dict of tensors
    # (fastloc: the emitters of each frame and the background)
    targets: torch.Tensor | dict
    emitters: EmitterSet  # positions in the patch frame (nm), frames 0..B−1

    def __len__(self) -> int:
        return len(self.inputs_adu)


class PatchSampler:
    """Simulates training patches: ``draw_emitters(n, generator)`` places the emitters of n
    frames of (patch_px + 2·margin_px)² pixels, ``simulator`` renders them (frames of that
    size), the patches are cropped, and ``encode`` makes the method's targets of the
    emitters inside (``methods.base.Method.encoder``).

    ``differentiable``: frames rendered with the camera's Gaussian noise model (no
    rounding), so gradients reach the PSF's parameters (mask design). ``perturb(generator)``
    changes the simulator before each sample is rendered (e.g. random aberrations).

    ``context_frames`` k > 0: each sample is a window of 2k + 1 frames
    (``data.context.window_emitters``: emitters stay on into the next frame with
    probability ``p_stay``; one background for the window, independent noise), the
    inputs are (B, 2k + 1, P, P) and the targets those of the centre frame.
    """

    def __init__(self, simulator, draw_emitters: Callable[[int, torch.Generator], EmitterSet],
                 encode: Callable, patch_px: int, margin_px: int, pixel_size_nm: float,
                 differentiable: bool = False,
                 perturb: Callable[[torch.Generator], None] | None = None,
                 context_frames: int = 0, p_stay: float = 0.5):
        self.simulator, self.draw_emitters, self.encode = simulator, draw_emitters, encode
        self.perturb = perturb
        self.patch_px, self.margin_px = patch_px, margin_px
        self.pixel_nm = pixel_size_nm
        self.differentiable = differentiable
        self.context_frames, self.p_stay = int(context_frames), float(p_stay)

    def __call__(self, n: int, generator: torch.Generator) -> Batch:
        from deepsmlm.data.context import window_emitters

        k = self.context_frames
        f = 2 * k + 1
        if k:
            em, centre = window_emitters(self.draw_emitters, n, k, self.p_stay, generator)
        else:
            em = self.draw_emitters(n, generator)
        signal, bg = self._signal(em, n, f, generator), \
            self.simulator.background(n * f, self.simulator.frame_shape, generator)
        expected = signal + bg
        if k:  # one background per window (it changes slowly), that of its centre frame
            bg = bg.view(n, f, *bg.shape[1:])[:, k]
            expected = (signal.view(n, f, *signal.shape[1:]) + bg[:, None]).flatten(0, 1)
        if self.differentiable:  # Gaussian reparameterisation of the camera noise
            adu = self.simulator.camera.sample_differentiable(expected, generator)
        else:
            adu = self.simulator.camera(expected, generator)
        m, p = self.margin_px, self.patch_px
        crop = adu[:, m:m + p, m:m + p]
        bg = bg[:, m:m + p, m:m + p].detach()
        if k:
            crop = crop.reshape(n, f, p, p)
            em = em.subset(centre)
            em.frame = torch.div(em.frame, f, rounding_mode="floor")
        shift = torch.tensor([m * self.pixel_nm, m * self.pixel_nm, 0.0])
        xyz = em.xyz_nm - shift
        inside = ((xyz[:, :2] >= 0) & (xyz[:, :2] < p * self.pixel_nm)).all(1)
        em = EmitterSet(xyz[inside], em.photons[inside], em.frame[inside], em.id[inside],
                        species=None if em.species is None else em.species[inside])
        return Batch(crop, self.encode(em, n, p, bg), em)

    def _signal(self, em: EmitterSet, n: int, f: int, generator: torch.Generator
                ) -> torch.Tensor:
        """Expected signal of n samples of f frames each; with ``perturb``, each sample is
        rendered through a microscope of its own (one batch-wide draw would let the
        network's last steps learn that draw's bias)."""
        if self.perturb is None:
            return self.simulator.signal(em, n * f)
        sample = torch.div(em.frame, f, rounding_mode="floor")
        parts = []
        for i in range(n):
            self.perturb(generator)
            one = em.subset(torch.nonzero(sample == i).ravel())
            one.frame = one.frame - i * f
            parts.append(self.simulator.signal(one, f))
        return torch.cat(parts)


def to_device(targets, device):
    """Targets (a tensor, or a dict of tensors and None) on ``device``."""
    if isinstance(targets, dict):
        return {k: None if v is None else v.to(device) for k, v in targets.items()}
    return targets.to(device)


def fixed_batches(sampler: PatchSampler, n_frames: int, batch_size: int, seed: int
                  ) -> list[Batch]:
    """A validation set that is the same for the same seed."""
    gen = torch.Generator().manual_seed(seed)
    return [sampler(min(batch_size, n_frames - s), gen) for s in range(0, n_frames, batch_size)]


def batches_from_stack(frames_adu: np.ndarray, truth: EmitterSet, pixel_nm: float,
                       patch_px: int, encode: Callable, n_patches: int,
                       generator: torch.Generator, context_frames: int = 0) -> Batch:
    """Random patches of a user's simulated stack with its ground truth (the original
    Deep-STORM workflow: a ThunderSTORM stack + CSV); with ``context_frames`` k, each patch
    with the same region of its k neighbouring frames on each side (B, 2k + 1, P, P)."""
    from deepsmlm.data.context import stack_windows

    t_frames, h, w = frames_adu.shape
    if h < patch_px or w < patch_px:
        raise ValueError(f"frames {h}×{w} are smaller than the patch {patch_px}")
    ti = torch.randint(t_frames, (n_patches,), generator=generator)
    r0 = torch.randint(h - patch_px + 1, (n_patches,), generator=generator)
    c0 = torch.randint(w - patch_px + 1, (n_patches,), generator=generator)
    crops, xyz, frames, photons = [], [], [], []
    for k in range(n_patches):
        t, r, c = int(ti[k]), int(r0[k]), int(c0[k])
        region = (slice(r, r + patch_px), slice(c, c + patch_px))
        if context_frames:
            crop = stack_windows(frames_adu, np.array([t]), context_frames, region)[0]
        else:
            crop = frames_adu[(t, *region)]
        crops.append(torch.from_numpy(np.asarray(crop, dtype=np.float32)))
        sel = truth.frame == t
        p = truth.xyz_nm[sel] - torch.tensor([c * pixel_nm, r * pixel_nm, 0.0])
        ok = ((p[:, :2] >= 0) & (p[:, :2] < patch_px * pixel_nm)).all(1)
        xyz.append(p[ok])
        photons.append(truth.photons[sel][ok])
        frames.append(torch.full((int(ok.sum()),), k, dtype=torch.long))
    xyz_t, fr = torch.cat(xyz), torch.cat(frames)
    em = EmitterSet(xyz_t, torch.cat(photons), fr)
    return Batch(torch.stack(crops), encode(em, n_patches, patch_px, None), em)
