"""Mask-file conventions: our PSF against an independent reference rendering (issue 18).

    python benchmarks/mask_conventions.py [--data ../shared/data] [--json out.json]

For each DeepSTORM3D mask file (../shared/data/deepstorm3d) and its set-up (A or B of
../shared/data/README.md) at 9 depths over its z range, the reference renders the PSF from
the README's facts alone: the camera image is the centred, orthonormal *forward* FFT of the
N×N pupil field, one FFT sample per camera pixel (pupil sample spacing 1/(N·Δ_px)), with
the support cut at NA_eff = n_water and the phases exp(i·k_water·z·cosθ_water) and
exp(−i·k_oil·NFP·cosθ_oil). Our PSF comes from ``deepsmlm psf`` (the shipped pupil grid,
the mask resampled onto it), emitter at the centre of the central pixel. Printed per mask and
depth: the Pearson correlation of the two patches, the centroid difference (ours − reference,
px), the same correlation against the *inverse*-FFT rendering (the 180°-turned PSF that the
code rendered before issue 18), and the fraction of the emitter's light inside our patch
(patch_px of the experiment; 101 px also shown). Drives the library through the CLI only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

SETUPS = {  # README facts: λ, NFP, z range [nm]; NA 1.45, oil 1.518 → water 1.33, 110 nm
    "A": dict(wavelength_nm=580.0, focus_nm=4500.0, z_nm=(2000.0, 6000.0)),
    "B": dict(wavelength_nm=670.0, focus_nm=1500.0, z_nm=(0.0, 4000.0)),
}
MASKS = [  # file, key, set-up, pupil radius in file px (README)
    ("mask_tetrapod.mat", "mask_tetra_model", "A", 82.9),
    ("mask_learned.mat", "mask_circ_model", "A", 82.9),
    ("mask_tetrapod_printed.mat", "mask_tetra_reut", "B", 44.3),
]
NA, N_OIL, N_WATER, PIXEL_NM = 1.45, 1.518, 1.33, 110.0


def reference_psf(mask: np.ndarray, wavelength_nm: float, z_nm: float, focus_nm: float,
                  forward: bool = True) -> np.ndarray:
    """|centred orthonormal FFT of the N×N pupil field|², normalised to 1 photon (N, N)."""
    n = mask.shape[0]
    k = (np.arange(n) - (n - 1) / 2) / (n * PIXEL_NM)  # cycles/nm, one FFT sample per pixel
    kx, ky = np.meshgrid(k, k)  # columns along kx, rows along ky
    s2 = (kx ** 2 + ky ** 2) * wavelength_nm ** 2  # sin²θ·n²
    support = s2 <= min(NA, N_WATER) ** 2
    cos_w = np.sqrt(np.clip(1 - s2 / N_WATER ** 2, 0, None))
    cos_o = np.sqrt(np.clip(1 - s2 / N_OIL ** 2, 0, None))
    phase = (mask + 2 * np.pi / wavelength_nm * (N_WATER * z_nm * cos_w
                                                 - N_OIL * focus_nm * cos_o))
    pupil = support * np.exp(1j * phase)
    fft = np.fft.fft2 if forward else np.fft.ifft2
    field = np.fft.fftshift(fft(np.fft.ifftshift(pupil), norm="ortho"))
    return np.abs(field) ** 2 / (np.abs(pupil) ** 2).sum()


def centroid_px(img: np.ndarray) -> np.ndarray:
    """(x, y) intensity centroid relative to the central pixel, px."""
    c = img.shape[0] // 2
    yy, xx = np.mgrid[:img.shape[0], :img.shape[1]] - c
    return np.array([(img * xx).sum(), (img * yy).sum()]) / img.sum()


def crop(img: np.ndarray, size: int) -> np.ndarray:
    c, h = img.shape[0] // 2, size // 2
    return img[c - h:c + h + 1, c - h:c + h + 1]


def _outside(n: int, size: int) -> np.ndarray:
    m = np.ones((n, n))
    c, h = n // 2, size // 2
    m[c - h:c + h + 1, c - h:c + h + 1] = 0
    return m


def our_psf(exp: dict, z: np.ndarray, size_px: int, work: Path) -> np.ndarray:
    import tifffile

    cfg = work / "exp.yaml"
    cfg.write_text(yaml.safe_dump(exp))
    out = work / f"psf{size_px}"
    zr = f"{z[0]:.0f}:{z[-1]:.0f}:{z[1] - z[0]:.0f}"
    subprocess.run([sys.executable, "-m", "deepsmlm.cli", "psf", str(cfg), "--out", str(out),
                    f"--z-nm={zr}", "--size-px", str(size_px)], check=True,
                   stdout=subprocess.DEVNULL)
    return tifffile.imread(out / "psf.tif").astype(np.float64)


def compare(data: Path, pupil_grid_px: int = 96, patch_px: int = 61) -> list[dict]:
    from scipy.io import loadmat

    rows = []
    for fname, key, setup, radius in MASKS:
        s = SETUPS[setup]
        mask = loadmat(data / "deepstorm3d" / fname)[key].astype(np.float64)
        z = np.linspace(*s["z_nm"], 9)
        exp = {"optics": dict(wavelength_nm=s["wavelength_nm"], na=NA, n_immersion=N_OIL,
                              n_sample=N_WATER, pixel_size_nm=PIXEL_NM,
                              focus_nm=s["focus_nm"], pupil_grid_px=pupil_grid_px,
                              patch_px=patch_px,
                              mask=dict(kind="file", path=str(data / "deepstorm3d" / fname),
                                        key=key, pupil_radius_px=radius))}
        with tempfile.TemporaryDirectory() as tmp:
            ours = our_psf(exp, z, patch_px, Path(tmp))
        for i, zi in enumerate(z):
            ref_full = reference_psf(mask, s["wavelength_nm"], zi, s["focus_nm"])
            ref = crop(ref_full, patch_px)
            inv = crop(reference_psf(mask, s["wavelength_nm"], zi, s["focus_nm"], False),
                       patch_px)
            rows.append(dict(
                mask=fname, setup=setup, z_nm=float(zi),
                corr=float(np.corrcoef(ours[i].ravel(), ref.ravel())[0, 1]),
                corr_inverse_fft=float(np.corrcoef(ours[i].ravel(), inv.ravel())[0, 1]),
                dx_px=float(centroid_px(ours[i])[0] - centroid_px(ref)[0]),
                dy_px=float(centroid_px(ours[i])[1] - centroid_px(ref)[1]),
                ref_centroid_px=[round(float(v), 3) for v in centroid_px(ref)],
                energy_patch=float(ours[i].sum()),
                energy_ref_patch=float(ref.sum()),
                energy_ref_101=float(crop(ref_full, 101).sum()),
                halo_mean_per_px=float((1 - ref.sum()) / (ref_full.size - ref.size)),
                halo_max_per_px=float(np.max(ref_full * _outside(ref_full.shape[0],
                                                                 patch_px)))))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path,
                   default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--pupil-grid-px", type=int, default=96)
    p.add_argument("--patch-px", type=int, default=61)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    rows = compare(args.data, args.pupil_grid_px, args.patch_px)
    print(f"| mask | z [nm] | r (forward FFT ref.) | Δx, Δy [px] | r (inverse FFT) "
          f"| energy in {args.patch_px} px | in 101 px |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mask']} ({r['setup']}) | {r['z_nm']:.0f} | {r['corr']:.4f} "
              f"| {r['dx_px']:+.3f}, {r['dy_px']:+.3f} | {r['corr_inverse_fft']:.2f} "
              f"| {r['energy_patch']:.3f} | {r['energy_ref_101']:.3f} |")
    worst = min(r["corr"] for r in rows)
    off = max(max(abs(r["dx_px"]), abs(r["dy_px"])) for r in rows)
    for name in dict.fromkeys(r["mask"] for r in rows):
        sel = [r for r in rows if r["mask"] == name]
        print(f"{name}: light outside the {args.patch_px}-px patch per pixel: mean "
              f"{max(r['halo_mean_per_px'] for r in sel):.1e}, max "
              f"{max(r['halo_max_per_px'] for r in sel):.1e} of the emitter's photons")
    print(f"\nworst correlation {worst:.4f}; largest centroid offset {off:.3f} px; "
          f"least energy in the patch {min(r['energy_patch'] for r in rows):.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
