"""fastloc: a localizer at camera resolution with uncertainties, in the family of DECODE
(Speiser et al., Nat. Methods 18, 1082 (2021)).

Per camera pixel the network (``models.fastloc``) predicts a detection probability, the
emitter's sub-pixel offset, its depth (``localize_z``), its photons, the σ of each, and the
background. It is trained with a loss that needs no matching to the truth
(``losses.mixture_loss``: a Gaussian mixture over pixels weighted by their probability, a
count term) plus the background's squared error, and decoded by ``postprocess.
pixel_detections`` (3×3 maxima of the probability, scored by its 3×3 sum) and
``postprocess.suppress_close`` (of two detections within a pixel, the weaker goes), and,
where tuning picks it, ``postprocess.claim_mass`` (detections share the probability around
them: one wide spot with two maxima is one emitter): positions are the pixel centre plus
the offset, uncertainties the predicted σ in nm.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from deepsmlm.methods.base import TrainingSection
from deepsmlm.schema import NonNegFloat, PosFloat, PosInt, ZRangeSettings


class FastLocTraining(TrainingSection):
    """Training section of ``model: fastloc``.

    ``width``: channels of the first U-Net level (2×, 4×, … below it); ``levels``: the
    U-Net's depth (3: a 46-px receptive field; 4: 98 px — on the Tetrapod, 3 did better in
    the same CPU time); ``localize_z``: regress z over emitters.z_range_nm
    (3D) — off, depth is a nuisance (a 2D method that tolerates defocus);
    ``context_frames``: temporal context, the k frames before and after each frame read
    with it as input channels (``data.context``; training simulates emitters that stay on
    from frame to frame as ``emitters.blinking`` says); ``background_weight``: weight of
    the background term."""

    model: Literal["fastloc"]
    width: Annotated[int, Field(ge=4, le=256)] = 32
    levels: Annotated[int, Field(ge=2, le=6)] = 3
    context_frames: Annotated[int, Field(ge=0, le=3)] = 0
    localize_z: bool = False
    background_weight: NonNegFloat = 1.0
    patch_px: Annotated[int, Field(ge=8, le=512)] = 32
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 16
    steps_per_epoch: Annotated[int, Field(ge=1)] = 100
    learning_rate: Annotated[float, Field(gt=0)] = 1e-3
    lr_schedule: Literal["plateau", "cosine"] = "cosine"
    # sized for a 2-core CPU: the cosine schedule ends after about 15 minutes there
    max_epochs: Annotated[int, Field(ge=1)] = 40
    early_stop_epochs: Annotated[int, Field(ge=1)] = 40
    # the σ calibration fits std(error/σ) in bins: on the 64 validation patches (a few
    # hundred localizations with heavy tails) its x and y factors scatter by ±30 %
    tune_frames: Annotated[int, Field(ge=1)] | None = 512

    @model_validator(mode="after")
    def _patch_multiple(self) -> FastLocTraining:
        m = 2 ** (self.levels - 1)
        if self.patch_px % m:
            raise ValueError(f"training.patch_px must be a multiple of {m} for a "
                             f"{self.levels}-level fastloc network (training.model: fastloc, "
                             f"the default), got {self.patch_px}")
        return self


# Decoding (``postprocess.pixel_detections``, ``suppress_close``): a pixel whose own
# probability reaches ``certain_probability`` is a detection even beside a stronger one, and
# of two detections closer than ``suppress_px`` [camera px] the weaker goes (one emitter
# found twice); a detection whose lateral σ (the network's own, √(σx² + σy²)) exceeds
# ``max_sigma_px`` camera pixels goes (None: none does) — a strongly defocused spot is found
# but placed too far off to count; with ``mass_radius_px`` r, the detections share the
# probability of the (2r + 1)² pixels around them (``postprocess.claim_mass``: one wide spot
# found at two maxima is one emitter). These defaults hold for model folders written before
# they were tuned; training picks them on the validation frames from DECODING_OPTIONS (at
# density, two emitters often fall on neighbouring pixels: 0.6 and 1 px merge them). The
# defaults come first, so another choice is kept only where it scores higher.
CERTAIN_PROBABILITY = 0.6
SUPPRESS_PX = 1.0
DECODING_OPTIONS = tuple({"certain_probability": c, "suppress_px": r, "max_sigma_px": m,
                          "mass_radius_px": k}
                         for c in (0.6, 0.45, 0.3) for r in (1.0, 0.5)
                         for m in (None, 1.5, 1.0, 0.75, 0.5) for k in (None, 2))


class FastLocSettings(ZRangeSettings):
    """``model.json`` settings of a fastloc model: the network, the scales of its outputs,
    and what tuning chose (decoding options, σ calibration)."""

    width: PosInt
    levels: Annotated[int, Field(ge=2)] = 3
    context_frames: Annotated[int, Field(ge=0)] = 0
    localize_z: bool
    photon_scale: PosFloat
    background_scale: PosFloat = 1.0
    certain_probability: Annotated[float, Field(gt=0, le=1)] = CERTAIN_PROBABILITY
    suppress_px: NonNegFloat = SUPPRESS_PX
    max_sigma_px: PosFloat | None = None
    mass_radius_px: PosInt | None = None
    sigma_calibration: dict | None = None
    sigma_scale: Annotated[list[PosFloat], Field(min_length=3, max_length=3)] | None = None
    species: list[str] = []
    species_wavelengths_nm: list[PosFloat] = []

    @model_validator(mode="after")
    def _depths_when_3d(self):
        if self.localize_z and self.z_range_nm is None:
            raise ValueError("a model that localizes z needs z_range_nm")
        return self


class FastLoc:
    name = "fastloc"
    section = FastLocTraining
    settings = FastLocSettings
    value_column = "intensity [photon]"

    def decodes_z(self, t: FastLocTraining) -> bool:
        return t.localize_z

    def classifies_species(self, t: FastLocTraining) -> bool:
        return False

    def upsampling(self, t: FastLocTraining) -> int:
        return 1

    def card_settings(self, t: FastLocTraining, scene) -> dict:
        return {"width": t.width, "levels": t.levels, "context_frames": t.context_frames,
                "localize_z": t.localize_z,
                "z_range_nm": list(scene.z_range_nm),
                "photon_scale": 1.25 * scene.photons_max,
                "background_scale": max(1.0, 1.5 * scene.background_max)}

    def build_network(self, card):
        from deepsmlm.models.fastloc import FastLoc as Network

        s = card.settings  # levels, context_frames: absent from older model folders
        return Network(int(s["width"]), bool(s["localize_z"]),
                       in_frames=2 * int(s.get("context_frames", 0)) + 1,
                       n_species=len(s.get("species", [])), levels=int(s.get("levels", 3)))

    def encoder(self, t: FastLocTraining, scene):
        """Targets: ``truth`` (B, K, D) of x, y [px in the patch], (z normalised), photons
        normalised; ``mask`` (B, K); ``background`` (B, P, P) normalised, or None;
        multicolor: ``species`` (B, K) long."""
        settings = self.card_settings(t, scene)
        multicolor = bool(settings.get("species"))
        z_mid, z_half = _z_scale(settings)
        px = scene.pixel_size_nm

        def encode(emitters, n_frames: int, patch_px: int, background=None):
            import torch

            frame = emitters.frame.long()
            counts = torch.bincount(frame, minlength=n_frames)
            k_max = int(counts.max()) if len(frame) else 0
            cols = [emitters.xyz_nm[:, 0] / px, emitters.xyz_nm[:, 1] / px]
            if t.localize_z:
                cols.append((emitters.xyz_nm[:, 2] - z_mid) / z_half)
            cols.append(emitters.photons / settings["photon_scale"])
            values = torch.stack(cols, 1)
            truth = torch.zeros(n_frames, k_max, values.shape[1])
            mask = torch.zeros(n_frames, k_max, dtype=torch.bool)
            species = torch.zeros(n_frames, k_max, dtype=torch.long)
            if multicolor and len(frame) and emitters.species is None:
                raise ValueError("a multicolor method needs the emitters' species")
            if len(frame):
                order = torch.argsort(frame, stable=True)
                start = torch.cumsum(counts, 0) - counts
                slot = torch.arange(len(frame)) - start[frame[order]]
                truth[frame[order], slot] = values[order]
                mask[frame[order], slot] = True
                if multicolor:
                    species[frame[order], slot] = emitters.species[order]
            bg = None if background is None else background / settings["background_scale"]
            out = {"truth": truth, "mask": mask, "background": bg}
            if multicolor:
                out["species"] = species
            return out

        return encode

    def loss(self, t: FastLocTraining):
        return self._loss(t, class_weight=1.0)

    def _loss(self, t: FastLocTraining, class_weight: float):
        """The mixture loss; a multicolor head's log-probabilities enter × ``class_weight``."""
        from deepsmlm.losses import mixture_loss
        from deepsmlm.models.fastloc import activate, channels

        base = channels(t.localize_z)
        est = [n for n in base if n != "p" and n != "bg" and not n.startswith("s_")]

        def loss(raw, targets):
            import torch

            n_species = raw.shape[1] - len(base)  # the multicolor head's logits, if any
            maps = activate(raw, channels(t.localize_z, n_species))
            b, h, w = maps["p"].shape
            mu, sigma = _means(maps, est, h, w), _sigmas(maps, est)
            log_class = None
            if n_species:
                log_class = torch.log_softmax(raw[:, len(base):], 1).reshape(b, n_species, -1)
                log_class = class_weight * log_class.transpose(1, 2)  # (B, H·W, C)
            total = mixture_loss(maps["p"].reshape(b, -1), mu, sigma, targets["truth"],
                                 targets["mask"], log_class, targets.get("species"))
            bg = targets.get("background")
            if bg is not None and t.background_weight > 0:
                total = total + t.background_weight * h * w * torch.mean((maps["bg"] - bg) ** 2)
            return total

        return loss

    def decode(self, card, raw, threshold: float, frame_offset: int = 0,
               return_peaks: bool = False):
        import torch

        from deepsmlm.emitters import EmitterSet

        d = self._detections(card, raw, threshold,
                             with_features="sigma_calibration" in card.settings)
        if d is None:
            return (EmitterSet.empty(), torch.zeros(0)) if return_peaks else EmitterSet.empty()
        sigma = d["sigma"] * _sigma_factors(card.settings, d).to(d["sigma"])
        n_species = len(card.settings.get("species", []))
        em = EmitterSet(d["xyz"].cpu(), d["photons"].cpu(), (d["t"] + frame_offset).cpu(),
                        uncertainty_xyz_nm=sigma.cpu(),
                        species=d["species"].long().cpu() if n_species else None,
                        species_probability=d["prob"].cpu() if n_species else None)
        return (em, d["score"].cpu()) if return_peaks else em

    def _detections(self, card, raw, threshold: float, with_features: bool = False
                    ) -> dict | None:
        """The detections in ``raw`` above ``threshold`` after suppression, as tensors: xyz
        [nm] (K, 3), the network's own σ [nm] (K, 3; z NaN in 2D), photons, t, score, and
        the species and its probability (multicolor); with ``with_features`` the features
        of the σ calibration: local density [emitters/µm²] (``uncertainty.
        local_density_per_um2``), distance to the frame edge [px], log photons. None if
        none."""
        import torch

        from deepsmlm.models.fastloc import activate, channels
        from deepsmlm.postprocess import claim_mass, pixel_detections, suppress_close
        from deepsmlm.uncertainty import local_density_at

        s = card.settings
        n_species = len(s.get("species", []))
        raw = raw.detach().float()
        names = channels(bool(s["localize_z"]), n_species)
        p = activate(raw[:, [names.index("p")]], ("p",))["p"]
        idx, score = pixel_detections(p, threshold,
                                      s.get("certain_probability", CERTAIN_PROBABILITY))
        if len(idx) == 0:
            return None
        t, r, c = idx[:, 0], idx[:, 1], idx[:, 2]
        # the other maps only where there is a detection (K, 1, 1 each)
        at = {k: v[:, 0, 0] for k, v in activate(raw[t, :, r, c][:, :, None, None],
                                                 names).items()}
        px = card.pixel_size_nm
        x = (c.float() + 0.5 + at["dx"]) * px
        y = (r.float() + 0.5 + at["dy"]) * px
        sx, sy = at["s_dx"] * px, at["s_dy"] * px
        if s["localize_z"]:
            z_mid, z_half = _z_scale(s)
            z = z_mid + z_half * at["z"]
            sz = z_half * at["s_z"]
        else:
            z, sz = torch.zeros_like(x), torch.full_like(x, float("nan"))
        out = {"xyz": torch.stack([x, y, z], 1), "sigma": torch.stack([sx, sy, sz], 1),
               "photons": at["n"] * s["photon_scale"], "t": t, "score": score}
        if n_species:  # the species with the highest probability at the detection's pixel
            q = torch.softmax(raw[t, -n_species:, r, c], 1)  # (N, C)
            out["prob"], out["species"] = q.max(1)
        else:
            out["prob"] = out["species"] = torch.zeros_like(x)
        if with_features:  # those of the σ calibration (uncertainty.FEATURES)
            out["density_per_um2"] = local_density_at(p, t, r, c, px)
            h, w = p.shape[1:]
            out["edge_px"] = torch.minimum(torch.minimum(x, w * px - x),
                                           torch.minimum(y, h * px - y)).clamp(min=0) / px
            out["log_photons"] = torch.log(out["photons"].clamp(min=1.0))
        keep = suppress_close(t, out["xyz"][:, :2], score,
                              s.get("suppress_px", SUPPRESS_PX) * px)
        if s.get("max_sigma_px") is not None:
            keep &= torch.hypot(sx, sy) <= s["max_sigma_px"] * px
        out = {k: v[keep] for k, v in out.items()}
        if s.get("mass_radius_px") is not None:  # one wide spot's second maximum goes
            k = torch.nonzero(keep).flatten()
            out["score"] = claim_mass(p, t[k], r[k], c[k], out["score"],
                                      s["mass_radius_px"])
            out = {key: v[out["score"] > threshold] for key, v in out.items()}
        return out

    def uncertainty_columns(self, card) -> int:
        return 3 if card.settings["localize_z"] else 2

    def species_names(self, card) -> list[str]:
        return list(card.settings.get("species", []))

    def thresholds(self, card) -> np.ndarray:
        return np.linspace(0.05, 0.95, 19)

    def decoding_options(self, card) -> tuple[dict, ...]:
        """Decoding settings tuned with the threshold (kept in card.settings)."""
        return DECODING_OPTIONS

    def calibrate_uncertainty(self, card, raw, truth: dict, threshold: float,
                              match_kwargs: dict) -> dict | None:
        """Scale the σ it reports to the errors on validation frames: ``raw`` the network's
        output for them, ``truth`` their emitters (numpy dict), decoded at ``threshold``
        and matched with ``match_kwargs``. std(error/σ) of the network's own σ, per axis, in
        bins of local density, distance to the edge and photons (``uncertainty.
        fit_scale_table``), becomes ``settings.sigma_calibration``, replacing an earlier
        calibration. Returns the table, or None (too few matches: σ stay as they were)."""
        from deepsmlm.evaluation.matching import match
        from deepsmlm.uncertainty import FEATURES, fit_scale_table

        d = self._detections(card, raw, threshold, with_features=True)
        if d is None:
            return None
        xyz, sigma = d["xyz"].cpu().numpy(), d["sigma"].cpu().numpy()
        m = match(truth["frame"], truth["xyz_nm"], d["t"].cpu().numpy(), xyz, **match_kwargs)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios = (xyz[m.pred_index] - truth["xyz_nm"][m.gt_index]) / sigma[m.pred_index]
        table = fit_scale_table(ratios[:, :self.uncertainty_columns(card)],
                                {k: d[k].cpu().numpy()[m.pred_index] for k in FEATURES})
        if table is not None:
            card.settings.pop("sigma_scale", None)
            card.settings["sigma_calibration"] = table
        return table

    def tuning_match(self, card) -> dict:
        """3D: the Hungarian assignment within a 100 nm sphere (DeepSTORM3D's reporting);
        2D: the SMLM-Challenge greedy 250 nm, lateral only (a 2D method reports no depth,
        however deep the emitters lie)."""
        if card.settings["localize_z"]:
            return {"method": "hungarian", "tol_xy_nm": 100.0, "tol_z_nm": 100.0,
                    "tol_3d_nm": 100.0}
        return {"tol_z_nm": float("inf")}

    def output_image(self, card, raw):
        """The detection probability (B, H, W) at camera resolution."""
        return raw[:, 0].sigmoid()

    def preview(self, card, widefield, sr, emitters, path, title: str) -> None:
        from deepsmlm.plotting import widefield_vs_sr, widefield_vs_z
        from deepsmlm.render import render_histogram

        px = card.pixel_size_nm
        if card.settings["localize_z"]:
            widefield_vs_z(widefield, emitters.xyz_nm.numpy(), px, path, title)
            return
        fine = px / 8
        h, w = widefield.shape
        img = render_histogram(emitters.xyz_nm.numpy()[:, :2], fine, (w * px, h * px))
        widefield_vs_sr(widefield, img, px, fine, path, title, method=self.name)


def _sigma_factors(settings: dict, detections: dict):
    """(K, 3) factors on the network's σ: ``sigma_calibration`` at each detection's
    features, or the constant per-axis ``sigma_scale`` of model folders written before it."""
    import torch

    from deepsmlm.uncertainty import FEATURES, scale_factors

    if "sigma_calibration" not in settings:
        return torch.tensor([list(settings.get("sigma_scale", [1.0, 1.0, 1.0]))])
    f = scale_factors(settings["sigma_calibration"],
                      {k: detections[k].cpu().numpy() for k in FEATURES}, 3)
    return torch.from_numpy(f).float()


def _z_scale(settings: dict) -> tuple[float, float]:
    lo, hi = settings["z_range_nm"]
    return 0.5 * (lo + hi), max(0.5 * (hi - lo), 1.0)


def _means(maps: dict, est: list[str], h: int, w: int):
    """Mixture means (B, H·W, D): pixel centre + offset for x, y; the estimate otherwise."""
    import torch

    from deepsmlm.losses import pixel_centres

    b = maps["p"].shape[0]
    xc, yc = pixel_centres(h, w, maps["p"].device)
    cols = []
    for name in est:
        v = maps[name].reshape(b, -1)
        cols.append(v + (xc if name == "dx" else yc if name == "dy" else 0.0))
    return torch.stack(cols, -1)


def _sigmas(maps: dict, est: list[str]):
    """Mixture σ (B, H·W, D)."""
    import torch

    b = maps["p"].shape[0]
    return torch.stack([maps[f"s_{n}"].reshape(b, -1) for n in est], -1)
