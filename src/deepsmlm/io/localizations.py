"""Localization tables: our CSV (ThunderSTORM-compatible), ThunderSTORM CSV, Picasso HDF5,
and the SMLM Challenge 2016 CSV. One convention inside (``EmitterSet``: nm, origin at the
top-left corner of the top-left pixel, 0-based frames); each format converts at this
boundary. Every column, unit and base is listed in ``docs/file_formats.md``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from deepsmlm.emitters import EmitterSet
from deepsmlm.errors import UserError
from deepsmlm.io.atomic import atomic_path

COLUMNS = ["id", "frame", "x [nm]", "y [nm]", "z [nm]", "intensity [photon]"]
# σ of the x, y, z estimate in nm (NaN = unknown); older files and ThunderSTORM carry one
# lateral value (x = y = it) and ThunderSTORM's 3D fits a z value too.
UNCERTAINTY_COLUMNS = ["uncertainty_x [nm]", "uncertainty_y [nm]", "uncertainty_z [nm]"]
LATERAL_UNCERTAINTY_COLUMNS = ["uncertainty [nm]", "uncertainty_xy [nm]"]
SMLM_COLUMNS = ["Ground-truth", "frame", "xnano", "ynano", "znano", "intensity"]
# Picasso's camera-pixel coordinates put the centre of pixel i at i (ours: i + 0.5).
PICASSO_OFFSET_PX = 0.5
PICASSO_DTYPE = [("frame", "<u4"), ("x", "<f4"), ("y", "<f4"), ("photons", "<f4"),
                 ("sx", "<f4"), ("sy", "<f4"), ("bg", "<f4"), ("lpx", "<f4"), ("lpy", "<f4")]


# ------------------------------------------------------------------ our CSV / ThunderSTORM
def write_csv(emitters: EmitterSet, path: str | os.PathLike,
              value_column: str = "intensity [photon]") -> None:
    """Our CSV: ``id,frame,x [nm],y [nm],z [nm],intensity [photon]`` and, when the set has
    uncertainties, ``uncertainty_x [nm],uncertainty_y [nm]`` (plus ``uncertainty_z [nm]``
    when any z value is finite); unknown values are written ``nan``. Frame 1-based (as
    ThunderSTORM). Written atomically. ``value_column`` renames the column of
    ``emitters.photons`` when it holds something else (e.g. ``confidence``)."""
    a = emitters.numpy()
    cols = [a["id"], a["frame"] + 1, a["xyz_nm"], a["photons"]]
    header = [*COLUMNS[:5], value_column]
    fmt = ["%d", "%d", "%.3f", "%.3f", "%.3f", "%.6g"]
    if "uncertainty_xyz_nm" in a:
        unc = a["uncertainty_xyz_nm"]
        k = 3 if np.isfinite(unc[:, 2]).any() else 2
        cols.append(unc[:, :k])
        header += UNCERTAINTY_COLUMNS[:k]
        fmt += ["%.3f"] * k
    table = np.column_stack(cols) if len(a["id"]) else np.zeros((0, len(header)))
    with atomic_path(path) as tmp:
        np.savetxt(tmp, table, fmt=fmt, delimiter=",", header=",".join(header), comments="")


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return [h.strip().strip('"') for h in next(csv.reader(f), [])]


def _load_table(path: Path, header: list[str], nan_ok: tuple[str, ...] = ()) -> np.ndarray:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # an empty table is fine
            data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except ValueError as err:
        raise UserError(f"{path}: not a numeric table ({err})") from None
    if data.size and data.shape[1] != len(header):
        raise UserError(f"{path}: {data.shape[1]} values per row but {len(header)} columns")
    if data.size:
        bad = ~np.isfinite(data)
        for i, name in enumerate(header):  # unknown uncertainties are NaN; never inf
            if name in nan_ok:
                bad[:, i] = np.isinf(data[:, i]) | (data[:, i] < 0)
        if bad.any():
            name = header[int(np.nonzero(bad.any(0))[0][0])]
            what = "a negative or infinite" if name in nan_ok else "NaN or inf in"
            raise UserError(f"{path}: contains {what} {name!r}")
    return data.reshape(-1, len(header))


def read_csv(path: str | os.PathLike) -> EmitterSet:
    """Our CSV or a ThunderSTORM CSV (frames 1-based, x/y/z in nm, quoted headers allowed).

    Uncertainties (σ of x, y, z in nm, NaN = unknown) come from ``uncertainty_x/_y/_z [nm]``;
    a single lateral ``uncertainty [nm]`` (older files) or ThunderSTORM's
    ``uncertainty_xy [nm]`` gives x = y = that value, ThunderSTORM's ``uncertainty_z [nm]``
    gives z.
    """
    path = Path(path)
    header = _csv_header(path)
    missing = [c for c in ("frame", "x [nm]", "y [nm]") if c not in header]
    if missing:
        raise UserError(f"{path}: missing columns {missing}; header is {header}")
    data = _load_table(path, header, (*UNCERTAINTY_COLUMNS, *LATERAL_UNCERTAINTY_COLUMNS))
    col = {name: i for i, name in enumerate(header)}
    n = len(data)

    def get(name, default):
        return data[:, col[name]] if name in col else default

    unc = None
    if any(c in col for c in (*UNCERTAINTY_COLUMNS, *LATERAL_UNCERTAINTY_COLUMNS)):
        nan = np.full(n, np.nan)
        lateral = get(LATERAL_UNCERTAINTY_COLUMNS[0], get(LATERAL_UNCERTAINTY_COLUMNS[1], nan))
        unc = np.column_stack([get(UNCERTAINTY_COLUMNS[0], lateral),
                               get(UNCERTAINTY_COLUMNS[1], lateral),
                               get(UNCERTAINTY_COLUMNS[2], nan)]).reshape(n, 3)
    xyz = np.column_stack([get("x [nm]", None), get("y [nm]", None), get("z [nm]", np.zeros(n))])
    return EmitterSet.from_numpy(xyz, get("intensity [photon]", np.ones(n)),
                                 get("frame", None).astype(np.int64) - 1,
                                 get("id", np.arange(n)).astype(np.int64), unc)


# ------------------------------------------------------------------ SMLM Challenge 2016
def write_smlm(emitters: EmitterSet, path: str | os.PathLike) -> None:
    """SMLM Challenge CSV: ``Ground-truth,frame,xnano,ynano,znano,intensity``, frame 1-based."""
    a = emitters.numpy()
    table = np.column_stack([a["id"] + 1, a["frame"] + 1, a["xyz_nm"], a["photons"]])
    with atomic_path(path) as tmp:
        np.savetxt(tmp, table.reshape(-1, 6), fmt=["%d", "%d", "%.3f", "%.3f", "%.3f", "%.2f"],
                   delimiter=",", header=",".join(SMLM_COLUMNS), comments="")


def read_smlm(path: str | os.PathLike) -> EmitterSet:
    path = Path(path)
    header = _csv_header(path)
    if header[:6] != SMLM_COLUMNS:
        raise UserError(f"{path}: expected the SMLM Challenge header {SMLM_COLUMNS}")
    data = _load_table(path, header)
    return EmitterSet.from_numpy(data[:, 2:5], data[:, 5], data[:, 1].astype(np.int64) - 1,
                                 data[:, 0].astype(np.int64) - 1)


# ------------------------------------------------------------------ Picasso HDF5
def write_picasso(emitters: EmitterSet, path: str | os.PathLike, pixel_size_nm: float,
                  frame_shape: tuple[int, int], n_frames: int | None = None,
                  sigma_nm: float | None = None, background_photons: float = 0.0,
                  default_uncertainty_nm: float = 10.0, source: str = "") -> None:
    """Picasso HDF5 (``/locs``, x/y in camera pixels, 0-based frames) + ``.yaml`` sidecar.

    ``lpx``/``lpy`` are the x/y uncertainties in camera pixels. Without them (no
    uncertainties, or NaN for a localization) they get ``default_uncertainty_nm``, as
    Picasso drops rows holding NaN; the metadata records which (``lpx nominal``,
    ``lp nominal rows``). A 3D table (``z`` column, nm) with known z uncertainties also
    gets ``lpz`` in **nm**, as Picasso's 3D fits write it; a localization without one gets
    Picasso's own stand-in, twice the mean of its lpx and lpy (``lpz nominal rows``).
    ``sx``/``sy`` get ``sigma_nm`` (default 1 px).
    """
    import h5py
    import yaml

    from deepsmlm._version import __version__

    path = Path(path)
    a = emitters.numpy()
    n = len(a["id"])
    has_z = bool(n and np.any(a["xyz_nm"][:, 2] != 0))
    unc = a.get("uncertainty_xyz_nm", np.full((n, 3), np.nan))
    has_lpz = bool(has_z and np.isfinite(unc[:, 2]).any())
    dtype = (PICASSO_DTYPE + ([("z", "<f4")] if has_z else [])
             + ([("lpz", "<f4")] if has_lpz else []))
    locs = np.zeros(n, dtype=dtype)
    px = float(pixel_size_nm)
    locs["frame"] = a["frame"]
    locs["x"] = a["xyz_nm"][:, 0] / px - PICASSO_OFFSET_PX
    locs["y"] = a["xyz_nm"][:, 1] / px - PICASSO_OFFSET_PX
    locs["photons"] = a["photons"]
    locs["sx"] = locs["sy"] = (sigma_nm / px) if sigma_nm else 1.0
    locs["bg"] = background_photons
    lateral = unc[:, :2]
    nominal_xy = ~np.isfinite(lateral).all(axis=1)
    lateral = np.where(np.isfinite(lateral), lateral, default_uncertainty_nm)
    locs["lpx"] = lateral[:, 0] / px
    locs["lpy"] = lateral[:, 1] / px
    nominal_z = 0
    if has_z:
        locs["z"] = a["xyz_nm"][:, 2]  # Picasso keeps z in nm
    if has_lpz:
        known = np.isfinite(unc[:, 2])
        nominal_z = int((~known).sum())
        locs["lpz"] = np.where(known, unc[:, 2], lateral.mean(axis=1) * 2)  # nm
    h, w = frame_shape
    frames = int(n_frames if n_frames is not None else (a["frame"].max() + 1 if n else 0))
    info = [{"Generated by": f"deepsmlm {__version__}", "File": source, "Frames": frames,
             "Height": int(h), "Width": int(w), "Pixelsize": px,
             "Byte Order": "<", "Data Type": "uint16",
             "deepsmlm": {"coordinates": "x, y in camera pixels, pixel centre at integers",
                          "lpx nominal": "uncertainty_xyz_nm" not in a,
                          "lp nominal rows": int(nominal_xy.sum()),
                          **({"lpz unit": "nm", "lpz nominal rows": nominal_z}
                             if has_lpz else {})}}]
    import json

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("locs", data=locs)
            f.create_dataset("metadata", data=json.dumps(info))
    with atomic_path(path.with_suffix(".yaml")) as tmp:
        tmp.write_text(yaml.safe_dump_all(info, sort_keys=False))


def read_picasso_info(path: str | os.PathLike) -> list[dict]:
    """Picasso metadata: the ``.yaml`` sidecar, else the embedded ``/metadata`` JSON."""
    import yaml

    path = Path(path)
    side = path.with_suffix(".yaml")
    if side.is_file():
        return [d for d in yaml.safe_load_all(side.read_text()) if d]
    import json

    import h5py

    with h5py.File(path, "r") as f:
        if "metadata" in f:
            raw = f["metadata"][()]
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    return []


def read_picasso(path: str | os.PathLike, pixel_size_nm: float | None = None) -> EmitterSet:
    """Read a Picasso HDF5 file; the pixel size comes from its metadata unless given."""
    import h5py

    path = Path(path)
    if pixel_size_nm is None:
        sizes = [d["Pixelsize"] for d in read_picasso_info(path) if "Pixelsize" in d]
        if not sizes:
            raise UserError(f"{path}: no Pixelsize in its metadata; give the pixel size")
        pixel_size_nm = float(sizes[-1])
    try:
        with h5py.File(path, "r") as f:
            if "locs" not in f:
                raise UserError(f"{path}: no /locs dataset (not a Picasso localization file)")
            locs = f["locs"][()]
    except OSError as err:
        raise UserError(f"{path}: cannot read as HDF5 ({err})") from None
    names = locs.dtype.names or ()
    for need in ("frame", "x", "y"):
        if need not in names:
            raise UserError(f"{path}: /locs lacks the field {need!r}")
    px = pixel_size_nm
    n = len(locs)
    z = locs["z"].astype(float) if "z" in names else np.zeros(n)
    xyz = np.column_stack([(locs["x"] + PICASSO_OFFSET_PX) * px,
                           (locs["y"] + PICASSO_OFFSET_PX) * px, z])
    unc = None
    if "lpx" in names and "lpy" in names:  # lpx, lpy in camera pixels, lpz in nm
        lpz = locs["lpz"].astype(float) if "lpz" in names else np.full(n, np.nan)
        unc = np.column_stack([locs["lpx"].astype(float) * px, locs["lpy"].astype(float) * px,
                               lpz]).reshape(n, 3)
    photons = locs["photons"] if "photons" in names else np.ones(n)
    return EmitterSet.from_numpy(xyz, photons, locs["frame"].astype(np.int64), None, unc)


# ------------------------------------------------------------------ any format
def detect_format(path: str | os.PathLike) -> str:
    """'picasso' (.hdf5/.h5), 'smlm' (SMLM Challenge header) or 'csv' (ours/ThunderSTORM)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"localization file not found: {path}")
    if path.suffix.lower() in (".hdf5", ".h5"):
        return "picasso"
    if path.suffix.lower() not in (".csv", ".txt"):
        raise UserError(f"{path}: unknown localization format {path.suffix!r} "
                        "(expected .csv or .hdf5)")
    header = _csv_header(path)
    if header[:1] == ["Ground-truth"] or "xnano" in header:
        return "smlm"
    if "x [nm]" in header:
        return "csv"
    raise UserError(f"{path}: unrecognised CSV header {header[:6]}")


def read_localizations(path: str | os.PathLike, pixel_size_nm: float | None = None
                       ) -> EmitterSet:
    """Read any supported localization file (format from extension and header)."""
    fmt = detect_format(path)
    if fmt == "picasso":
        return read_picasso(path, pixel_size_nm)
    return read_smlm(path) if fmt == "smlm" else read_csv(path)
