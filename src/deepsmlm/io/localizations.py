"""Localization tables: our CSV (ThunderSTORM-compatible), ThunderSTORM CSV, Picasso HDF5,
and the SMLM Challenge 2016 CSV. One convention inside (``EmitterSet``: nm, origin at the
top-left corner of the top-left pixel, 0-based frames); each format converts at this
boundary. Every column, unit and base is listed in ``docs/file_formats.md``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
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
# multicolor: the species index (into the experiment's emitters.species, the model's
# species names; −1 = unknown) and a classifier's probability of it (NaN = unknown)
SPECIES_COLUMN = "species"
SPECIES_PROBABILITY_COLUMN = "species_probability"
SMLM_COLUMNS = ["Ground-truth", "frame", "xnano", "ynano", "znano", "intensity"]
# Picasso's camera-pixel coordinates put the centre of pixel i at i (ours: i + 0.5).
PICASSO_OFFSET_PX = 0.5
PICASSO_DTYPE = [("frame", "<u4"), ("x", "<f4"), ("y", "<f4"), ("photons", "<f4"),
                 ("sx", "<f4"), ("sy", "<f4"), ("bg", "<f4"), ("lpx", "<f4"), ("lpy", "<f4")]
# Picasso drops rows holding NaN: an unknown species probability is written as this
PICASSO_UNKNOWN_PROBABILITY = -1.0


# ------------------------------------------------------------------ our CSV / ThunderSTORM
@dataclass(frozen=True)
class CsvLayout:
    """The columns of our CSV: the value column, ``n_uncertainty`` σ columns (0, 2, 3),
    and optionally ``species`` (with ``species_probability``)."""

    value_column: str = "intensity [photon]"
    n_uncertainty: int = 0
    species: bool = False
    species_probability: bool = False

    def __post_init__(self):
        if self.n_uncertainty not in (0, 2, 3):
            raise ValueError(f"n_uncertainty must be 0, 2 or 3, got {self.n_uncertainty}")
        if self.species_probability and not self.species:
            raise ValueError("a species_probability column needs the species column")

    @property
    def header(self) -> list[str]:
        return [*COLUMNS[:5], self.value_column, *UNCERTAINTY_COLUMNS[:self.n_uncertainty],
                *([SPECIES_COLUMN] if self.species else []),
                *([SPECIES_PROBABILITY_COLUMN] if self.species_probability else [])]

    @property
    def fmt(self) -> list[str]:
        return (["%d", "%d", "%.3f", "%.3f", "%.3f", "%.6g"] + ["%.3f"] * self.n_uncertainty
                + (["%d"] if self.species else [])
                + (["%.4f"] if self.species_probability else []))

    @classmethod
    def of(cls, emitters: EmitterSet, value_column: str = "intensity [photon]") -> CsvLayout:
        """The layout ``write_csv`` gives this set."""
        return cls(value_column, uncertainty_columns(emitters), emitters.species is not None,
                   emitters.species_probability is not None)

    @classmethod
    def from_header(cls, path: Path, header: list[str]) -> CsvLayout:
        """The layout of a file we wrote (``header``); anything else is a UserError."""
        n_unc = sum(c in header for c in UNCERTAINTY_COLUMNS)
        try:
            layout = cls(header[5] if len(header) > 5 else "", n_unc,
                         SPECIES_COLUMN in header, SPECIES_PROBABILITY_COLUMN in header)
        except ValueError:
            layout = None
        if layout is None or layout.header != header:
            raise UserError(f"{path}: not a table deepsmlm wrote (header {header[:10]}); "
                            "start again without --resume")
        return layout


def write_csv(emitters: EmitterSet, path: str | os.PathLike,
              value_column: str = "intensity [photon]") -> None:
    """Our CSV: ``id,frame,x [nm],y [nm],z [nm],intensity [photon]`` and, when the set has
    uncertainties, ``uncertainty_x [nm],uncertainty_y [nm]`` (plus ``uncertainty_z [nm]``
    when any z value is finite); unknown values are written ``nan``. A multicolor set adds
    ``species`` (the index into the experiment's ``emitters.species`` / the model's species
    names, −1 unknown) and, when it has them, ``species_probability``. Frame 1-based (as
    ThunderSTORM). Written atomically. ``value_column`` renames the column of
    ``emitters.photons`` when it holds something else (e.g. ``confidence``)."""
    layout = CsvLayout.of(emitters, value_column)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            f.write(",".join(layout.header) + "\n")
            f.write(_csv_rows(emitters, layout))


def uncertainty_columns(emitters: EmitterSet) -> int:
    """How many uncertainty columns our CSV gives this set: 0, 2 (x, y) or 3 (x, y, z)."""
    if emitters.uncertainty_xyz_nm is None:
        return 0
    import torch

    return 3 if bool(torch.isfinite(emitters.uncertainty_xyz_nm[:, 2]).any()) else 2


def csv_layout(value_column: str, n_uncertainty: int, species: bool = False,
               species_probability: bool = False) -> tuple[list[str], list[str]]:
    """Header and number formats of our CSV with ``n_uncertainty`` (0, 2, 3) σ columns and
    optionally the species columns."""
    layout = CsvLayout(value_column, n_uncertainty, species, species_probability)
    return layout.header, layout.fmt


def _csv_rows(emitters: EmitterSet, layout: CsvLayout) -> str:
    """The rows of ``emitters`` as CSV text in ``layout`` (no header). A set without the
    layout's species gets −1 (unknown) and a NaN probability; a set whose species the
    layout has no column for is a ValueError (they would be lost)."""
    import io

    if emitters.species is not None and not layout.species:
        raise ValueError("the table has no species column but the localizations carry "
                         "species; fix the layout with species=True")
    if emitters.species_probability is not None and not layout.species_probability:
        raise ValueError("the table has no species_probability column but the "
                         "localizations carry one; fix the layout with "
                         "species_probability=True")
    a = emitters.numpy()
    n = len(a["id"])
    if not n:
        return ""
    cols = [a["id"], a["frame"] + 1, a["xyz_nm"], a["photons"]]
    k = layout.n_uncertainty
    if k:
        unc = a.get("uncertainty_xyz_nm", np.full((n, 3), np.nan))
        cols.append(unc[:, :k])
    if layout.species:
        cols.append(a.get("species", np.full(n, -1)))
    if layout.species_probability:
        cols.append(a.get("species_probability", np.full(n, np.nan)))
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack(cols), fmt=layout.fmt, delimiter=",")
    return buf.getvalue()


class CsvAppender:
    """Our CSV written block by block, as ``localize`` finds localizations.

    The layout is fixed by the arguments given — ``n_uncertainty`` σ columns (0, 2, 3),
    ``species`` and ``species_probability`` columns (bool) — and, for those left None, by
    the first non-empty block; each block goes in one write, flushed and synced to disk,
    so the file always holds whole rows. ``size_bytes`` after a block is what a resumed run
    cuts the file back to (``resume_bytes``) before it appends again; a resumed file keeps
    the layout of its own header (arguments that contradict it are a UserError)."""

    def __init__(self, path: str | os.PathLike, value_column: str = "intensity [photon]",
                 resume_bytes: int | None = None, n_uncertainty: int | None = None,
                 species: bool | None = None, species_probability: bool | None = None):
        self.path = Path(path)
        self.value_column = value_column
        self.layout: CsvLayout | None = None
        if species is False and species_probability:
            raise ValueError("a species_probability column needs the species column")
        self._fixed = {"n_uncertainty": n_uncertainty, "species": species,
                       "species_probability": species_probability}
        self._file = None
        self.size_bytes = 0  # the file's length after the last block
        if resume_bytes:  # the file exists: cut it to its last committed block
            if not self.path.is_file() or self.path.stat().st_size < resume_bytes:
                raise UserError(f"{self.path}: the partial result is shorter than its "
                                "progress record; start again without --resume")
            self.layout = CsvLayout.from_header(self.path, _csv_header(self.path))
            for key, value in self._fixed.items():
                if value is not None and value != getattr(self.layout, key):
                    raise UserError(f"{self.path}: the partial result has other columns "
                                    f"({', '.join(self.layout.header)}) than this run "
                                    f"writes ({key} = {value}); start again without --resume")
            self._file = open(self.path, "r+", newline="")
            self._file.truncate(resume_bytes)
            self._file.seek(resume_bytes)
            self.size_bytes = resume_bytes

    @property
    def fmt(self) -> list[str] | None:
        return None if self.layout is None else self.layout.fmt

    @property
    def n_uncertainty(self) -> int | None:
        return None if self.layout is None else self.layout.n_uncertainty

    @property
    def species(self) -> bool | None:
        return None if self.layout is None else self.layout.species

    @property
    def species_probability(self) -> bool | None:
        return None if self.layout is None else self.layout.species_probability

    def append(self, emitters: EmitterSet) -> None:
        if not len(emitters) and self._file is not None:
            return
        if self._file is None:
            if not len(emitters):
                return
            first = CsvLayout.of(emitters, self.value_column)
            fixed = {k: getattr(first, k) if v is None else v for k, v in self._fixed.items()}
            self.layout = CsvLayout(self.value_column, fixed["n_uncertainty"],
                                    fixed["species"], fixed["species_probability"])
            rows = _csv_rows(emitters, self.layout)  # a block that does not fit: no file
            self._file = open(self.path, "w", newline="")
            self._file.write(",".join(self.layout.header) + "\n")
        else:
            rows = _csv_rows(emitters, self.layout)
        self._file.write(rows)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.size_bytes = self._file.tell()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


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
    gives z. A ``species`` column (whole numbers, −1 = unknown) and a
    ``species_probability`` column (in [0, 1], NaN = unknown) are read when present, in
    our files and in any other CSV that carries them.
    """
    path = Path(path)
    header = _csv_header(path)
    missing = [c for c in ("frame", "x [nm]", "y [nm]") if c not in header]
    if missing:
        raise UserError(f"{path}: missing columns {missing}; header is {header}")
    data = _load_table(path, header, (*UNCERTAINTY_COLUMNS, *LATERAL_UNCERTAINTY_COLUMNS,
                                      SPECIES_PROBABILITY_COLUMN))
    return _emitters_from_table(path, header, data)


def iter_csv(path: str | os.PathLike, rows: int = 50_000):
    """Our CSV (as ``read_csv``) in blocks of at most ``rows`` localizations: memory bounded
    by the block, whatever the file's length."""
    import itertools

    path = Path(path)
    header = _csv_header(path)
    with open(path, newline="") as f:
        next(f, None)
        while True:
            lines = list(itertools.islice(f, rows))
            if not lines:
                return
            try:
                data = np.loadtxt(lines, delimiter=",", ndmin=2)
            except ValueError as err:
                raise UserError(f"{path}: not a numeric table ({err})") from None
            if data.shape[1] != len(header):
                raise UserError(f"{path}: {data.shape[1]} values per row but {len(header)} "
                                "columns")
            yield _emitters_from_table(path, header, data)


def _emitters_from_table(path: Path, header: list[str], data: np.ndarray) -> EmitterSet:
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
    species, prob = _species_columns(path, get(SPECIES_COLUMN, None),
                                     get(SPECIES_PROBABILITY_COLUMN, None), "column")
    return EmitterSet.from_numpy(xyz, get("intensity [photon]", np.ones(n)),
                                 _frames_1_based(path, get("frame", None), "frame"),
                                 ids.astype(np.int64), unc, species, prob)


def _species_columns(path: Path, species: np.ndarray | None, prob: np.ndarray | None,
                     what: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Checked species indices (whole numbers ≥ −1, −1 = unknown) and probabilities (in
    [0, 1], NaN = unknown) of a table; anything else is a UserError naming the file."""
    if species is None:
        if prob is not None:
            raise UserError(f"{path}: a {SPECIES_PROBABILITY_COLUMN!r} {what} needs a "
                            f"{SPECIES_COLUMN!r} {what}")
        return None, None
    species = np.asarray(species, np.float64)
    bad = ~((species >= -1) & (species < 2**31) & (species == np.round(species)))
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise UserError(f"{path}: {SPECIES_COLUMN!r} must hold whole numbers >= -1 (-1 = "
                        f"unknown), localization {i + 1} has {species[i]:g}")
    if prob is not None:
        prob = np.asarray(prob, np.float64)
        bad = ~(np.isnan(prob) | ((prob >= 0) & (prob <= 1)))
        if bad.any():
            i = int(np.nonzero(bad)[0][0])
            raise UserError(f"{path}: {SPECIES_PROBABILITY_COLUMN!r} must lie in [0, 1] "
                            f"(NaN = unknown), localization {i + 1} has {prob[i]:g}")
    return species.astype(np.int64), prob


# ------------------------------------------------------------------ SMLM Challenge 2016
def write_smlm(emitters: EmitterSet, path: str | os.PathLike,
               drop_species: bool = False) -> None:
    """SMLM Challenge CSV: ``Ground-truth,frame,xnano,ynano,znano,intensity``, frame 1-based.

    The format has no species column: a set with known species (any ``species`` ≥ 0) is a
    UserError unless ``drop_species`` (a caller that knowingly writes positions only)."""
    if (not drop_species and emitters.species is not None
            and bool((emitters.species >= 0).any())):
        raise UserError(f"{path}: the SMLM Challenge CSV has no species column and these "
                        "localizations carry species; write our CSV (.csv via write_csv) or "
                        "Picasso HDF5 (.hdf5), which keep them")
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
                  default_uncertainty_nm: float = 10.0, source: str = "",
                  species_names: list[str] | None = None) -> None:
    """Picasso HDF5 (``/locs``, x/y in camera pixels, 0-based frames) + ``.yaml`` sidecar.

    ``lpx``/``lpy`` are the x/y uncertainties in camera pixels. Without them (no
    uncertainties, or NaN for a localization) they get ``default_uncertainty_nm``, as
    Picasso drops rows holding NaN; the metadata records which (``lpx nominal``,
    ``lp nominal rows``). A 3D table (``z`` column, nm) with known z uncertainties also
    gets ``lpz`` in **nm**, as Picasso's 3D fits write it; a localization without one gets
    Picasso's own stand-in, twice the mean of its lpx and lpy (``lpz nominal rows``).
    ``sx``/``sy`` get ``sigma_nm`` (default 1 px). A multicolor set adds ``species``
    (int32, −1 unknown) and, when it has them, ``species_probability`` (f4; unknown is
    written −1, as Picasso drops rows holding NaN); ``species_names`` (the names of the
    indices) go into the metadata (``deepsmlm: species: names``).
    """
    write_picasso_blocks(lambda: iter([emitters]), path, pixel_size_nm, frame_shape,
                         n_frames, sigma_nm, background_photons, default_uncertainty_nm,
                         source, species_names)


def write_picasso_blocks(blocks, path: str | os.PathLike, pixel_size_nm: float,
                         frame_shape: tuple[int, int], n_frames: int | None = None,
                         sigma_nm: float | None = None, background_photons: float = 0.0,
                         default_uncertainty_nm: float = 10.0, source: str = "",
                         species_names: list[str] | None = None) -> None:
    """``write_picasso`` of the localizations that ``blocks()`` yields block by block
    (called twice: once to find whether there is z, a z uncertainty, species, once to
    write), so memory is bounded by a block (e.g. ``lambda: iter_csv(csv_path)``)."""
    import json

    import h5py
    import yaml

    from deepsmlm._version import __version__

    path = Path(path)
    n, has_z, has_lpz, last_frame = 0, False, False, -1
    has_species = has_prob = False
    for block in blocks():
        a = block.numpy()
        n += len(a["id"])
        has_species = has_species or "species" in a
        has_prob = has_prob or "species_probability" in a
        has_z = has_z or bool(len(a["id"]) and np.any(a["xyz_nm"][:, 2] != 0))
        if "uncertainty_xyz_nm" in a:
            has_lpz = has_lpz or bool(np.isfinite(a["uncertainty_xyz_nm"][:, 2]).any())
        if len(a["id"]):
            last_frame = max(last_frame, int(a["frame"].max()))
    has_lpz = has_lpz and has_z
    dtype = (PICASSO_DTYPE + ([("z", "<f4")] if has_z else [])
             + ([("lpz", "<f4")] if has_lpz else [])
             + ([(SPECIES_COLUMN, "<i4")] if has_species else [])
             + ([(SPECIES_PROBABILITY_COLUMN, "<f4")] if has_prob else []))
    px = float(pixel_size_nm)
    nominal_xy = nominal_z = 0
    has_unc = n > 0  # every block carries uncertainties (an empty table: none)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            ds = f.create_dataset("locs", shape=(n,), dtype=dtype)
            i = 0
            for block in blocks():
                a = block.numpy()
                has_unc = has_unc and "uncertainty_xyz_nm" in a
                locs, nxy, nz = _picasso_rows(a, dtype, px, sigma_nm, background_photons,
                                              default_uncertainty_nm, has_z, has_lpz)
                ds[i:i + len(locs)] = locs
                i += len(locs)
                nominal_xy, nominal_z = nominal_xy + nxy, nominal_z + nz
            h, w = frame_shape
            frames = int(n_frames if n_frames is not None else last_frame + 1)
            info = [{"Generated by": f"deepsmlm {__version__}", "File": source,
                     "Frames": frames, "Height": int(h), "Width": int(w), "Pixelsize": px,
                     "Byte Order": "<", "Data Type": "uint16",
                     "deepsmlm": {"coordinates": "x, y in camera pixels, pixel centre at "
                                                 "integers",
                                  "lpx nominal": not has_unc,
                                  "lp nominal rows": int(nominal_xy),
                                  **({"lpz unit": "nm", "lpz nominal rows": int(nominal_z)}
                                     if has_lpz else {}),
                                  **({"species": _species_info(species_names, has_prob)}
                                     if has_species or species_names else {})}}]
            f.create_dataset("metadata", data=json.dumps(info))
    with atomic_path(path.with_suffix(".yaml")) as tmp:
        tmp.write_text(yaml.safe_dump_all(info, sort_keys=False))


def _picasso_rows(a: dict, dtype, px: float, sigma_nm, background_photons: float,
                  default_uncertainty_nm: float, has_z: bool, has_lpz: bool):
    """Picasso ``/locs`` rows of one block (``EmitterSet.numpy()``), and how many rows got
    a nominal lateral / axial uncertainty."""
    n = len(a["id"])
    unc = a.get("uncertainty_xyz_nm", np.full((n, 3), np.nan))
    locs = np.zeros(n, dtype=dtype)
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
    if SPECIES_COLUMN in locs.dtype.names:
        locs[SPECIES_COLUMN] = a.get("species", np.full(n, -1))
    if SPECIES_PROBABILITY_COLUMN in locs.dtype.names:
        prob = a.get("species_probability", np.full(n, np.nan))
        locs[SPECIES_PROBABILITY_COLUMN] = np.where(np.isfinite(prob), prob,
                                                    PICASSO_UNKNOWN_PROBABILITY)
    return locs, int(nominal_xy.sum()), nominal_z


def _species_info(names: list[str] | None, has_prob: bool) -> dict:
    """The metadata entry that says what the species fields hold."""
    return {"names": [str(v) for v in names] if names else None,
            "index": "into names; -1 = unknown",
            **({"probability unknown": PICASSO_UNKNOWN_PROBABILITY} if has_prob else {})}


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
    species = column(SPECIES_COLUMN) if SPECIES_COLUMN in names else None
    prob = None
    if SPECIES_PROBABILITY_COLUMN in names:
        prob = column(SPECIES_PROBABILITY_COLUMN)
        prob = np.where(prob == PICASSO_UNKNOWN_PROBABILITY, np.nan, prob)
    species, prob = _species_columns(path, species, prob, "field")
    return EmitterSet.from_numpy(xyz, photons, frame.astype(np.int64), None, unc, species,
                                 prob)


def read_species_names(path: str | os.PathLike) -> list[str]:
    """The species names a localization file records (Picasso metadata written by
    deepsmlm: ``deepsmlm: species: names``); empty when it records none (our CSV keeps
    the index only: the names live in the experiment file and the model card)."""
    if detect_format(path) != "picasso":
        return []
    for d in reversed(read_picasso_info(path)):
        entry = d.get("deepsmlm")
        species = entry.get("species") if isinstance(entry, dict) else None
        names = species.get("names") if isinstance(species, dict) else None
        if isinstance(names, list) and all(isinstance(v, str) for v in names):
            return list(names)
    return []


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
