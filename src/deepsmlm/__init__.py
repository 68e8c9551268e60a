"""deepsmlm: deep-learning single-molecule localization microscopy at high density.

Light to import; heavy modules load on first use.

>>> import deepsmlm
>>> exp = deepsmlm.load_experiment("configs/2d-dense.yaml")   # doctest: +SKIP
>>> movie = deepsmlm.simulate(exp, n_frames=10, seed=0)        # doctest: +SKIP
"""

from __future__ import annotations

from deepsmlm._version import __version__
from deepsmlm.errors import UserError

__all__ = ["__version__", "load_experiment", "simulate", "psf_stack", "UserError"]


def __getattr__(name: str):
    if name in ("load_experiment", "simulate", "psf_stack"):
        from deepsmlm import api

        return getattr(api, name)
    raise AttributeError(f"module 'deepsmlm' has no attribute {name!r}")
