"""Background photons per pixel: constant per frame, or a smooth non-uniform field."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _device(generator: torch.Generator | None) -> torch.device | None:
    """Draw on the generator's device (CPU or GPU)."""
    return generator.device if generator is not None else None


@dataclass(frozen=True)
class ConstantBackground:
    """One level per frame, uniform in [lo, hi] photons/px (lo == hi: fixed)."""

    photons_per_px: tuple[float, float]

    def __call__(self, n_frames: int, shape: tuple[int, int],
                 generator: torch.Generator | None = None) -> torch.Tensor:
        lo, hi = self.photons_per_px
        level = torch.rand(n_frames, generator=generator, device=_device(generator))
        level = lo + (hi - lo) * level
        return level[:, None, None].expand(n_frames, *shape)


@dataclass(frozen=True)
class SmoothBackground:
    """A smooth random field (Gaussian-filtered white noise, correlation ``length_px``)
    rescaled to [lo, hi] photons/px; one field per call, shared by its frames (like cell
    autofluorescence)."""

    photons_per_px: tuple[float, float]
    length_px: float

    def __call__(self, n_frames: int, shape: tuple[int, int],
                 generator: torch.Generator | None = None) -> torch.Tensor:
        h, w = shape
        dev = _device(generator)
        noise = torch.randn(h, w, generator=generator, dtype=torch.float64, device=dev)
        fy = torch.fft.fftfreq(h, dtype=torch.float64, device=dev)[:, None]
        fx = torch.fft.fftfreq(w, dtype=torch.float64, device=dev)[None, :]
        kernel = torch.exp(-2 * (torch.pi * self.length_px) ** 2 * (fx ** 2 + fy ** 2))
        field = torch.fft.ifft2(torch.fft.fft2(noise) * kernel).real
        field = (field - field.min()) / (field.max() - field.min()).clamp_min(1e-12)
        lo, hi = self.photons_per_px
        return (lo + (hi - lo) * field).float()[None].expand(n_frames, h, w)
