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
    """The header of a CSV file; binary, non-UTF-8 or unreadable files are a UserError."""
    from deepsmlm.io.text import decode_text

    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 16)
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    text = decode_text(first, path, "CSV file")
    try:
        row = next(csv.reader([text.rstrip("\r\n")]), [])
    except csv.Error as err:
        raise UserError(f"{path}: not a CSV header ({err})") from None
    return [h.strip().strip('"') for h in row]


def _frames_1_based(path: Path, values: np.ndarray, column: str) -> np.ndarray:
    """A 1-based frame (or id) column as 0-based int64; anything else is a UserError."""
    bad = ~((values >= 1) & (values < 2**31) & (values == np.round(values)))
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise UserError(f"{path}: {column!r} must hold whole numbers >= 1, row {i + 2} has "
                        f"{values[i]:g}")
    return values.astype(np.int64) - 1


def _load_table(path: Path, header: list[str], nan_ok: tuple[str, ...] = ()) -> np.ndarray:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # an empty table is fine
            data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} after "
                        "the header); save the CSV file as UTF-8") from None
    except ValueError as err:
        raise UserError(f"{path}: not a numeric table "
                        f"({' '.join(str(err).split())[:200]})") from None
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
    ids = get("id", np.arange(n))
    if "id" in col and not np.all((np.abs(ids) < 2**62) & (ids == np.round(ids))):
        raise UserError(f"{path}: 'id' must hold whole numbers")
    return EmitterSet.from_numpy(xyz, get("intensity [photon]", np.ones(n)),
                                 _frames_1_based(path, get("frame", None), "frame"),
                                 ids.astype(np.int64), unc)


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
    return EmitterSet.from_numpy(data[:, 2:5], data[:, 5],
                                 _frames_1_based(path, data[:, 1], "frame"),
                                 _frames_1_based(path, data[:, 0], "Ground-truth"))


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


# What h5py raises on a damaged file (its C library's errors arrive as these types).
HDF5_ERRORS = (OSError, RuntimeError, ValueError, KeyError, TypeError, AttributeError,
               RecursionError)


def _open_hdf5(path: Path):
    """``h5py.File(path, "r")``; a file that is not HDF5 is a UserError."""
    import h5py

    try:
        return h5py.File(path, "r")
    except HDF5_ERRORS as err:
        raise UserError(f"{path}: cannot read as HDF5 "
                        f"({' '.join(str(err).split())[:160]})") from None


def read_picasso_info(path: str | os.PathLike) -> list[dict]:
    """Picasso metadata: the ``.yaml`` sidecar, else the embedded ``/metadata`` JSON.
    Only the mappings are kept; unreadable metadata is a UserError naming the file."""
    import json

    import yaml

    from deepsmlm.io.text import decode_text, read_text

    path = Path(path)
    side = path.with_suffix(".yaml")
    if side.is_file():
        try:
            docs = list(yaml.safe_load_all(read_text(side, "Picasso metadata file")))
        except (yaml.YAMLError, RecursionError) as err:
            raise UserError(f"{side}: not valid YAML "
                            f"({' '.join(str(err).split())[:160]})") from None
        return [d for d in docs if isinstance(d, dict)]
    try:
        with _open_hdf5(path) as f:
            if "metadata" not in f:
                return []
            raw = f["metadata"][()]
        text = decode_text(raw, f"{path}:/metadata", "JSON text") \
            if isinstance(raw, bytes) else str(raw)
        info = json.loads(text)
    except UserError:
        raise
    except HDF5_ERRORS as err:
        raise UserError(f"{path}: unreadable /metadata "
                        f"({' '.join(str(err).split())[:160]})") from None
    info = info if isinstance(info, list) else [info]
    return [d for d in info if isinstance(d, dict)]


def read_picasso(path: str | os.PathLike, pixel_size_nm: float | None = None) -> EmitterSet:
    """Read a Picasso HDF5 file; the pixel size comes from its metadata unless given."""
    import math

    path = Path(path)
    if pixel_size_nm is None:
        sizes = [d["Pixelsize"] for d in read_picasso_info(path) if "Pixelsize" in d]
        if not sizes:
            raise UserError(f"{path}: no Pixelsize in its metadata; give the pixel size")
        pixel_size_nm = sizes[-1]
        if (isinstance(pixel_size_nm, bool) or not isinstance(pixel_size_nm, (int, float))
                or not math.isfinite(pixel_size_nm) or pixel_size_nm <= 0):
            raise UserError(f"{path}: Pixelsize in its metadata must be a number > 0, got "
                            f"{pixel_size_nm!r}")
    try:
        with _open_hdf5(path) as f:
            if "locs" not in f:
                raise UserError(f"{path}: no /locs dataset (not a Picasso localization "
                                "file)")
            locs = np.asarray(f["locs"][()])
    except UserError:
        raise
    except HDF5_ERRORS as err:
        raise UserError(f"{path}: cannot read /locs "
                        f"({' '.join(str(err).split())[:160]})") from None
    names = locs.dtype.names or ()
    if locs.ndim != 1:
        raise UserError(f"{path}: /locs must be a table (1D), got shape {locs.shape}")
    for need in ("frame", "x", "y"):
        if need not in names:
            raise UserError(f"{path}: /locs lacks the field {need!r}")
    try:
        return _picasso_to_emitters(path, locs, float(pixel_size_nm))
    except (TypeError, ValueError) as err:
        raise UserError(f"{path}: /locs has fields of the wrong type ({err})") from None


def _picasso_to_emitters(path: Path, locs: np.ndarray, px: float) -> EmitterSet:
    names = locs.dtype.names
    n = len(locs)

    def column(name: str) -> np.ndarray:
        values = np.asarray(locs[name], dtype=np.float64)
        if values.ndim != 1:
            raise UserError(f"{path}: /locs field {name!r} is not a scalar per localization")
        return values

    frame = column("frame")
    if not np.all((frame >= 0) & (frame < 2**31) & (frame == np.round(frame))):
        raise UserError(f"{path}: /locs 'frame' must hold whole numbers >= 0")
    z = column("z") if "z" in names else np.zeros(n)
    xyz = np.column_stack([(column("x") + PICASSO_OFFSET_PX) * px,
                           (column("y") + PICASSO_OFFSET_PX) * px, z])
    if not np.all(np.isfinite(xyz)):
        raise UserError(f"{path}: /locs contains NaN or inf in x, y or z")
    unc = None
    if "lpx" in names and "lpy" in names:  # lpx, lpy in camera pixels, lpz in nm
        lpz = column("lpz") if "lpz" in names else np.full(n, np.nan)
        unc = np.column_stack([column("lpx") * px, column("lpy") * px, lpz]).reshape(n, 3)
    photons = column("photons") if "photons" in names else np.ones(n)
    return EmitterSet.from_numpy(xyz, photons, frame.astype(np.int64), None, unc)


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
