"""The simulator composes PSF, emitter blur, background and camera — nothing else.

    photons(T, H, W) = blur(PSF.render(emitters)) + background
    frames_adu       = camera(photons)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from deepsmlm.camera import Camera
from deepsmlm.emitters import EmitterSet
from deepsmlm.optics.psf import PSF

Background = Callable[[int, tuple[int, int], torch.Generator | None], torch.Tensor]


def gaussian_blur(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable, normalised Gaussian blur of (T, H, W) images (zero padding)."""
    if sigma_px <= 0:
        return images
    r = max(1, math.ceil(4 * sigma_px))
    x = torch.arange(-r, r + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-0.5 * (x / sigma_px) ** 2)
    k = k / k.sum()
    out = F.conv2d(images[:, None], k.view(1, 1, 1, -1), padding=(0, r))
    out = F.conv2d(out, k.view(1, 1, -1, 1), padding=(r, 0))
    return out[:, 0]


@dataclass
class Simulator:
    psf: PSF
    camera: Camera
    background: Background
    frame_shape: tuple[int, int]
    blur_sigma_px: float = 0.0

    def expected_photons(self, emitters: EmitterSet, n_frames: int,
                         generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected signal (T, H, W) and background (T, H, W) photons per pixel."""
        return self.signal(emitters, n_frames), self.background(n_frames, self.frame_shape,
                                                                generator)

    def signal(self, emitters: EmitterSet, n_frames: int) -> torch.Tensor:
        """Expected signal photons per pixel (T, H, W): the PSF's image, blurred."""
        shape = (n_frames, *self.frame_shape)
        signal = self.psf.render(emitters.xyz_nm, emitters.photons, emitters.frame, shape,
                                 species=emitters.species)
        return gaussian_blur(signal, self.blur_sigma_px)

    def __call__(self, emitters: EmitterSet, n_frames: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Noisy frames in ADU (T, H, W), float tensor holding integers."""
        signal, bg = self.expected_photons(emitters, n_frames, generator)
        return self.camera(signal + bg, generator)
