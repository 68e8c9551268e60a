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
