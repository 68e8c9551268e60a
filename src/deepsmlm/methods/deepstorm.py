"""Deep-STORM (Nehme et al., Optica 5, 458 (2018)): a 2D frame → a super-resolved image on a
grid ``upsampling``× finer; trained against blurred spike images; decoded by local maxima
and a centre of gravity (``postprocess.decode``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from deepsmlm.methods.base import UpsampledOutput, UpsampledSection
from deepsmlm.schema import CardSettings, NonNegFloat, PosFloat, PosInt


class DeepSTORMTraining(UpsampledSection):
    """Training section of ``model: deepstorm``. Published values are the defaults;
    ``channels`` (32, 64, 128, 512) is the published network, smaller tuples give
    CPU-scale models."""

    model: Literal["deepstorm"] = "deepstorm"
    channels: tuple[int, int, int, int] = (32, 64, 128, 512)
    l1_weight: NonNegFloat = 1.0


class DeepSTORMSettings(CardSettings):
    """``model.json`` settings of a Deep-STORM model."""

    target_scale: PosFloat
    channels: Annotated[list[PosInt], Field(min_length=4, max_length=4)]


class DeepSTORM(UpsampledOutput):
    name = "deepstorm"
    section = DeepSTORMTraining
    settings = DeepSTORMSettings
    value_column = "confidence"

    def decodes_z(self, t) -> bool:
        return False

    def classifies_species(self, t) -> bool:
        return False

    def card_settings(self, t: DeepSTORMTraining, scene) -> dict:
        return {"target_scale": t.target_scale, "channels": list(t.channels)}

    def build_network(self, card):
        from deepsmlm.models.deepstorm import DeepSTORM as Network

        return Network(int(card.upsampling), tuple(card.settings["channels"]))

    def encoder(self, t: DeepSTORMTraining, scene):
        from deepsmlm.data.targets import spike_image

        u = t.upsampling

        def encode(emitters, n_frames: int, patch_px: int, background=None):
            return spike_image(emitters.xyz_nm[:, :2], emitters.frame,
                               (n_frames, patch_px * u, patch_px * u), scene.pixel_size_nm / u)

        return encode

    def loss(self, t: DeepSTORMTraining):
        from deepsmlm.losses import deepstorm_loss

        return lambda p, y: deepstorm_loss(p, y, t.target_scale, t.heatmap_sigma_px,
                                           t.l1_weight)

    def decode(self, card, raw, threshold: float, frame_offset: int = 0,
               return_peaks: bool = False):
        from deepsmlm.postprocess import decode

        return decode(raw, card.fine_pixel_nm, threshold, card.settings["target_scale"],
                      frame_offset, return_peaks)

    def tuning_match(self, card) -> dict:
        """The SMLM-Challenge greedy matching, 250 nm lateral only (a 2D method reports no
        depth, however deep the emitters lie)."""
        return {"tol_z_nm": float("inf")}

    def preview(self, card, widefield, sr, emitters, path, title: str) -> None:
        from deepsmlm.plotting import widefield_vs_sr

        widefield_vs_sr(widefield, sr, card.pixel_size_nm, card.fine_pixel_nm, path, title)
