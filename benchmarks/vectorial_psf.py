"""Vectorial vs scalar pupil PSF at NA 1.49: in-focus FWHM and peak, x–z sections, speed.

    OMP_NUM_THREADS=1 python benchmarks/vectorial_psf.py [--out docs/images] [--threads 1]

Prints the in-focus numbers (oil-matched sample n = 1.518, and water n = 1.33 with the
pupil cut at the critical angle), the fraction of light inside a patch, and the time of
``patches`` for 64 emitters (pupil grid 64, patch 31) with and without the backward pass;
writes ``vectorial_vs_scalar.png`` (x–z sections over ±1 µm around the focus).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, matmul_gflops

from deepsmlm.optics.psf import PupilPSF
from deepsmlm.optics.pupil import PupilGrid
from deepsmlm.optics.vectorial import VectorialPSF

LAM, NA, N_IMM = 600.0, 1.49, 1.518


def fwhm_nm(profile: np.ndarray, step: float) -> float:
    half = profile.max() / 2
    above = np.nonzero(profile >= half)[0]
    lo, hi = above[0], above[-1]
    left = lo - 1 + (half - profile[lo - 1]) / (profile[lo] - profile[lo - 1])
    right = hi + (profile[hi] - half) / (profile[hi] - profile[hi + 1])
    return float((right - left) * step)


def models(n_sample: float, focus_nm: float, pixel: float, patch: int, grid_px: int = 128):
    grid = PupilGrid(grid_px, LAM, min(NA, n_sample))
    args = (grid, n_sample, N_IMM, focus_nm, pixel, patch)
    return PupilPSF(*args), VectorialPSF(*args)


def images(psf, z_nm: np.ndarray) -> np.ndarray:
    """Images (Z, P, P) of one photon at the centre of a pixel, at depths z_nm."""
    c = (psf.patch_px // 2 + 0.5) * psf.pixel_size_nm
    xyz = torch.tensor([[c, c, float(z)] for z in z_nm])
    with torch.no_grad():
        return psf.patches(xyz, torch.ones(len(z_nm)))[0].double().numpy()


def in_focus_table() -> list[dict]:
    rows = []
    for n_s in (1.518, 1.33):
        scalar, vector = models(n_s, 0.0, 5.0, 161)
        for name, psf in (("scalar", scalar), ("vectorial", vector)):
            img = images(psf, np.array([0.0]))[0]
            c = img.shape[0] // 2
            rows.append(dict(n_sample=n_s, model=name, fwhm_nm=fwhm_nm(img[c], 5.0),
                             fwhm_lambda_na=fwhm_nm(img[c], 5.0) * min(NA, n_s) / LAM,
                             peak_per_um2=float(img.max()) / 25e-6))
    return rows


def patch_fraction() -> list[dict]:
    rows = []
    for n_s in (1.518, 1.33):
        for side_um, pixel, patch in ((4.0, 100.0, 41), (8.0, 100.0, 81), (16.0, 80.0, 201)):
            scalar, vector = models(n_s, 0.0, pixel, patch)
            rows.append(dict(n_sample=n_s, side_um=side_um,
                             scalar=float(images(scalar, np.array([0.0]))[0].sum()),
                             vectorial=float(images(vector, np.array([0.0]))[0].sum())))
    return rows


def timing(threads: int) -> dict:
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    xyz = torch.rand(64, 3, generator=gen) * torch.tensor([3000.0, 3000.0, 1000.0])
    photons = torch.full((64,), 1000.0)
    out = {}
    for name, cls in (("scalar", PupilPSF), ("vectorial", VectorialPSF)):
        psf = cls(PupilGrid(64, 680.0, 1.33), 1.33, N_IMM, 0.0, 100.0, 31)
        for grad in (False, True):
            psf.set_mask_phase(torch.zeros(64, 64), learnable=grad)
            times = []
            for _ in range(25):
                t = time.perf_counter()
                vals, _ = psf.patches(xyz, photons)
                if grad:
                    vals.sum().backward()
                times.append(time.perf_counter() - t)
            out[f"{name}_{'fwd+bwd' if grad else 'fwd'}_ms"] = 1e3 * float(np.median(times[5:]))
    out["ratio_fwd"] = out["vectorial_fwd_ms"] / out["scalar_fwd_ms"]
    out["ratio_fwd+bwd"] = out["vectorial_fwd+bwd_ms"] / out["scalar_fwd+bwd_ms"]
    out["matmul_gflops"] = matmul_gflops()
    return out


def xz_figure(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pixel, patch = 20.0, 101
    cases = [(1.518, 0.0, np.arange(-1000.0, 1001.0, 20.0), "oil-matched, n = 1.518"),
             (1.33, 1000.0, np.arange(0.0, 2001.0, 20.0),
              "water n = 1.33, focus_nm = 1000 (NA cut at 1.33)")]
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.2), constrained_layout=True)
    half = patch // 2 * pixel / 1000
    for row, (n_s, focus, z, title) in enumerate(cases):
        scalar, vector = models(n_s, focus, pixel, patch)
        s, v = images(scalar, z), images(vector, z)
        c = patch // 2
        top = s[:, c].max()
        for col, (name, st) in enumerate((("scalar", s), ("vectorial", v))):
            ax = axes[row, col]
            ax.imshow(np.sqrt(st[:, c] / top), origin="lower", cmap="magma", vmin=0, vmax=1,
                      extent=(-half, half, z[0] / 1000, z[-1] / 1000), aspect="auto")
            ax.set_title(f"{name}: {title}", fontsize=9)
            ax.set_xlabel("x [µm]")
            ax.set_ylabel("z (depth) [µm]")
        ax = axes[row, 2]
        best = int(np.argmax(v.max(axis=(1, 2))))
        xs = (np.arange(patch) - c) * pixel
        for name, st, style in (("scalar", s, "-"), ("vectorial", v, "--")):
            k = int(np.argmax(st.max(axis=(1, 2))))
            ax.plot(xs, st[k, c] / pixel ** 2 * 1e6, style,
                    label=f"{name}, z = {z[k]:.0f} nm, FWHM {fwhm_nm(st[k, c], pixel):.0f} nm")
        ax.set_xlim(-800, 800)
        ax.set_xlabel("x [nm]")
        ax.set_ylabel("photons / µm² (1 photon)")
        ax.set_title(f"sharpest plane (vectorial: z = {z[best]:.0f} nm)", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(f"Scalar vs vectorial (freely rotating dipole) PSF, NA {NA}, λ {LAM:.0f} nm, "
                 "x–z sections (√ intensity, common scale per row)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "docs" / "images"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("in focus, NA 1.49, λ 600 nm, 5 nm sampling:")
    for r in in_focus_table():
        print(f"  n_sample {r['n_sample']:.3f} {r['model']:9s} FWHM {r['fwhm_nm']:6.1f} nm "
              f"({r['fwhm_lambda_na']:.3f} λ/NA_eff)  peak {r['peak_per_um2']:.2f} /µm²")
    print("fraction of the photons inside a square patch (in focus):")
    for r in patch_fraction():
        print(f"  n_sample {r['n_sample']:.3f} {r['side_um']:4.0f} µm  scalar {r['scalar']:.4f}"
              f"  vectorial {r['vectorial']:.4f}")
    t = timing(args.threads)
    print(f"patches, 64 emitters, pupil grid 64, patch 31, {args.threads} thread(s):")
    for k, v in t.items():
        print(f"  {k}: {v:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    xz_figure(out / "vectorial_vs_scalar.png")
    print(f"wrote {out / 'vectorial_vs_scalar.png'}")


if __name__ == "__main__":
    main()
