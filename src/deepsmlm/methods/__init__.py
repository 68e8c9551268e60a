"""The localization methods and their registry: the one place a method registers.

>>> from deepsmlm import methods
>>> methods.names()
('deepstorm', 'deepstorm3d', 'fastloc', 'multicolor')
>>> methods.get("fastloc").value_column
'intensity [photon]'
"""

from __future__ import annotations

from deepsmlm.errors import UserError
from deepsmlm.methods.base import Method, TrainingSection
from deepsmlm.methods.deepstorm import DeepSTORM
from deepsmlm.methods.deepstorm3d import DeepSTORM3D
from deepsmlm.methods.fastloc import FastLoc
from deepsmlm.methods.multicolor import Multicolor

REGISTRY: dict[str, Method] = {m.name: m for m in (DeepSTORM(), DeepSTORM3D(), FastLoc(),
                                                      Multicolor())}
# ``training.model`` when an experiment file does not name one: the camera-resolution
# localizer, which beats Deep-STORM in 2D at every density measured and trains in minutes
# on a CPU (docs/benchmarks.md, "fastloc"). 3D configs name their method.
DEFAULT = "fastloc"


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> Method:
    """The registered method called ``name`` (a UserError names the known ones)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown method {name!r}; known: {', '.join(REGISTRY)}") from None


def sections() -> tuple[type[TrainingSection], ...]:
    """The training sections of all methods (the experiment file's tagged union)."""
    return tuple(m.section for m in REGISTRY.values())
