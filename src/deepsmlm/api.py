"""The package's steps as plain Python functions (the CLI is a thin layer over these).

>>> from deepsmlm import api
>>> exp = api.load_experiment("configs/2d-dense.yaml")          # doctest: +SKIP
>>> movie = api.simulate(exp, n_frames=10, seed=0)              # doctest: +SKIP
>>> api.run_train("configs/2d-dense.yaml", "model/", max_minutes=5)  # doctest: +SKIP
"""

from __future__ import annotations

from deepsmlm.steps.calibrate import run_calibrate
from deepsmlm.steps.common import as_experiment, builtin_config, default_z_nm
from deepsmlm.steps.common import load_experiment as load_experiment
from deepsmlm.steps.crlb import crlb_table, run_crlb
from deepsmlm.steps.demo import run_demo
from deepsmlm.steps.design import run_design
from deepsmlm.steps.estimate import run_estimate
from deepsmlm.steps.evaluate import format_report, run_evaluate
from deepsmlm.steps.frc import run_frc
from deepsmlm.steps.localize import run_localize
from deepsmlm.steps.psf import psf_stack, run_psf
from deepsmlm.steps.render import run_render
from deepsmlm.steps.simulate import Movie, run_simulate, simulate, write_movie
from deepsmlm.steps.train import run_train

__all__ = ["Movie", "as_experiment", "builtin_config", "crlb_table", "default_z_nm",
           "format_report", "load_experiment", "psf_stack", "run_calibrate", "run_crlb", "run_demo",
           "run_design", "run_estimate", "run_evaluate", "run_frc", "run_localize", "run_psf",
           "run_render", "run_simulate", "run_train", "simulate", "write_movie"]
