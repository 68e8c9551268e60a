"""Movies as users have them, opened lazily as one T×H×W ``Stack``.

- one TIFF / OME-TIFF / ImageJ hyperstack file (``io.frames.read_stack``, memory-mapped);
- a TIFF series: a folder of ``.tif``/``.tiff`` files, or a glob pattern (``run/*.tif``),
  one file per frame or per block of frames (as Micro-Manager writes them), in natural
  order (``img_2`` before ``img_10``);
- a Zarr array (``movie.zarr``; in a group, its only array or the full-resolution level of
  an OME-Zarr image).

Frames are read only when asked for (``Stack.data[t0:t1]``), so memory is bounded by the
chunk a caller reads, whatever the movie's length. The pixel size comes from the metadata
when there is one (TIFF resolution tags, OME ``PhysicalSizeX``, OME-Zarr scale).
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import numpy as np

from deepsmlm.errors import UserError
from deepsmlm.io.frames import SUPPORTED_DTYPES, Stack, read_pixel_size_nm, read_stack

TIFF_SUFFIXES = (".tif", ".tiff")


def open_movie(path: str | os.PathLike) -> Stack:
    """The movie at ``path`` (a TIFF file, a folder or glob of TIFFs, or a Zarr array)."""
    text = str(path)
    if any(c in text for c in "*?["):
        files = sorted((Path(f) for f in glob.glob(text)), key=natural_key)
        files = [f for f in files if f.suffix.lower() in TIFF_SUFFIXES and f.is_file()]
        if not files:
            raise UserError(f"no TIFF files match {text}")
        return _series(files, text)
    path = Path(path)
    if _is_zarr(path):
        return _zarr(path)
    if path.is_dir():
        files = sorted((f for f in path.iterdir()
                        if f.suffix.lower() in TIFF_SUFFIXES and f.is_file()), key=natural_key)
        if not files:
            raise UserError(f"{path}: a folder without TIFF files (a movie is a TIFF file, a "
                            "folder or glob of TIFFs, or a Zarr array)")
        return _series(files, str(path))
    return read_stack(path)


def natural_key(path: Path) -> list:
    """Sort key putting ``img_2`` before ``img_10``."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", path.name)]


def movie_identity(stack: Stack) -> dict:
    """What tells one movie from another for ``localize --resume``: its path, shape, dtype,
    and the size and modification time of its (first and last) files."""
    files = getattr(stack.data, "files", None) or [stack.path]
    stats = []
    for f in {Path(files[0]).resolve(), Path(files[-1]).resolve()}:
        try:
            st = f.stat()
            stats.append([str(f), st.st_size, int(st.st_mtime)])
        except OSError:
            stats.append([str(f), None, None])
    return {"path": str(Path(stack.path).resolve()), "shape": list(stack.data.shape),
            "dtype": str(stack.data.dtype), "files": sorted(stats)}


# ------------------------------------------------------------------ TIFF series
class TiffSeries:
    """Several TIFF files read as one T×H×W array (``shape``, ``dtype``, slicing by frame)."""

    ndim = 3

    def __init__(self, files: list[Path]):
        import tifffile

        self.files = files
        counts, shape, dtype = [], None, None
        for f in files:
            try:
                with tifffile.TiffFile(f, is_ome=False) as tif:  # a file alone, not its OME set
                    if len(tif.series) != 1:
                        raise UserError(f"{f}: {len(tif.series)} image series in one file; a "
                                        "movie file holds one T×H×W series")
                    s = tif.series[0]
                    fshape, fdtype = tuple(d for d in s.shape if d != 1) or (1,), s.dtype
            except (tifffile.TiffFileError, ValueError, OSError, IndexError) as err:
                raise UserError(f"{f}: cannot read as TIFF ({err})") from None
            if len(fshape) == 2:
                fshape = (1, *fshape)
            if len(fshape) != 3:
                raise UserError(f"{f}: expected frames H×W or T×H×W, got shape {s.shape}")
            if shape is None:
                shape, dtype = fshape[1:], fdtype
            elif fshape[1:] != shape or fdtype != dtype:
                raise UserError(f"{f}: frames {fshape[1]}×{fshape[2]} {fdtype} differ from "
                                f"the series' {shape[0]}×{shape[1]} {dtype} ({files[0].name})")
            counts.append(fshape[0])
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        self.shape = (int(self.starts[-1]), *shape)
        self.dtype = np.dtype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if not isinstance(index, slice):
            index = slice(index, index + 1) if isinstance(index, int | np.integer) else index
        t0, t1, step = index.indices(self.shape[0])
        if step != 1:
            raise IndexError("a TIFF series is read in contiguous frame ranges")
        out = np.empty((max(t1 - t0, 0), *self.shape[1:]), self.dtype)
        for i, f in enumerate(self.files):
            a, b = max(t0, self.starts[i]), min(t1, self.starts[i + 1])
            if a < b:
                out[a - t0:b - t0] = self._read(f, a - self.starts[i], b - self.starts[i])
        return out

    def _read(self, f: Path, a: int, b: int) -> np.ndarray:
        import tifffile

        try:
            try:
                data = tifffile.memmap(f, mode="r")
                block = np.array(data.reshape(-1, *self.shape[1:])[a:b])  # a copy: unmap
                del data
                return block
            except (ValueError, OSError):  # compressed or scattered: read the series
                with tifffile.TiffFile(f, is_ome=False) as tif:
                    data = tif.series[0].asarray()
                return np.asarray(data).reshape(-1, *self.shape[1:])[a:b]
        except (tifffile.TiffFileError, ValueError, OSError, IndexError) as err:
            raise UserError(f"{f}: cannot read frames {a}..{b - 1} ({err})") from None


def _series(files: list[Path], name: str) -> Stack:
    data = TiffSeries(files)
    _check(data, name)
    sizes = {read_pixel_size_nm(f) for f in (files[0], files[-1])}
    return Stack(data, sizes.pop() if len(sizes) == 1 else None, Path(name), False)


# ------------------------------------------------------------------ Zarr
def _is_zarr(path: Path) -> bool:
    return path.suffix.lower() == ".zarr" or (path.is_dir() and any(
        (path / m).is_file() for m in (".zarray", ".zgroup", "zarr.json")))


def _zarr(path: Path) -> Stack:
    try:
        import zarr
    except ImportError:
        raise UserError(f"{path}: reading Zarr needs the zarr package "
                        "(pip install 'deepsmlm[scale]')") from None
    if not path.exists():
        raise UserError(f"movie not found: {path}")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several error types for a bad store
        raise UserError(f"{path}: cannot open as Zarr ({err})") from None
    pixel_nm = None
    if not hasattr(node, "shape"):  # a group
        attrs = dict(node.attrs)
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        if multiscales:
            level = multiscales[0]["datasets"][0]
            array = node[level["path"]]
            pixel_nm = _ome_zarr_pixel_nm(multiscales[0], level)
        else:
            arrays = list(node.array_keys())
            if len(arrays) != 1:
                raise UserError(f"{path}: a Zarr group with {len(arrays)} arrays "
                                f"({arrays[:5]}); give the path of the movie's array")
            array = node[arrays[0]]
    else:
        array = node
    pixel_nm = pixel_nm or array.attrs.get("pixel_size_nm")
    data = _ZarrFrames(array) if array.ndim != 3 else array
    _check(data, str(path))
    return Stack(data, None if pixel_nm is None else float(pixel_nm), path, False)


class _ZarrFrames:
    """A Zarr array with singleton axes (e.g. OME-Zarr T, C, Z, Y, X) seen as T×H×W."""

    ndim = 3

    def __init__(self, array):
        if array.ndim < 3:
            raise UserError(f"Zarr array of shape {array.shape}: expected T×H×W frames "
                            "(a single image is not a movie)")
        keep = [i for i, d in enumerate(array.shape) if d != 1]
        if len(keep) == 2:
            keep = [array.ndim - 3, *keep]
        if len(keep) != 3:
            raise UserError(f"Zarr array of shape {array.shape}: expected T×H×W frames "
                            "(other axes of length 1)")
        self.array, self.keep = array, keep
        self.shape = tuple(array.shape[i] for i in keep)
        self.dtype = array.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        sel = [0] * self.array.ndim
        for i in self.keep[1:]:
            sel[i] = slice(None)
        sel[self.keep[0]] = index
        return np.asarray(self.array[tuple(sel)])


def _ome_zarr_pixel_nm(multiscale: dict, level: dict) -> float | None:
    units = {"nanometer": 1.0, "micrometer": 1000.0, "millimeter": 1e6}
    axes = multiscale.get("axes", [])
    for t in level.get("coordinateTransformations", []):
        if t.get("type") == "scale" and axes and len(t["scale"]) == len(axes):
            ax = axes[-1]
            unit = ax.get("unit") if isinstance(ax, dict) else None
            if unit in units:
                return float(t["scale"][-1]) * units[unit]
    return None


def _check(data, name: str) -> None:
    if np.dtype(data.dtype).type not in SUPPORTED_DTYPES:
        raise UserError(f"{name}: unsupported pixel type {data.dtype} "
                        "(expected unsigned/signed integers or float32/64)")
    if data.shape[0] == 0 or data.shape[1] < 4 or data.shape[2] < 4:
        raise UserError(f"{name}: empty or tiny frames, shape {data.shape}")
