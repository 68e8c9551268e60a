"""Shared fixtures. Third-party data in ../shared/data is optional: tests that use it skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepsmlm.config import experiment_from_dict

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def shared_file(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"third-party data not present: {path}")
    return path


def make_experiment(**sections):
    """An experiment from keyword sections, e.g. make_experiment(optics={...})."""
    return experiment_from_dict(sections)


# A matched-index, clear-aperture microscope used by several physics tests.
MATCHED = dict(wavelength_nm=600.0, na=1.4, n_immersion=1.518, n_sample=1.518)


def tiny_fastloc(density_per_um2: float = 0.6, **training) -> dict:
    """The smallest fastloc experiment (32×32 frames, Gaussian PSF, width-8 network) as a
    dict; ``training`` keys override its training section (steps, epochs, checkpoints)."""
    return {"frame": {"height_px": 32, "width_px": 32}, "optics": {"psf": "gaussian"},
            "emitters": {"density_per_um2": density_per_um2, "z_range_nm": [0, 0],
                         "photons": {"lo": 2000, "hi": 4000}},
            "background": {"photons_per_px": [20, 20]},
            "training": {"model": "fastloc", "width": 8, "seed": 3, "patch_px": 16,
                         "batch_size": 4, "val_frames": 8, "tune_frames": 16, **training}}
