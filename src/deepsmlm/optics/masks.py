"""Phase masks on the pupil grid: clear, Zernike, and pixel maps loaded from files.

A file mask is an N×N phase [rad] with its own sampling: ``pupil_radius_px`` file pixels
correspond to the pupil edge NA_eff/λ, centred at ((N−1)/2, (N−1)/2). The radius comes from
the experiment file, else from a JSON beside the mask (``mask.json`` for ``mask.npy``), else
from the mask's non-zero support. It is resampled onto
our grid by bilinear interpolation of the complex transmission exp(i·φ), not of φ itself,
so 2π wraps in the file do not smear into wrong phases.

Orientation: row r, column c of the file is the pupil point (ky, kx) ∝ (r − (N−1)/2,
c − (N−1)/2), and the image is the forward Fourier transform of the pupil field (the
convention of the DeepSTORM3D code that made the shipped masks). A microscope that mirrors
or turns the image relative to that is matched by ``orient_phase`` (transpose, flip x,
flip y, in that order); a 180° turn is flip x + flip y.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from deepsmlm.errors import UserError
from deepsmlm.optics.pupil import PupilGrid
from deepsmlm.optics.zernike import zernike_phase


def zernike_mask(grid: PupilGrid, noll: dict[int, float]) -> torch.Tensor:
    """Σ a_j Z_j on the pupil grid [rad], float32 (n_px, n_px)."""
    rho, theta = grid.polar(torch.float64)
    return zernike_phase(noll, rho, theta).to(torch.float32)


def load_phase_array(path: str | Path, key: str | None = None) -> np.ndarray:
    """Read a 2D phase map [rad] from .npy, .mat (``key``) or .tif/.tiff."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"mask file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".mat", ".tif", ".tiff"):
        raise UserError(f"{path}: mask must be .npy, .mat or .tif, not {suffix!r}")
    try:
        arr = _read_array(path, suffix, key)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 — numpy/scipy/tifffile raise many types on bad bytes
        raise UserError(f"{path}: cannot read the mask file ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:160]})") from None
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise UserError(f"{path}: mask must be a 2D numeric phase map, got {arr.dtype} "
                        f"values of shape {arr.shape}")
    if arr.ndim != 2:
        raise UserError(f"{path}: mask must be a 2D numeric phase map, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise UserError(f"{path}: mask contains NaN or inf")
    return arr


def _read_array(path: Path, suffix: str, key: str | None):
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".mat":
        from scipy.io import loadmat

        data = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
        if key is None:
            if len(data) != 1:
                raise UserError(f"{path}: several arrays {sorted(data)}; set mask.key")
            key = next(iter(data))
        if key not in data:
            raise UserError(f"{path}: no key {key!r}; it holds {sorted(data)}")
        return data[key]
    import tifffile

    return tifffile.imread(path)


def sidecar_pupil_radius_px(path: str | Path) -> float | None:
    """``pupil_radius_px`` from the JSON beside a mask file (as ``deepsmlm design`` writes
    it: mask.npy + mask.json), or None when there is none."""
    import json

    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return None
    try:
        value = json.loads(side.read_text()).get("pupil_radius_px")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise UserError(f"{side}: not a JSON object with pupil_radius_px") from None
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise UserError(f"{side}: pupil_radius_px must be a positive number, got {value!r}")
    return float(value)


def estimate_pupil_radius_px(phase: np.ndarray) -> float:
    """Radius of the mask's non-zero support, sqrt(area/π), in file pixels."""
    support = phase != 0
    if support.mean() > 0.95 or support.sum() < 16:
        raise UserError("cannot infer the pupil radius from the mask support; "
                        "set mask.pupil_radius_px")
    return math.sqrt(support.sum() / math.pi)


def orient_phase(phase: np.ndarray, flip_x: bool = False, flip_y: bool = False,
                 transpose: bool = False) -> np.ndarray:
    """The file phase re-oriented before resampling: transpose, then flip x, then flip y.

    ``transpose`` swaps kx and ky (rows ↔ columns); ``flip_x`` reverses the columns
    (kx → −kx), which mirrors the PSF in x (X → −X); ``flip_y`` reverses the rows
    (ky → −ky), mirroring it in y. The flips are about the centre (N−1)/2, so they are
    exact on odd and even grids. Both flips together turn the PSF by 180°.
    """
    out = np.asarray(phase)
    if transpose:
        out = out.T
    if flip_x:
        out = out[:, ::-1]
    if flip_y:
        out = out[::-1, :]
    return np.ascontiguousarray(out)


def resample_phase(phase: np.ndarray, pupil_radius_px: float, grid: PupilGrid) -> torch.Tensor:
    """Resample a file phase map onto ``grid`` [rad], float32 (n_px, n_px).

    Interpolates exp(i·φ) bilinearly and takes its angle, so wrapped phases stay exact.
    """
    if phase.shape[0] != phase.shape[1]:
        raise UserError(f"mask must be square, got shape {phase.shape}")
    field = torch.from_numpy(np.exp(1j * phase))
    img = torch.stack([field.real, field.imag])[None].to(torch.float64)  # (1, 2, N, N)
    out = _sample_on_grid(img, pupil_radius_px, grid)
    return torch.atan2(out[1], out[0]).to(torch.float32)


def _sample_on_grid(img: torch.Tensor, pupil_radius_px: float, grid: PupilGrid
                    ) -> torch.Tensor:
    """Bilinear samples of file maps (1, C, N, N) at the pupil grid's points (C, n, n): file
    pixel (N−1)/2 + k/k_max·radius along each axis; zero outside the file."""
    n_file = img.shape[-1]
    k = grid.k_1d(torch.float64) / grid.k_max  # normalised pupil coordinate
    pos_px = (n_file - 1) / 2.0 + k * pupil_radius_px  # file pixel coordinates
    norm = 2.0 * pos_px / (n_file - 1) - 1.0  # align_corners=True convention
    gy, gx = torch.meshgrid(norm, norm, indexing="ij")
    sample_grid = torch.stack([gx, gy], dim=-1)[None]
    return F.grid_sample(img, sample_grid, mode="bilinear", padding_mode="zeros",
                         align_corners=True)[0]


def resample_amplitude(amplitude: np.ndarray, pupil_radius_px: float, grid: PupilGrid
                       ) -> torch.Tensor:
    """Resample a pupil transmission map (same sampling rules as a phase map) onto ``grid``
    by bilinear interpolation; points outside the file read 1 (no change). float32."""
    if amplitude.shape[0] != amplitude.shape[1]:
        raise UserError(f"pupil amplitude must be square, got shape {amplitude.shape}")
    if (amplitude < 0).any():
        raise UserError("pupil amplitude must not be negative")
    img = torch.from_numpy(amplitude.astype(np.float64) - 1.0)[None, None]
    return (_sample_on_grid(img, pupil_radius_px, grid)[0] + 1.0).to(torch.float32)
