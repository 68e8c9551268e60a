"""A model folder: the one type that reads and writes it.

    model.json           the model card (``ModelCard``): method, sampling, normalisation,
                         tuned threshold, the method's settings, training summary, versions
    experiment.yaml      the validated experiment the model was trained for
    weights.safetensors  the best weights (lowest validation loss)
    checkpoint/          last.safetensors: weights, optimiser, every rank's RNG state, best
                         weights, and the fit state as JSON metadata (one atomic file)
    curves.csv, curves.png

``model.json`` carries ``format_version``. Version 1 (deepsmlm 0.1.0, before methods had a
home of their own) was a flat dictionary with the method under ``kind``; it is read and
converted on load. A folder of a newer format is refused with the version it needs. No
pickles anywhere: loading a model never runs code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from deepsmlm.errors import UserError
from deepsmlm.io.tensors import load_tensors, read_json, write_json

FORMAT_VERSION = 2
_COMMON = ("method", "pixel_size_nm", "upsampling", "normalization", "settings", "threshold",
           "weights", "validation", "training", "init_model", "versions", "format_version")


@dataclass
class ModelCard:
    """What ``model.json`` says about a model.

    ``upsampling``: output pixels per camera pixel of ``pixel_size_nm`` (1 for a method at
    camera resolution); ``normalization``: ``data.normalizer.Normalizer.to_dict()``;
    ``settings``: the method's own (``Method.card_settings``); ``threshold``: the tuned
    detection threshold, None until training has finished.
    """

    method: str
    pixel_size_nm: float
    upsampling: int
    normalization: dict
    settings: dict
    threshold: float | None = None
    weights: int | None = None
    validation: dict | None = None
    training: dict | None = None
    init_model: str | None = None
    versions: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def fine_pixel_nm(self) -> float:
        """Pixel size of the network output [nm]."""
        return self.pixel_size_nm / self.upsampling

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "model.json") -> ModelCard:
        if not isinstance(d, dict):
            raise UserError(f"{source}: expected a JSON object")
        version = d.get("format_version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise UserError(f"{source}: format_version must be a whole number >= 1, got "
                            f"{version!r}")
        if version > FORMAT_VERSION:
            from deepsmlm._version import __version__

            by = d.get("versions")
            written = by.get("deepsmlm") if isinstance(by, dict) else None
            raise UserError(f"{source}: model format version {version} (written by deepsmlm "
                            f"{written or 'a newer release'}) needs a deepsmlm that reads "
                            f"format {version}; the installed deepsmlm {__version__} reads "
                            f"formats 1–{FORMAT_VERSION}: upgrade deepsmlm")
        if version == 1:
            d = _from_version_1(d)
        unknown = sorted(set(d) - set(_COMMON))
        missing = [k for k in ("method", "pixel_size_nm", "upsampling", "normalization")
                   if k not in d]
        if unknown or missing:
            raise UserError(f"{source}: " + "; ".join(
                ([f"unknown keys {unknown}"] if unknown else [])
                + ([f"missing keys {missing}"] if missing else [])))
        _check_types(d, source)
        return cls(**{**d, "settings": dict(d.get("settings") or {})})


def _check_types(d: dict, source: str) -> None:
    """Each key of a model card has the type its readers expect (a UserError otherwise)."""
    import math

    def number(v) -> bool:
        return (isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v))

    checks = {
        "method": (lambda v: isinstance(v, str), "a method name"),
        "pixel_size_nm": (lambda v: number(v) and v > 0, "a number > 0"),
        "upsampling": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                       "a whole number >= 1"),
        "normalization": (lambda v: isinstance(v, dict)
                          and isinstance(v.get("camera"), dict), "an object with 'camera'"),
        "settings": (lambda v: v is None or isinstance(v, dict), "an object"),
        "threshold": (lambda v: v is None or number(v), "a number or null"),
        "weights": (lambda v: v is None or isinstance(v, int), "a whole number or null"),
        "validation": (lambda v: v is None or isinstance(v, dict), "an object or null"),
        "training": (lambda v: v is None or isinstance(v, dict), "an object or null"),
        "init_model": (lambda v: v is None or isinstance(v, str), "a path or null"),
        "versions": (lambda v: isinstance(v, dict), "an object"),
    }
    for key, (ok, what) in checks.items():
        if key in d and not ok(d[key]):
            raise UserError(f"{source}: {key!r} must be {what}, got {d[key]!r:.80}")


def _from_version_1(d: dict) -> dict:
    """deepsmlm 0.1.0's flat model.json → version 2 (the method's keys go to settings)."""
    flat = dict(d)
    flat.pop("fine_pixel_nm", None)  # derived now
    out = {"method": flat.pop("kind", None), "format_version": FORMAT_VERSION}
    for key in _COMMON:
        if key in flat:
            out[key] = flat.pop(key)
    out["settings"] = flat
    return out


def versions() -> dict:
    """Versions of deepsmlm, torch, numpy and Python (recorded in the card)."""
    import platform

    import numpy
    import torch

    from deepsmlm._version import __version__

    return {"deepsmlm": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


class ModelFolder:
    """A model folder on disk (see the module docstring for its files)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    card_path = property(lambda self: self.path / "model.json")
    experiment_path = property(lambda self: self.path / "experiment.yaml")
    weights_path = property(lambda self: self.path / "weights.safetensors")

    def has_checkpoint(self) -> bool:
        return (self.path / "checkpoint").exists()

    def read_card(self) -> ModelCard:
        if not self.path.is_dir():
            raise UserError(f"model folder not found: {self.path}")
        return ModelCard.from_dict(read_json(self.card_path), str(self.card_path))

    def write_card(self, card: ModelCard) -> None:
        write_json(self.card_path, card.to_dict())

    def read_trained_card(self) -> ModelCard:
        """The card of a model that finished training (else a UserError says what to do)."""
        from deepsmlm import methods
        from deepsmlm.schema import check_card_settings

        card = self.read_card()
        method = methods.get(card.method)  # names the known methods when this one is not
        check_card_settings(method.settings, card.settings, self.card_path)
        if card.threshold is None:
            raise UserError(f"{self.path}: training did not finish (no tuned threshold); "
                            "resume it with `deepsmlm train ... --resume`")
        return card

    def read_weights(self) -> dict:
        return load_tensors(self.weights_path)

    def load_network(self, card: ModelCard):
        """The card's network with this folder's best weights (train mode untouched)."""
        from deepsmlm import methods

        net = methods.get(card.method).build_network(card)
        weights = self.read_weights()
        problem = _state_dict_mismatch(net.state_dict(), weights)
        if problem:
            raise UserError(f"{self.weights_path}: the weights do not fit the network that "
                            f"model.json describes ({problem})")
        net.load_state_dict(weights)
        return net

    def normalizer(self, card: ModelCard, camera_overrides: dict | None = None):
        """The card's input normaliser, with camera values overridden where given."""
        from deepsmlm.camera import Camera
        from deepsmlm.data.normalizer import Normalizer

        cam = dict(card.normalization["camera"])
        cam.update({k: v for k, v in (camera_overrides or {}).items() if v is not None})
        return Normalizer.from_dict(card.normalization, Camera(**cam))

    def write_experiment(self, exp) -> None:
        """``experiment.yaml``: the fully expanded experiment (``Experiment.save``)."""
        exp.save(self.experiment_path)

    def write_curves(self, history: list[dict]) -> None:
        """``curves.csv`` (one row per epoch) and ``curves.png``."""
        write_curves(history, self.path)


def _state_dict_mismatch(expected: dict, found: dict) -> str:
    """One line on how ``found`` differs from ``expected`` (names and shapes), or ''."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [k for k in expected if k in found
              and tuple(expected[k].shape) != tuple(found[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, first {missing[0]!r}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, first {unexpected[0]!r}")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape, first {k!r}: "
                     f"{tuple(found[k].shape)} in the file, {tuple(expected[k].shape)} "
                     "expected")
    return "; ".join(parts)


def write_curves(history: list[dict], out: Path) -> None:
    """Training (or design) curves of a fit: ``out/curves.csv`` and ``out/curves.png``."""
    from deepsmlm.io.atomic import atomic_write_text
    from deepsmlm.plotting import training_curves

    keys = ["epoch", "steps", "train_loss", "val_loss", "lr", "seconds"]
    lines = [",".join(keys)] + [",".join(f"{h[k]:.6g}" for k in keys) for h in history]
    atomic_write_text(Path(out) / "curves.csv", "\n".join(lines) + "\n")
    if history:
        training_curves(history, Path(out) / "curves.png")
