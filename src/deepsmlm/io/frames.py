"""Frame stacks as TIFF: written atomically with the pixel size in the resolution tags.

Stacks are ImageJ hyperstacks (T×H×W) so Fiji, napari and tifffile read the pixel size.
"""

from __future__ import annotations

import os

import numpy as np


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

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        tag = page.tags.get("XResolution")
        if tag is None:
            return None
        num, den = tag.value
        if num == 0:
            return None
        per_unit = num / den
        unit = (tif.imagej_metadata or {}).get("unit", "")
        if unit in ("um", "micron", "µm", "\\u00B5m"):
            return 1000.0 / per_unit
        res_unit = page.tags.get("ResolutionUnit")
        if res_unit is not None and int(res_unit.value) == 3:  # centimetre
            return 1e7 / per_unit
        return None
