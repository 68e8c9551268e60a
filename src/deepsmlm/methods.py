"""A localization method = network + loss + decoding, chosen by ``training.model``.

``deepstorm``: 2D super-resolved image (Nehme 2018); ``deepstorm3d``: 3D occupancy grid
(Nehme 2020). Training (``training.deepstorm``) and inference (``inference``) go through
these functions only, so both methods share the loop, the model folder and the commands.
"""

from __future__ import annotations

import torch
from torch import nn


def settings_for(exp, normalizer) -> dict:
    """The model.json content that describes the network and its decoding."""
    from deepsmlm.io.models import versions

    t = exp.training
    s = {"kind": t.model, "upsampling": t.upsampling, "pixel_size_nm": exp.optics.pixel_size_nm,
         "fine_pixel_nm": exp.optics.pixel_size_nm / t.upsampling,
         "target_scale": t.target_scale, "normalization": normalizer.to_dict(),
         "threshold": None, "versions": versions()}
    if t.model == "deepstorm3d":
        s.update(depth_planes=t.depth_planes, width=t.width, dilations=list(t.dilations),
                 z_range_nm=list(exp.emitters.z_range_nm), target_encoding=t.target_encoding,
                 score="mass" if t.target_encoding == "trilinear" else "peak")
    else:
        s.update(channels=list(t.channels))
    return s


def build_model(s: dict) -> nn.Module:
    if s["kind"] == "deepstorm3d":
        from deepsmlm.models.deepstorm3d import DeepSTORM3D

        return DeepSTORM3D(int(s["depth_planes"]), int(s["upsampling"]), int(s["width"]),
                           tuple(s["dilations"]), float(s["target_scale"]))
    from deepsmlm.models.deepstorm import DeepSTORM

    return DeepSTORM(int(s["upsampling"]), tuple(s["channels"]))


def loss(t):
    """loss(pred, target) for a training config."""
    from deepsmlm.losses import deepstorm3d_loss, deepstorm_loss

    if t.model == "deepstorm3d":
        return lambda p, y: deepstorm3d_loss(p, y, t.target_scale, t.heatmap_sigma_px,
                                             t.heatmap_sigma_planes, t.overlap_weight,
                                             t.overlap_counts_false_positives,
                                             t.overlap_squares)
    return lambda p, y: deepstorm_loss(p, y, t.target_scale, t.heatmap_sigma_px, t.l1_weight)


def decode(s: dict, out: torch.Tensor, threshold: float, frame_offset: int = 0,
           return_peaks: bool = False):
    from deepsmlm.postprocess import decode as decode_2d
    from deepsmlm.postprocess import decode_3d

    if s["kind"] == "deepstorm3d":
        return decode_3d(out, s["fine_pixel_nm"], tuple(s["z_range_nm"]), threshold,
                         s["target_scale"], frame_offset, return_peaks,
                         s.get("score", "peak"))
    return decode_2d(out, s["fine_pixel_nm"], threshold, s["target_scale"], frame_offset,
                     return_peaks)


def tuning_match(s: dict) -> dict:
    """Matching used to tune the detection threshold: the SMLM-Challenge greedy 250/500 nm
    for 2D; for 3D the Hungarian assignment within a 100 nm sphere that DeepSTORM3D reports
    (a loose tolerance would favour a low threshold and many duplicates)."""
    if s["kind"] == "deepstorm3d":
        return {"method": "hungarian", "tol_xy_nm": 100.0, "tol_z_nm": 100.0,
                "tol_3d_nm": 100.0}
    return {}
