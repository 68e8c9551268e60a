"""What a localization method is: its training section and the ``Method`` protocol.

A method owns everything that differs between methods — the keys of its training section,
the network, the training targets, the loss, the decoding of raw network output into an
``EmitterSet``, the grid of detection thresholds tuned after training, and the preview
written by ``localize``. Everything else (simulation, the fit loop, the model folder,
streaming inference, the commands) is shared and never asks which method it runs.

``TrainingSection`` holds the keys every method's training section has (data sampling and
the fit loop); a method's own section subclasses it and adds ``model: Literal["name"]``,
the tag by which the experiment file picks the method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol

import numpy as np
from pydantic import Field, model_validator

from deepsmlm.schema import CardSettings, PosFloat, Strict, check_range

IntPair = tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]


class TrainingSection(Strict):
    """Keys of every method's ``training`` section: patches, batches, the fit loop."""

    model: str
    n_per_patch_range: IntPair | None = None
    patch_px: Annotated[int, Field(ge=8, le=512)] = 26
    margin_px: Annotated[int, Field(ge=0, le=64)] = 4
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 16
    steps_per_epoch: Annotated[int, Field(ge=1)] = 400
    max_epochs: Annotated[int, Field(ge=1)] = 100
    learning_rate: PosFloat = 1e-3
    # "plateau": ×0.1 after lr_patience_epochs without a better validation loss;
    # "cosine": from learning_rate down to min_learning_rate along half a cosine over
    # max_epochs × steps_per_epoch steps (size max_epochs to the run's time budget)
    lr_schedule: Literal["plateau", "cosine"] = "plateau"
    lr_patience_epochs: Annotated[int, Field(ge=1)] = 5
    min_learning_rate: PosFloat = 5e-5
    early_stop_epochs: Annotated[int, Field(ge=1)] = 12
    normalization: Literal["photons", "per-frame"] = "photons"
    density_range_per_um2: tuple[PosFloat, PosFloat] | None = None
    val_frames: Annotated[int, Field(ge=1)] = 64
    # validation patches the threshold, decoding options and σ calibration are tuned on
    # when training ends (simulated afresh with the validation seed; None: val_frames; a
    # training from a user's stack tunes on its validation part)
    tune_frames: Annotated[int, Field(ge=1)] | None = None
    # what that tuning maximises: "jaccard" (detection), or "efficiency" — the SMLM
    # Challenge's E = 100 − sqrt((100 − Jaccard)² + (α·RMSE)²) (lateral; for a method that
    # localizes z, the mean of the lateral and axial E), which trades found emitters for
    # precise ones (a higher threshold, a cut on σ)
    tune_objective: Literal["jaccard", "efficiency"] = "jaccard"
    # the resumable checkpoint (checkpoint/last.safetensors) is written at the end of every
    # epoch, and also every this many optimiser steps when set (a kill -9 loses at most
    # that many steps; --resume continues the epoch at its step)
    checkpoint_every_steps: Annotated[int, Field(ge=1)] | None = None
    seed: int = 0
    # real microscopes never match the simulation: each training sample is rendered with
    # random aberrations (Noll 5–15) of this total RMS [rad] added to the pupil (pupil PSF);
    # [lo, hi]: each sample's RMS scale drawn uniformly in it (well corrected to poorly)
    aberration_jitter_rad: (Annotated[float, Field(ge=0, le=3)]
                            | tuple[Annotated[float, Field(ge=0, le=3)],
                                    Annotated[float, Field(ge=0, le=3)]]) = 0.0

    @model_validator(mode="after")
    def _ranges(self) -> TrainingSection:
        if self.density_range_per_um2 is not None:
            check_range(self.density_range_per_um2, "training.density_range_per_um2")
        if isinstance(self.aberration_jitter_rad, tuple):
            check_range(self.aberration_jitter_rad, "training.aberration_jitter_rad")
        if self.n_per_patch_range is not None:
            check_range(self.n_per_patch_range, "training.n_per_patch_range")
        return self


class UpsampledSection(TrainingSection):
    """Methods whose output lives on a grid ``upsampling``× finer than the camera's, with
    targets of height ``target_scale`` blurred by ``heatmap_sigma_px`` fine pixels."""

    upsampling: Literal[1, 2, 4, 8, 16] = 8
    target_scale: PosFloat = 100.0
    heatmap_sigma_px: PosFloat = 1.0

    @model_validator(mode="after")
    def _multiple(self) -> UpsampledSection:
        if (self.patch_px * self.upsampling) % 8:
            raise ValueError(f"training.patch_px × upsampling must be a multiple of 8, got "
                             f"{self.patch_px} × {self.upsampling}")
        return self


class UpsampledOutput:
    """Shared by methods with an ``UpsampledSection``: the output grid's upsampling and
    thresholds on a log grid up to the target height."""

    def upsampling(self, t: UpsampledSection) -> int:
        return t.upsampling

    def thresholds(self, card) -> np.ndarray:
        return card.settings["target_scale"] * np.geomspace(0.002, 1.0, 32)

    def uncertainty_columns(self, card) -> int:
        return 0  # the upsampled-image decoders report no σ

    def species_names(self, card) -> list[str]:
        return []  # single colour

    def output_image(self, card, raw):
        """The super-resolved output summed over its channels (3D: a z projection)."""
        return raw.sum(1)


@dataclass(frozen=True)
class Scene:
    """What a method may know of the experiment: camera pixel, the emitters' depth range,
    the largest photons per emitter and background photons per pixel it simulates, and
    the species (names, emission wavelengths; empty: single colour)."""

    pixel_size_nm: float
    z_range_nm: tuple[float, float]
    photons_max: float
    background_max: float
    species: tuple[str, ...] = ()
    species_wavelengths_nm: tuple[float, ...] = ()


# The training targets of a batch: encode(emitters (EmitterSet in the patch frame, nm),
# n_frames, patch_px, background (B, P, P) expected photons per pixel, or None when
# unknown) -> targets (a tensor, or a dict of tensors).
Encoder = Callable[..., object]


class Method(Protocol):
    """One localization method. Implementations are stateless singletons registered in
    ``deepsmlm.methods``; ``card`` is the model folder's ``ModelCard``, whose ``settings``
    dict the method itself wrote (``card_settings``)."""

    name: str
    section: type[TrainingSection]  # its training section (pydantic), tagged by `model`
    settings: type[CardSettings]  # what its model.json settings hold (checked on reading)
    value_column: str  # what the localization table's value column holds

    def decodes_z(self, t: TrainingSection) -> bool:
        """Whether it localizes in 3D (the end-to-end mask design needs such a decoder)."""

    def classifies_species(self, t: TrainingSection) -> bool:
        """Whether it tells the emitters' species apart (multicolor; a mask design can
        then encode colour)."""

    def upsampling(self, t: TrainingSection) -> int:
        """Output pixels per camera pixel (1: camera resolution)."""

    def card_settings(self, t: TrainingSection, scene: Scene) -> dict:
        """JSON-ready settings that rebuild the network and decode its output."""

    def build_network(self, card) -> object:
        """The untrained ``torch.nn.Module`` the card describes."""

    def encoder(self, t: TrainingSection, scene: Scene) -> Encoder:
        """Training targets of a batch's emitters."""

    def loss(self, t: TrainingSection) -> Callable:
        """loss(raw output, targets) -> scalar tensor."""

    def decode(self, card, raw, threshold: float, frame_offset: int = 0,
               return_peaks: bool = False):
        """Raw output (B, C, H', W') → EmitterSet (and each detection's score)."""

    def thresholds(self, card) -> np.ndarray:
        """Candidate detection thresholds, tuned on validation frames after training."""

    def uncertainty_columns(self, card) -> int:
        """How many σ columns its localization tables carry: 0, 2 (x, y) or 3 (x, y, z)
        (fixed before a streamed table's first row is written)."""

    def species_names(self, card) -> list[str]:
        """The species it classifies, in the order of the tables' ``species`` index (empty:
        a single-colour method; fixed before a streamed table's first row is written)."""

    def output_image(self, card, raw) -> object:
        """The image ``localize`` sums over frames into sr.tif: (B, H', W') from raw output."""

    # A method whose decode reports uncertainties (EmitterSet.uncertainty_xyz_nm) also has
    #   calibrate_uncertainty(card, raw, truth, threshold, match_kwargs): after threshold
    #   tuning, with the network's output ``raw`` for the validation frames and their
    #   ``truth``, it fits how its σ must be scaled to describe the errors of the matches
    #   (``training.train.uncertainty_match``) and keeps that in card.settings; returns a
    #   summary for card.validation (or None).

    def tuning_match(self, card) -> dict:
        """Keyword arguments of ``evaluation.metrics.evaluate`` used to tune the threshold."""

    def preview(self, card, widefield: np.ndarray, sr: np.ndarray, emitters, path,
                title: str) -> None:
        """``sr.png`` of ``localize``: the summed output or the localizations."""
