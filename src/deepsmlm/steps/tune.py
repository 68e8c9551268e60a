"""``deepsmlm tune``: tune a trained model's decoding again, without training it again.

Training ends by tuning, on validation frames simulated from the model's experiment, the
detection threshold, the method's decoding options (fastloc: ``decoding_options``) and the
σ calibration (``training.train.tune_threshold``). ``tune`` repeats that step: on the
model's own experiment (new validation frames: ``--frames``, ``--seed``), or on another
experiment that describes the user's microscope better — a camera, background or photon
range that differ from the training's, or a PSF measured by ``deepsmlm calibrate`` — so
that the threshold and the σ fit the frames the model will see. The network's weights and
the model folder's ``experiment.yaml`` (what it was trained on, which ``localize --refine``
fits through) are left as they are; ``model.json`` records where the tuning came from.
"""

from __future__ import annotations

from pathlib import Path

from deepsmlm.errors import UserError
from deepsmlm.steps.common import PIXEL_SIZE_TOLERANCE

# a tuning experiment's depths may exceed a 3D model's range by this much (rounding)
Z_TOLERANCE_NM = 1.0


def check_tuning_experiment(exp, card, method_name: str, source) -> None:
    """The experiment must image at the model's pixel size, train the model's method (its
    training section sets the validation patches) and, for a 3D model, place its emitters
    within the depths the model localizes."""
    px = exp.optics.pixel_size_nm
    if abs(px - card.pixel_size_nm) > PIXEL_SIZE_TOLERANCE * card.pixel_size_nm:
        raise UserError(f"{source}: pixel_size_nm {px:g} differs from the model's "
                        f"{card.pixel_size_nm:g} by more than {PIXEL_SIZE_TOLERANCE:.0%}")
    if method_name != card.method:
        raise UserError(f"{source}: its training section is for {method_name}, but the model "
                        f"is {card.method}; give it `training: {{model: {card.method}}}`")
    z_model = model_z_range_nm(card)
    lo, hi = exp.emitters.z_range_nm
    if z_model is not None and (lo < z_model[0] - Z_TOLERANCE_NM
                                or hi > z_model[1] + Z_TOLERANCE_NM):
        raise UserError(f"{source}: emitters.z_range_nm [{lo:g}, {hi:g}] reaches beyond the "
                        f"depths the model localizes, [{z_model[0]:g}, {z_model[1]:g}] nm "
                        "(it cannot report z outside them); tune on depths within them")


def model_z_range_nm(card) -> tuple[float, float] | None:
    """The depths a 3D model localizes over (its training's emitters.z_range_nm), or None for
    a model that reports no z (a 2D method, or fastloc without ``localize_z``)."""
    s = card.settings
    if "z_range_nm" not in s or not s.get("localize_z", True):
        return None
    lo, hi = s["z_range_nm"]
    return float(lo), float(hi)


def run_tune(model_dir, experiment=None, frames: int | None = None, seed: int | None = None,
             device: str = "cpu", objective: str | None = None) -> dict:
    """Tune ``model_dir``'s threshold, decoding and σ calibration on ``frames`` validation
    patches of ``experiment`` (None: the model's own, ``experiment.yaml`` in the folder;
    ``frames`` None: its ``training.tune_frames``, else ``val_frames``; ``seed`` None: the
    training's validation seed), for ``objective`` (None: its ``training.tune_objective``).
    Writes ``model.json`` and returns the tuning summary."""
    import dataclasses

    from deepsmlm.build import build_patch_sampler
    from deepsmlm.config import load_experiment
    from deepsmlm.data.datasets import fixed_batches
    from deepsmlm.inference import Predictor
    from deepsmlm.io.lock import folder_lock
    from deepsmlm.steps.common import check_device, check_number
    from deepsmlm.training.model_folder import ModelFolder
    from deepsmlm.training.train import TUNING_OBJECTIVES, tune_threshold

    device = check_device(device)
    if objective is not None and objective not in TUNING_OBJECTIVES:
        raise UserError(f"--objective must be one of {', '.join(TUNING_OBJECTIVES)}, "
                        f"got {objective!r}")
    for name, value, least in (("--frames", frames, 1), ("--seed", seed, 0)):
        check_number(name, value, at_least=least)
        if value is not None and int(value) != value:
            raise UserError(f"{name} must be a whole number, got {value}")
    folder = ModelFolder(model_dir)
    card = folder.read_trained_card()  # a UserError when there is none
    source = Path(experiment) if experiment is not None else folder.experiment_path
    if not source.is_file():
        raise UserError(f"{source} is missing (the experiment to simulate validation frames "
                        "from; give one with --experiment)")
    exp = load_experiment(source)
    check_tuning_experiment(exp, card, exp.training.model, source)
    t = exp.training
    n_frames = int(frames or t.tune_frames or t.val_frames)
    val_seed = t.seed + 1 if seed is None else int(seed)  # training validates on seed + 1
    with folder_lock(model_dir, "tune"):
        pred = Predictor.load(folder.path, device)
        batches = fixed_batches(build_patch_sampler(exp), n_frames, t.batch_size, val_seed)
        tuned_card = dataclasses.replace(pred.card, settings=dict(pred.card.settings))
        tuned = tune_threshold(pred.model, pred.normalizer, batches, tuned_card, device,
                               objective or t.tune_objective)
        tuned["tuned_on"] = {"experiment": str(source.resolve()), "frames": n_frames,
                             "seed": val_seed}
        tuned_card.threshold, tuned_card.validation = tuned["threshold"], tuned
        folder.write_card(tuned_card)
    return tuned
