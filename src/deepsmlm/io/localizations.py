"""Localization tables in our CSV (ThunderSTORM-compatible header).

Columns: ``id,frame,x [nm],y [nm],z [nm],intensity [photon]`` (+ optional extras).
``frame`` is 1-based in the file (ThunderSTORM's convention) and 0-based inside;
x, y follow DESIGN §3 (origin at the top-left corner of the top-left pixel).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from deepsmlm.emitters import EmitterSet
from deepsmlm.errors import UserError

COLUMNS = ["id", "frame", "x [nm]", "y [nm]", "z [nm]", "intensity [photon]"]


def write_csv(emitters: EmitterSet, path: str | os.PathLike) -> None:
    """Write emitters as our CSV, atomically."""
    from deepsmlm.io.atomic import atomic_path

    xyz = emitters.xyz_nm.detach().cpu().double().numpy()
    table = np.column_stack([
        emitters.id.cpu().numpy(), emitters.frame.cpu().numpy() + 1,
        xyz, emitters.photons.detach().cpu().double().numpy(),
    ])
    fmt = ["%d", "%d", "%.3f", "%.3f", "%.3f", "%.2f"]
    with atomic_path(path) as tmp:
        np.savetxt(tmp, table, fmt=fmt, delimiter=",", header=",".join(COLUMNS), comments="")


def read_csv(path: str | os.PathLike) -> EmitterSet:
    """Read our CSV (or any CSV with these ThunderSTORM-style columns) into an EmitterSet."""
    import csv

    with open(path, newline="") as f:
        header = [h.strip().strip('"') for h in next(csv.reader(f), [])]
    missing = [c for c in ("frame", "x [nm]", "y [nm]") if c not in header]
    if missing:
        raise UserError(f"{path}: missing columns {missing}; header is {header}")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    col = {name: i for i, name in enumerate(header)}
    n = data.shape[0]
    z = data[:, col["z [nm]"]] if "z [nm]" in col else np.zeros(n)
    phot = data[:, col["intensity [photon]"]] if "intensity [photon]" in col else np.ones(n)
    ids = data[:, col["id"]] if "id" in col else np.arange(n)
    xyz = np.column_stack([data[:, col["x [nm]"]], data[:, col["y [nm]"]], z])
    return EmitterSet(torch.from_numpy(xyz).float(), torch.from_numpy(phot).float(),
                      torch.from_numpy(data[:, col["frame"]] - 1).long(),
                      torch.from_numpy(ids).long())
