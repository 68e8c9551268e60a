"""DeepSTORM3D (Nehme et al., Nat. Methods 17, 734 (2020)): a 2D frame of engineered PSFs →
an occupancy grid of ``depth_planes`` planes over ``emitters.z_range_nm`` on a grid
``upsampling``× finer than the camera; trained against blurred voxel targets with an
overlap (Dice) term; decoded by 3D local maxima and a centre of gravity
(``postprocess.decode_3d``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from deepsmlm.methods.base import UpsampledOutput, UpsampledSection
from deepsmlm.schema import FiniteFloat, NonNegFloat, PosFloat, PosInt, ZRangeSettings


class DeepSTORM3DSettings(ZRangeSettings):
    """``model.json`` settings of a DeepSTORM3D model."""

    target_scale: PosFloat
    depth_planes: PosInt
    width: PosInt
    dilations: Annotated[list[PosInt], Field(min_length=1)]
    z_range_nm: Annotated[list[FiniteFloat], Field(min_length=2, max_length=2)]
    target_encoding: Literal["voxel", "trilinear"] = "voxel"
    score: Literal["peak", "mass"] = "peak"


class DeepSTORM3DTraining(UpsampledSection):
    """Training section of ``model: deepstorm3d``: depth planes over emitters.z_range_nm,
    width, dilations, z blur, overlap term, target encoding."""

    model: Literal["deepstorm3d"]
    depth_planes: Annotated[int, Field(ge=1, le=512)] = 40
    width: Annotated[int, Field(ge=4, le=512)] = 32
    dilations: tuple[Annotated[int, Field(ge=1, le=64)], ...] = (1, 2, 4, 8, 16, 8, 4, 2, 1)
    heatmap_sigma_planes: PosFloat = 1.0
    overlap_weight: NonNegFloat = 1.0
    overlap_counts_false_positives: bool = True
    # Dice with Σp² + Σt² in the denominator: minimum at p = t also for soft targets
    overlap_squares: bool = False
    # "voxel" (published: +1 in the emitter's voxel) or "trilinear" (mass shared by the 8
    # nearest voxel centres: sub-voxel positions survive; detections are then thresholded
    # on their 3×3×3 window sum)
    target_encoding: Literal["voxel", "trilinear"] = "voxel"

    @model_validator(mode="after")
    def _dice(self) -> DeepSTORM3DTraining:
        if self.overlap_squares and not self.overlap_counts_false_positives:
            raise ValueError("training.overlap_squares needs overlap_counts_false_positives "
                             "(the squared Dice always counts false positives)")
        return self


class DeepSTORM3D(UpsampledOutput):
    name = "deepstorm3d"
    section = DeepSTORM3DTraining
    settings = DeepSTORM3DSettings
    value_column = "confidence"

    def decodes_z(self, t) -> bool:
        return True

    def classifies_species(self, t) -> bool:
        return False

    def card_settings(self, t: DeepSTORM3DTraining, scene) -> dict:
        return {"target_scale": t.target_scale, "depth_planes": t.depth_planes,
                "width": t.width, "dilations": list(t.dilations),
                "z_range_nm": list(scene.z_range_nm), "target_encoding": t.target_encoding,
                "score": "mass" if t.target_encoding == "trilinear" else "peak"}

    def build_network(self, card):
        from deepsmlm.models.deepstorm3d import DeepSTORM3D as Network

        s = card.settings
        return Network(int(s["depth_planes"]), int(card.upsampling), int(s["width"]),
                       tuple(s["dilations"]), float(s["target_scale"]))

    def encoder(self, t: DeepSTORM3DTraining, scene):
        from deepsmlm.data.targets import voxel_grid

        u, d = t.upsampling, t.depth_planes
        trilinear = t.target_encoding == "trilinear"

        def encode(emitters, n_frames: int, patch_px: int, background=None):
            return voxel_grid(emitters.xyz_nm, emitters.frame,
                              (n_frames, d, patch_px * u, patch_px * u), scene.pixel_size_nm / u,
                              tuple(scene.z_range_nm), trilinear=trilinear)

        return encode

    def loss(self, t: DeepSTORM3DTraining):
        from deepsmlm.losses import deepstorm3d_loss

        return lambda p, y: deepstorm3d_loss(p, y, t.target_scale, t.heatmap_sigma_px,
                                             t.heatmap_sigma_planes, t.overlap_weight,
                                             t.overlap_counts_false_positives,
                                             t.overlap_squares)

    def decode(self, card, raw, threshold: float, frame_offset: int = 0,
               return_peaks: bool = False):
        from deepsmlm.postprocess import decode_3d

        s = card.settings
        return decode_3d(raw, card.fine_pixel_nm, tuple(s["z_range_nm"]), threshold,
                         s["target_scale"], frame_offset, return_peaks, s.get("score", "peak"))

    def tuning_match(self, card) -> dict:
        """The Hungarian assignment within a 100 nm sphere that DeepSTORM3D reports (a loose
        tolerance would favour a low threshold and many duplicates)."""
        return {"method": "hungarian", "tol_xy_nm": 100.0, "tol_z_nm": 100.0,
                "tol_3d_nm": 100.0}

    def preview(self, card, widefield, sr, emitters, path, title: str) -> None:
        from deepsmlm.plotting import widefield_vs_z

        widefield_vs_z(widefield, emitters.xyz_nm.numpy(), card.pixel_size_nm, path, title)
