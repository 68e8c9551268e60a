"""Run a trained model (Deep-STORM 2D or DeepSTORM3D): frames → network output →
localizations.

``Predictor`` loads a model folder (weights, normalisation, threshold); ``localize_stack``
streams a movie in chunks of frames (memory bounded whatever its length), pads frames the
network cannot take, and accumulates the summed super-resolved image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepsmlm import methods
from deepsmlm.camera import Camera
from deepsmlm.data.datasets import Normalizer
from deepsmlm.emitters import EmitterSet
from deepsmlm.errors import UserError
from deepsmlm.io.models import load_tensors, read_json
from deepsmlm.models.deepstorm import pad_to_multiple


@dataclass
class Predictor:
    model: torch.nn.Module
    normalizer: Normalizer
    settings: dict
    device: torch.device

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu", camera_overrides: dict | None = None
             ) -> Predictor:
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"model folder not found: {folder}")
        s = read_json(folder / "model.json")
        if s.get("kind") not in ("deepstorm", "deepstorm3d"):
            raise UserError(f"{folder}: unknown model kind {s.get('kind')!r}")
        if s.get("threshold") is None:
            raise UserError(f"{folder}: training did not finish (no tuned threshold); "
                            "resume it with `deepsmlm train ... --resume`")
        model = methods.build_model(s)
        try:
            model.load_state_dict(load_tensors(folder / "weights.safetensors"))
        except RuntimeError as err:
            raise UserError(f"{folder}: weights do not fit the model settings ({err})") from None
        model.eval().to(device)
        cam = dict(s["normalization"]["camera"])
        cam.update({k: v for k, v in (camera_overrides or {}).items() if v is not None})
        normalizer = Normalizer.from_dict(s["normalization"], Camera(**cam))
        return cls(model, normalizer, s, torch.device(device))

    @property
    def fine_pixel_nm(self) -> float:
        return float(self.settings["fine_pixel_nm"])

    def super_resolve(self, frames_adu: torch.Tensor) -> torch.Tensor:
        """SR images (B, 1, U·H, U·W) of frames (B, H, W) in ADU; pads, then crops back."""
        x = self.normalizer(frames_adu.to(self.device))
        x, (h, w) = pad_to_multiple(x, self.model.multiple)
        with torch.no_grad():
            sr = self.model(x)
        u = self.model.upsampling
        return sr[..., : h * u, : w * u]

    def localize(self, sr: torch.Tensor, frame_offset: int = 0,
                 threshold: float | None = None) -> EmitterSet:
        thr = self.settings["threshold"] if threshold is None else threshold
        return methods.decode(self.settings, sr, thr, frame_offset)


def localize_stack(pred: Predictor, stack, chunk_frames: int = 256, batch_size: int = 16,
                   progress: bool = True) -> tuple[EmitterSet, np.ndarray, np.ndarray]:
    """Localizations, summed SR image (float64) and widefield sum of a ``read_stack`` Stack."""
    from tqdm import tqdm

    n, h, w = stack.data.shape
    u = pred.model.upsampling
    sr_sum = torch.zeros(h * u, w * u, dtype=torch.float64)
    wf_sum = np.zeros((h, w), dtype=np.float64)
    found = []
    bar = tqdm(total=n, disable=not progress, unit="frame", desc="localize")
    for t0, block in stack.chunks(chunk_frames):
        wf_sum += block.sum(axis=0)
        for b0 in range(0, len(block), batch_size):
            frames = torch.from_numpy(block[b0:b0 + batch_size])
            sr = pred.super_resolve(frames).cpu()
            sr_sum += sr.sum(dim=(0, 1)).double()
            found.append(pred.localize(sr, frame_offset=t0 + b0))
            bar.update(len(frames))
    bar.close()
    em = EmitterSet.cat(found)
    em.id = torch.arange(len(em))
    return em, sr_sum.numpy(), wf_sum
