"""Frame stacks as TIFF: written atomically with the pixel size in the resolution tags.

Stacks are ImageJ hyperstacks (T×H×W) so Fiji, napari and tifffile read the pixel size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepsmlm.errors import UserError

SUPPORTED_DTYPES = (np.uint8, np.uint16, np.uint32, np.int16, np.int32, np.float32,
                    np.float64)


@dataclass
class Stack:
    """A frame stack: ``data`` (T, H, W), memory-mapped when the file allows it."""

    data: np.ndarray
    pixel_size_nm: float | None
    path: Path
    memory_mapped: bool

    def __len__(self) -> int:
        return self.data.shape[0]

    def read(self, t0: int, t1: int) -> np.ndarray:
        """Frames ``t0``..``t1 - 1`` as float32; NaN/inf is an error.

        A memory-mapped file is read with plain reads, not through the map: pages touched
        through a map stay resident and count against the process, so a long movie read
        that way would grow its memory to the movie's size."""
        block = np.asarray(self._raw(t0, t1), dtype=np.float32)
        if not np.all(np.isfinite(block)):
            raise UserError(f"{self.path}: frames {t0}..{t0 + len(block) - 1} contain "
                            "NaN or inf")
        return block

    def _raw(self, t0: int, t1: int) -> np.ndarray:
        data = self.data
        if not (isinstance(data, np.memmap) and data.flags.c_contiguous):
            return data[t0:t1]
        t0, t1 = max(0, t0), min(len(self), t1)
        frame = int(np.prod(data.shape[1:]))
        return np.fromfile(self.path, dtype=data.dtype, count=max(t1 - t0, 0) * frame,
                           offset=int(data.offset) + t0 * frame * data.dtype.itemsize
                           ).reshape(-1, *data.shape[1:])

    def chunks(self, size: int):
        """Yield (t0, frames as float32) in chunks of ``size`` frames; NaN/inf is an error."""
        for t0 in range(0, len(self), size):
            yield t0, self.read(t0, t0 + size)


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def read_stack(path: str | os.PathLike, allow_single_frame: bool = False) -> Stack:
    """Open a TIFF / OME-TIFF / ImageJ stack (T, H, W); memory-mapped where possible.

    Errors (``UserError``): missing file, an empty file, not a TIFF, a truncated or corrupt
    TIFF (fewer frames or bytes than its ImageJ/OME metadata and tags promise), not a stack
    (a single 2D image unless ``allow_single_frame``; more than 3 dimensions), unsupported
    dtype, NaN in a float stack (checked here for small stacks and per chunk by
    ``Stack.chunks``).
    """
    import tifffile

    path = Path(path)
    _check_tiff_file(path)
    with _tifffile_quiet() as log:
        try:
            with tifffile.TiffFile(path) as tif:
                _check_complete(tif, path)
                damage = log.damage()
                if damage:
                    raise UserError(f"{path}: truncated or corrupt TIFF "
                                    f"({' '.join(damage.split())[:160]})")
            try:
                data = tifffile.memmap(path, mode="r")
                mapped = True
            except (ValueError, OSError):
                data = tifffile.imread(path)
                mapped = False
        except UserError:
            raise
        except MemoryError:
            raise UserError(f"{path}: corrupt TIFF (its tags ask for more memory than "
                            "there is)") from None
        except Exception as err:  # noqa: BLE001 — tifffile raises many types on bad bytes
            raise UserError(f"{path}: truncated or corrupt TIFF ({type(err).__name__}: "
                            f"{' '.join(str(err).split())[:160]})") from None
    data = np.squeeze(data) if data.ndim > 3 else data
    if data.ndim == 2:
        if not allow_single_frame:
            raise UserError(f"{path}: a single {data.shape[0]}×{data.shape[1]} image, "
                            "not a stack of frames (T×H×W)")
        data = data[None]
    if data.ndim != 3:
        raise UserError(f"{path}: expected a T×H×W stack, got shape {data.shape}")
    if data.dtype.type not in SUPPORTED_DTYPES:
        raise UserError(f"{path}: unsupported pixel type {data.dtype} "
                        "(expected unsigned/signed integers or float32/64)")
    if data.shape[0] == 0 or data.shape[1] < 4 or data.shape[2] < 4:
        raise UserError(f"{path}: empty or tiny frames, shape {data.shape}")
    if data.dtype.kind == "f" and data.nbytes < 512 * 2**20 and not np.all(np.isfinite(data)):
        raise UserError(f"{path}: contains NaN or inf")
    try:
        with _tifffile_quiet():
            pixel_size_nm = read_pixel_size_nm(path)
    except Exception as err:  # noqa: BLE001 — damaged tags: the file is corrupt
        raise UserError(f"{path}: corrupt TIFF tags ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:160]})") from None
    return Stack(data, pixel_size_nm, path, mapped)


def _check_tiff_file(path: Path) -> None:
    """A UserError unless ``path`` is a file that starts like a TIFF."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a movie (a TIFF file)")
    if not path.is_file():
        raise UserError(f"movie not found: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    if not head:
        raise UserError(f"{path}: an empty file (0 bytes), not a TIFF")
    if head not in TIFF_MAGIC:
        raise UserError(f"{path}: not a TIFF file (it starts with {head!r})")


def _check_complete(tif, path: Path) -> None:
    """A UserError when the file holds fewer frames or bytes than it promises: the frames
    its ImageJ or OME metadata counts, the bytes its image tags point at."""
    import re

    series = tif.series[0]
    frames = int(np.prod(series.shape[:-2])) if len(series.shape) > 2 else 1
    promised = None
    if tif.imagej_metadata and isinstance(tif.imagej_metadata.get("images"), int):
        promised = tif.imagej_metadata["images"]
    elif tif.ome_metadata:
        sizes = [re.search(rf'Size{a}="(\d+)"', tif.ome_metadata) for a in "TZC"]
        promised = int(np.prod([int(m.group(1)) for m in sizes if m]))
    if series.shape and series.shape[-1] in (3, 4) and len(series.shape) > 2:
        promised = None  # RGB(A) samples: the counts do not compare
    size = path.stat().st_size
    if series.dataoffset is not None:
        end = series.dataoffset + series.nbytes
    else:
        pages = list(series.pages)
        if any(p is None for p in pages):
            raise UserError(f"{path}: truncated or corrupt TIFF (pages missing)")
        end = max((o + c for p in pages for o, c in zip(p.dataoffsets, p.databytecounts)),
                  default=0)
    if promised is not None and frames < promised:
        raise UserError(f"{path}: truncated or corrupt TIFF: its metadata promises "
                        f"{promised} frames, only {frames} found ({size} bytes)")
    if end > size:
        raise UserError(f"{path}: truncated TIFF: the image data needs {end} bytes, the "
                        f"file has {size}")


class _tifffile_quiet:
    """Keep tifffile's log warnings off the terminal (a corrupt file is reported once, as a
    UserError); ``messages`` collects them."""

    def __enter__(self):
        import logging

        quiet = self

        class Collect(logging.Handler):
            def emit(self, record):
                quiet.messages.append(record.getMessage())

        self.messages: list[str] = []
        self._log = logging.getLogger("tifffile")
        self._saved = (self._log.propagate, self._log.level)
        self._handler = Collect()
        self._log.addHandler(self._handler)
        self._log.propagate = False
        self._log.setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc):
        self._log.removeHandler(self._handler)
        self._log.propagate, level = self._saved
        self._log.setLevel(level)
        return False

    def damage(self) -> str | None:
        """The first warning that says the file is cut short or corrupt, else None."""
        words = ("invalid page offset", "invalid value offset", "corrupt", "truncat")
        return next((m for m in self.messages if any(w in m for w in words)), None)


def write_stack(path: str | os.PathLike, stack: np.ndarray, pixel_size_nm: float,
                axes: str = "TYX") -> None:
    """Write a 3D stack (uint16 or float32) with the pixel size in µm in its tags."""
    import tifffile

    from deepsmlm.io.atomic import atomic_path

    stack = np.ascontiguousarray(stack)
    if stack.ndim != 3:
        raise ValueError(f"stack must be 3D ({axes}), got shape {stack.shape}")
    per_um = 1000.0 / pixel_size_nm
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, stack, imagej=True, resolution=(per_um, per_um),
                         metadata={"axes": axes, "unit": "um"})


def read_pixel_size_nm(path: str | os.PathLike) -> float | None:
    """Pixel size from a TIFF's resolution tags (ImageJ µm or cm units), None if absent."""
    import tifffile

    with _tifffile_quiet(), tifffile.TiffFile(path) as tif:
        if tif.ome_metadata:
            size = _ome_pixel_size_nm(tif.ome_metadata)
            if size is not None:
                return size
        page = tif.pages[0]
        tag = page.tags.get("XResolution")
        if tag is None:
            return None
        try:
            num, den = tag.value
            per_unit = num / den
        except (TypeError, ValueError, ZeroDivisionError):
            return None
        if not (np.isfinite(per_unit) and per_unit > 0):
            return None
        unit = (tif.imagej_metadata or {}).get("unit", "")
        if unit in ("um", "micron", "µm", "\\u00B5m"):
            return 1000.0 / per_unit
        res_unit = page.tags.get("ResolutionUnit")
        if res_unit is not None and int(res_unit.value) == 3:  # centimetre
            return 1e7 / per_unit
        return None


def _ome_pixel_size_nm(xml: str) -> float | None:
    """PhysicalSizeX of an OME-XML header in nm (unit µm unless stated)."""
    import re

    m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', xml)
    if not m:
        return None
    unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', xml)
    scale = {"nm": 1.0, "µm": 1000.0, "um": 1000.0, "mm": 1e6}.get(unit.group(1) if unit else "µm")
    try:
        size = float(m.group(1)) * scale if scale else None
    except ValueError:
        return None
    return size if size is not None and np.isfinite(size) and size > 0 else None


class StackWriter:
    """A T×H×W ImageJ TIFF written chunk by chunk, memory bounded by a chunk.

    The file (header with the pixel size, then the frames contiguous) is laid out at
    ``open`` under a temporary name; chunks go to their place by plain writes (not a
    memory map, whose pages would count against the process); ``close`` renames the file
    onto ``path``, so a stopped run never leaves a half-written file under that name.
    Use as a context manager: an error or Ctrl-C inside removes the temporary file."""

    def __init__(self, path: str | os.PathLike, n_frames: int, frame_shape: tuple[int, int],
                 dtype, pixel_size_nm: float):
        self.path = Path(path)
        self.shape = (int(n_frames), *map(int, frame_shape))
        self.dtype = np.dtype(dtype)
        self.pixel_size_nm = float(pixel_size_nm)

    def __enter__(self) -> StackWriter:
        import tifffile

        from deepsmlm.io.atomic import atomic_path

        self._atomic = atomic_path(self.path)
        self.tmp = self._atomic.__enter__()
        try:
            per_um = 1000.0 / self.pixel_size_nm
            mm = tifffile.memmap(self.tmp, shape=self.shape, dtype=self.dtype, imagej=True,
                                 resolution=(per_um, per_um),
                                 metadata={"axes": "TYX", "unit": "um"})
            self.offset = int(mm.offset)
            del mm
            self._file = open(self.tmp, "r+b")
        except BaseException as err:  # disk full, ...: as a failed atomic write
            self._atomic.__exit__(type(err), err, err.__traceback__)
            raise
        self.frame_bytes = self.shape[1] * self.shape[2] * self.dtype.itemsize
        return self

    def write(self, t0: int, frames: np.ndarray) -> None:
        """Frames ``t0``.. (T, H, W) into their place."""
        frames = np.ascontiguousarray(frames, dtype=self.dtype.newbyteorder("<"))
        if frames.shape[1:] != self.shape[1:] or t0 + len(frames) > self.shape[0]:
            raise ValueError(f"frames {frames.shape} at {t0} do not fit {self.shape}")
        self._file.seek(self.offset + t0 * self.frame_bytes)
        self._file.write(frames.tobytes())

    def __exit__(self, *exc) -> None:
        self._file.close()
        self._atomic.__exit__(*exc)
