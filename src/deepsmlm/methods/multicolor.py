"""multicolor: localize and tell the dye of every emitter from one grayscale frame
(Hershko, Weiss, Michaeli, Shechtman, Opt. Express 27, 6158 (2019)).

The camera-resolution localizer of ``methods.fastloc`` with a class head: per pixel, next
to the detection probability, offsets (z), photons, their σ and the background, the
network predicts the logits of the experiment's K species (``emitters.species``). The
mixture loss scores each true emitter by the pixel's density times its probability of the
true species (``losses.mixture_loss``: no matching); a detection's species is the most
probable one at its pixel, with that probability as ``species_probability``. The PSF's
dependence on the wavelength (``optics.multicolor``) is what the class head reads; a
phase mask designed end to end with this method (``deepsmlm design``) makes it stronger.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from deepsmlm.errors import UserError
from deepsmlm.methods.fastloc import FastLoc, FastLocSettings, FastLocTraining
from deepsmlm.schema import PosFloat


class MulticolorTraining(FastLocTraining):
    """Training section of ``model: multicolor``: the keys of ``fastloc``; the species are
    the experiment's ``emitters.species``. ``species_weight`` multiplies the class term
    (log q of the true species) inside the mixture: 1 is the likelihood; above 1 a mask
    design weighs colour more against position (the network's own training keeps 1)."""

    model: Literal["multicolor"]
    species_weight: PosFloat = 1.0


class MulticolorSettings(FastLocSettings):
    """``model.json`` settings of a multicolor model: fastloc's and the species."""

    species: Annotated[list[str], Field(min_length=2)]
    species_wavelengths_nm: list[PosFloat]


class Multicolor(FastLoc):
    name = "multicolor"
    section = MulticolorTraining
    settings = MulticolorSettings

    def classifies_species(self, t) -> bool:
        return True

    def loss(self, t: MulticolorTraining):
        return self._loss(t, class_weight=t.species_weight)

    def card_settings(self, t, scene) -> dict:
        if len(scene.species) < 2:
            raise UserError("training.model multicolor needs two or more emitters.species "
                            f"(got {len(scene.species)})")
        return {**super().card_settings(t, scene), "species": list(scene.species),
                "species_wavelengths_nm": list(scene.species_wavelengths_nm)}

    def preview(self, card, widefield, sr, emitters, path, title: str) -> None:
        from deepsmlm.plotting import widefield_vs_sr_species
        from deepsmlm.render import render_species, species_rgb

        if card.settings["localize_z"] or emitters.species is None:
            super().preview(card, widefield, sr, emitters, path, title)
            return
        px = card.pixel_size_nm
        fine = px / 8
        h, w = widefield.shape
        names = self.species_names(card)
        rgb = species_rgb(render_species(emitters.xyz_nm.numpy()[:, :2],
                                         emitters.species.numpy(), len(names), fine,
                                         (w * px, h * px)))
        widefield_vs_sr_species(widefield, rgb, names, px, fine, path, title)
