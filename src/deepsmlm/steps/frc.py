"""``deepsmlm frc``: Fourier ring correlation resolution of localizations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepsmlm.errors import UserError
from deepsmlm.io.atomic import atomic_path
from deepsmlm.io.localizations import read_localizations
from deepsmlm.steps.common import check_number, field_of, out_dir


def run_frc(locs_path, pixel_nm: float = 5.0, block_frames: int | None = None, out=None,
            experiment=None, pixel_size_nm: float | None = None):
    """FRC resolution; writes ``frc.csv`` and ``frc.png`` into ``out`` (default: beside LOCS)."""
    from deepsmlm.evaluation.frc import frc_resolution
    from deepsmlm.plotting import frc_plot

    check_number("--pixel-nm", pixel_nm, above=0.0)
    check_number("--pixel-size-nm", pixel_size_nm, above=0.0)
    locs = read_localizations(locs_path, pixel_size_nm).numpy()
    try:
        res = frc_resolution(locs["xyz_nm"][:, :2], locs["frame"], pixel_nm,
                             field_of(locs_path, experiment), block_frames)
    except ValueError as err:
        raise UserError(f"{locs_path}: {err}") from None
    out = out_dir(out) if out else Path(locs_path).parent
    stem = Path(locs_path).stem
    with atomic_path(out / f"{stem}_frc.csv") as tmp:
        np.savetxt(tmp, np.column_stack([res.q_per_nm, res.frc, res.frc_raw]), delimiter=",",
                   header="q [1/nm],frc,frc_raw", comments="", fmt="%.6g")
    frc_plot(res, out / f"{stem}_frc.png")
    return res
