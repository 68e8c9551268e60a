"""Camera ADU → network input: one fixed affine map per model (kept in its model folder)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deepsmlm.camera import Camera


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
        x = (x - self.mean) / self.std
        # (B, H, W) frames → (B, 1, H, W); (B, 2k + 1, H, W) windows of temporal context
        # (``data.context``) are already channels
        return x.unsqueeze(-3) if x.dim() == 3 else x

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
