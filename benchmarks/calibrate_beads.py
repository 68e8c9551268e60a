"""PSF calibration (phase retrieval) on the real DeepNebulae bead stacks, end to end.

    python benchmarks/calibrate_beads.py simulated --out bench_out/calib
    python benchmarks/calibrate_beads.py calibrate --out bench_out/calib
    python benchmarks/calibrate_beads.py train     --out bench_out/calib --minutes 25
    python benchmarks/calibrate_beads.py localize  --out bench_out/calib
    python benchmarks/calibrate_beads.py evaluate  --out bench_out/calib --docs docs/images
    python benchmarks/calibrate_beads.py mle       --out bench_out/calib  # mle-censored, jitter
    python benchmarks/calibrate_beads.py refine    --out bench_out/calib --docs docs/images

simulated: stacks simulated from known Zernike coefficients (Noll 5–21, 0.15 rad RMS each,
random signs, 3 seeds) in the bead set-up (NA 1.49, 41 planes of 100 nm, 10⁴ photons per
plane, 10 background photons per pixel, Poisson noise), on a clear pupil and on the Tetrapod
(``mask1`` as the design mask): the RMS error of the recovered coefficients, and the time.
calibrate: ``deepsmlm calibrate`` on the Tetrapod and the EDOF stack with the scalar and
the vectorial model, each from two starts: a clear pupil (nothing known about the mask) and
the published retrieval (``mask1``/``mask2`` of masks_oracle_vipr.mat, the experiment's
mask), Zernike modes only (Noll 5–45) or followed by 150 steps of a smooth pixel map;
per-plane correlation, time, and the RMS difference inside the pupil between our
retrieved phase and each published mask (wrapped, after removing piston, tilt, defocus).
train: two DeepSTORM3D models for the Tetrapod set-up with the same budget: ``design``
(configs/3d-tetrapod-beads.yaml, the published retrieval as the mask, scalar, no fit) and
``calibrated`` (the experiment.yaml that ``calibrate`` wrote: our pupil, amplitude, blur).
localize / evaluate: each model on the Tetrapod stack; per plane the bead's x, y, z
against the stage position; over the central 4 µm the axial bias per plane (z minus the
stage, after removing one constant offset) and the precision (the scatter of the plane-to-
plane steps about 100 nm, / √2), and the lateral drift; calib.json and
docs/images/calibrated_beads.png.
mle: no network — each plane of the Tetrapod stack fitted on its own (x, y, z, photons,
background; Poisson likelihood) through the calibrated pupil held fixed, the same figures
of merit: what the calibrated PSF model itself says about the bead. mle-censored: the
same with a likelihood that knows the stack's pixels below 76 counts were set to 0.
jitter: whether the bead's image moves from plane to plane (after mle; see ``jitter``).
refine: both models again with ``localize --refine`` (each localization refined by maximum
likelihood through the model's own PSF, over the square the calibration was fitted on:
``--refine-roi-px`` = calibration.json's ``crop_px``); calib_refine.json and
docs/images/calibrated_beads_refine.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from bead_stack import STEP_NM, bead_track, experiment_for

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "deepnebulae"
STACKS = {"tetrapod": ("tetrapod_bead_stack.tiff", "mask1"),
          "edof": ("edof_bead_stack.tiff", "mask2")}
MODELS = ("design", "calibrated")


def deepsmlm(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run([sys.executable, "-m", "deepsmlm.cli", *args], check=True, env=env)


def experiment(out: Path, name: str, key: str | None, psf: str) -> Path:
    """The bead set-up with mask ``key`` of the published retrieval (None: clear pupil)."""
    exp = yaml.safe_load(experiment_for("fixed", out).read_text())
    exp["optics"]["psf"] = psf
    if key is None:
        exp["optics"]["mask"] = {"kind": "clear"}
    else:
        exp["optics"]["mask"]["key"] = key
    dest = out / f"{name}_{psf}_{key or 'clear'}.yaml"
    dest.write_text(yaml.safe_dump(exp, sort_keys=False))
    return dest


def phase_difference_rms(ours: np.ndarray, ref_key: str, grid_px: int = 96) -> dict:
    """Wrapped RMS of (ours − published) inside the pupil after removing piston, tilt and
    defocus (fitted on the wrapped difference), over the pupil and over ρ ≤ 0.9."""
    from scipy.io import loadmat

    from deepsmlm.optics.masks import resample_phase
    from deepsmlm.optics.pupil import PupilGrid
    from deepsmlm.optics.zernike import zernike_basis

    grid = PupilGrid(grid_px, 605.0, 1.49)
    ref = loadmat(DATA / "masks_oracle_vipr.mat")[ref_key].astype(np.float64)
    ref_on_grid = resample_phase(ref, 92.9, grid).numpy()
    rho, theta = grid.polar()
    out = {}
    for label, inner in (("pupil", 1.0), ("rho_0.9", 0.9)):
        sel = (rho <= inner).numpy()
        basis = zernike_basis([1, 2, 3, 4], rho, theta).numpy()[:, sel].T
        d = (ours - ref_on_grid)[sel]
        c = np.zeros(4)
        for _ in range(30):
            r = np.angle(np.exp(1j * (d - basis @ c)))
            c += np.linalg.lstsq(basis, r, rcond=None)[0]
        out[label] = float(np.sqrt(np.mean(np.angle(np.exp(1j * (d - basis @ c))) ** 2)))
    return out


ARMS = [("pupil", True, 0), ("pupil", False, 0), ("vectorial", True, 0),
        ("vectorial", False, 0), ("pupil", True, 150), ("pupil", False, 150),
        ("vectorial", True, 150), ("vectorial", False, 150)]  # (psf, published start, pixels)


def calibrate(out: Path, steps: int) -> dict:
    """Every arm of ARMS on both stacks; an arm whose calibration.json exists is not rerun."""
    results = {}
    for name, (fname, key) in STACKS.items():
        for psf, published, pixels in ARMS:
            start = key if published else None
            tag = f"{name}_{psf}_{start or 'clear'}" + (f"_pixels{pixels}" if pixels else "")
            if not (out / tag / "calibration.json").is_file():
                cfg = experiment(out, name, start, psf)
                deepsmlm("calibrate", str(DATA / fname), str(cfg), "--z-step-nm", "100",
                         "--out", str(out / tag), "--crop-px", "61", "--steps", str(steps),
                         "--pixel-map-steps", str(pixels), "--quiet")
            cal = json.loads((out / tag / "calibration.json").read_text())
            phase = np.load(out / tag / "pupil_phase.npy")
            corr = np.asarray(cal["beads"][0]["correlation"])
            results[tag] = {
                "correlation_min": float(corr.min()), "correlation_mean": float(corr.mean()),
                "planes_below_0.95": int((corr < 0.95).sum()),
                "focus_plane": cal["beads"][0]["focus_plane"],
                "blur_sigma_nm": cal["blur_sigma_nm"],
                "deviance_per_px": cal["deviance_per_px"], "seconds": cal["seconds"],
                "rms_vs_mask1_rad": phase_difference_rms(phase, "mask1"),
                "rms_vs_mask2_rad": phase_difference_rms(phase, "mask2")}
            r = results[tag]
            print(f"| {tag} | {r['correlation_min']:.3f} | {r['correlation_mean']:.3f} | "
                  f"{r['planes_below_0.95']} | {r['focus_plane']:.1f} | "
                  f"{r['blur_sigma_nm']:.0f} | {r['deviance_per_px']:.1f} | "
                  f"{r['rms_vs_mask1_rad']['pupil']:.2f} / {r['rms_vs_mask1_rad']['rho_0.9']:.2f}"
                  f" | {r['rms_vs_mask2_rad']['pupil']:.2f} / "
                  f"{r['rms_vs_mask2_rad']['rho_0.9']:.2f} | {r['seconds']:.0f} |", flush=True)
    (out / "calibrate.json").write_text(json.dumps(results, indent=1))
    return results


def simulated(out: Path, seeds: int = 3, photons: float = 1e4) -> dict:
    import time

    import torch
    from scipy.io import loadmat

    from deepsmlm.calibration.pupil_fit import FitSettings, fit_pupil
    from deepsmlm.optics.masks import resample_phase, zernike_mask
    from deepsmlm.optics.psf import PupilPSF
    from deepsmlm.optics.pupil import PupilGrid

    grid = PupilGrid(64, 605.0, 1.49)
    crop, n_planes = 41, 41
    designs = {"clear": torch.zeros(64, 64),
               "tetrapod": resample_phase(loadmat(DATA / "masks_oracle_vipr.mat")["mask1"],
                                          92.9, grid)}
    results = {}
    for design, base in designs.items():
        errs, secs = [], []
        for seed in range(seeds):
            gen = torch.Generator().manual_seed(seed)
            modes = list(range(5, 22))
            true = {j: float(0.15 * torch.randn(1, generator=gen)) for j in modes}
            psf = PupilPSF(grid, 1.518, 1.518, 0.0, 110.0, crop + 16, 1,
                           mask_phase=base + zernike_mask(grid, true))
            z = -2000.0 + 100.0 * torch.arange(n_planes, dtype=torch.float32)
            xyz = torch.stack([torch.full_like(z, 20.4 * 110), torch.full_like(z, 20.7 * 110),
                               z], 1)
            with torch.no_grad():
                mu = psf.render(xyz, torch.full_like(z, photons), torch.arange(n_planes),
                                (n_planes, crop, crop)) + 10.0
            data = torch.poisson(mu.double(), gen).numpy()[None]
            fit_psf = PupilPSF(grid, 1.518, 1.518, 0.0, 110.0, crop + 16, 1)
            settings = FitSettings(z_step_nm=100.0, zernike_stages=(15, 21),
                                   steps_per_stage=200, n_starts=3, fit_blur=False,
                                   blur_sigma_nm=0.0)
            t0 = time.perf_counter()
            fit = fit_pupil(fit_psf, data, np.ones_like(data), settings, base_phase=base)
            secs.append(time.perf_counter() - t0)
            err = np.array([fit.noll.get(j, 0.0) - true[j] for j in modes])
            errs.append(float(np.sqrt(np.mean(err ** 2))))
            print(design, seed, f"RMS error {errs[-1]:.4f} rad, {secs[-1]:.0f} s", flush=True)
        results[design] = {"rms_error_rad": errs, "seconds": secs}
    (out / "simulated.json").write_text(json.dumps(results, indent=1))
    return results


def train(out: Path, minutes: float) -> None:
    cfgs = {"design": experiment_for("fixed", out),
            "calibrated": out / "tetrapod_pupil_mask1" / "experiment.yaml"}
    procs = [subprocess.Popen([sys.executable, "-m", "deepsmlm.cli", "train", str(cfgs[m]),
                               "--out", str(out / f"model_{m}"), "--max-minutes", str(minutes)],
                              env={**os.environ, "OMP_NUM_THREADS": "1"},
                              stdout=open(out / f"train_{m}.log", "w"), stderr=subprocess.STDOUT)
             for m in MODELS]
    for p in procs:
        if p.wait():
            raise SystemExit(f"training failed: see {out}/train_*.log")


def localize(out: Path, refine: bool = False) -> None:
    stack = DATA / STACKS["tetrapod"][0]
    extra = ()
    if refine:
        cal = json.loads((out / "tetrapod_pupil_mask1" / "calibration.json").read_text())
        extra = ("--refine", "--refine-roi-px", str(cal.get("crop_px", 61)))  # 61: its default
    for m in MODELS:
        deepsmlm("localize", str(out / f"model_{m}"), str(stack), "--out",
                 str(out / f"loc_{m}{'_refine' if refine else ''}"), "--quiet", *extra)


def axial_merit(track: np.ndarray, central_nm: float = 4000.0) -> dict:
    """Bias per plane (z − stage − one constant), precision (std of the steps' error / √2)
    and lateral drift over the central ``central_nm`` of the scan."""
    stage = np.arange(len(track)) * STEP_NM
    mid = 0.5 * (stage[0] + stage[-1])
    sel = np.abs(stage - mid) <= central_nm / 2 + 1e-6
    c, s = track[sel], stage[sel]
    ok = np.isfinite(c).all(1)
    err = c[ok, 2] - s[ok]
    bias = err - np.median(err)
    steps = np.diff(c[:, 2])
    steps = steps[np.isfinite(steps)]
    return {"planes_central": int(sel.sum()), "planes_found": int(ok.sum()),
            "bias_max_abs_nm": float(np.abs(bias).max()),
            "bias_rms_nm": float(np.sqrt(np.mean(bias ** 2))),
            "precision_nm": float(np.std(steps - STEP_NM) / np.sqrt(2)),
            "z_step_mean_nm": float(steps.mean()), "z_step_std_nm": float(steps.std()),
            "x_ptp_nm": float(np.ptp(c[ok, 0])), "y_ptp_nm": float(np.ptp(c[ok, 1])),
            "bias_nm": bias.round(1).tolist()}


def evaluate(out: Path, docs: Path | None, refine: bool = False) -> dict:
    n = 54
    names = [f"{m}{s}" for m in MODELS for s in (("", "_refine") if refine else ("",))]
    tracks = {m: bead_track(out / f"loc_{m}" / "localizations.csv", n) for m in names}
    result = {m: axial_merit(t) for m, t in tracks.items()}
    result["tracks_nm"] = {m: t.round(1).tolist() for m, t in tracks.items()}
    tag = "_refine" if refine else ""
    (out / f"calib{tag}.json").write_text(json.dumps(result, indent=1))
    for m in names:
        print(m, json.dumps({k: v for k, v in result[m].items() if k != "bias_nm"}))
    plot(tracks, result, (docs or out) / f"calibrated_beads{tag}.png")
    return result


def plot(tracks: dict, result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8 + 0.5 * max(0, len(tracks) - 2)))
    labels = {"design": "published retrieval (no calibration)",
              "calibrated": "calibrated by deepsmlm",
              "design_refine": "published retrieval, --refine",
              "calibrated_refine": "calibrated, --refine"}
    for i, (m, t) in enumerate(tracks.items()):
        stage = np.arange(len(t)) * STEP_NM
        mid = 0.5 * (stage[0] + stage[-1])
        sel = np.abs(stage - mid) <= 2000.0 + 1e-6
        r = result[m]
        err = t[:, 2] - stage
        err = err - np.nanmedian(err[sel])
        axes[0].plot(stage - mid, err, ".-", color=f"C{i}", ms=4, lw=0.8,
                     label=f"{labels[m]}: |bias| ≤ {r['bias_max_abs_nm']:.0f} nm, "
                           f"precision {r['precision_nm']:.0f} nm")
        for k, ax in ((0, axes[1]), (1, axes[2])):
            v = t[:, k] - np.nanmedian(t[sel, k])
            ax.plot(stage - mid, v, ".-", color=f"C{i}", ms=4, lw=0.8,
                    label=f"{labels[m]}: p-p {r['xy'[k] + '_ptp_nm']:.0f} nm")
    for ax, lab in zip(axes, ("z − stage (offset removed) [nm]", "x − median [nm]",
                              "y − median [nm]"), strict=True):
        ax.axvspan(-2000, 2000, color="0.9", zorder=0)
        ax.set_xlabel("stage position (centred) [nm]")
        ax.set_ylabel(lab)
        ax.set_ylim(-400, 400)
        ax.legend(fontsize=7, loc="best")
    axes[0].axhspan(-50, 50, color="C2", alpha=0.1, zorder=0)
    fig.suptitle("Tetrapod bead focus scan localized by DeepSTORM3D trained on the published "
                 "mask vs on the calibrated pupil (shaded: central 4 µm)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print("wrote", path)


CLIP_COUNTS = 76.0  # the stack's pixels below this were set to 0 (smallest non-zero: 76)


def mle(out: Path, tag: str = "tetrapod_pupil_mask1", crop: int = 61,
        censored: bool = False) -> dict:
    import tifffile
    import torch
    import torch.nn.functional as F

    from deepsmlm.calibration.pupil_fit import gaussian_blur, poisson_deviance
    from deepsmlm.optics.psf import PupilPSF, place_patches
    from deepsmlm.optics.pupil import PupilGrid

    cal = json.loads((out / tag / "calibration.json").read_text())
    phase = torch.from_numpy(np.load(out / tag / "pupil_phase.npy")).float()
    amp = torch.from_numpy(np.load(out / tag / "pupil_amplitude.npy")).float()
    stack = tifffile.imread(DATA / STACKS["tetrapod"][0]).astype(np.float64)
    b = cal["beads"][0]
    top, left = int(round(b["y_px"])) - crop // 2, int(round(b["x_px"])) - crop // 2
    data = torch.tensor(stack[:, top:top + crop, left:left + crop], dtype=torch.float32)
    n = len(data)
    psf = PupilPSF(PupilGrid(cal["pupil_grid_px"], 605.0, 1.49), 1.518, 1.518, 0.0, 110.0,
                   crop + 16, 1)
    xy = torch.tensor([[b["x_px"] - left, b["y_px"] - top]] * n).float().requires_grad_(True)
    z = torch.tensor(b["z_nm"]).float().requires_grad_(True)
    log_n = torch.log(torch.tensor(b["photons"])).float().requires_grad_(True)
    bg = torch.full((n,), -5.0, requires_grad=True)
    sigma = torch.tensor(cal["blur_sigma_nm"] / 110.0)
    # censored: a pixel at 0 only says "below CLIP_COUNTS"; the others are Gaussian with
    # the Poisson variance plus a fitted extra (what the subtracted background left)
    log_v0 = torch.tensor(3.0, requires_grad=True)
    opt = torch.optim.Adam([{"params": [xy], "lr": 0.05}, {"params": [z], "lr": 5.0},
                            {"params": [log_n, bg, log_v0], "lr": 0.02}])
    clipped = data <= 0
    for _ in range(400 if censored else 300):
        opt.zero_grad()
        vals, origin = psf.patches(torch.cat([xy * 110.0, z[:, None]], 1), torch.ones(n),
                                   mask_phase=phase, amplitude=amp)
        img = place_patches(gaussian_blur(vals, sigma), origin, torch.arange(n), (n, crop, crop))
        mu = torch.exp(log_n)[:, None, None] * img + F.softplus(bg)[:, None, None] + 1e-6
        if censored:
            var = mu + torch.exp(log_v0)
            seen = 0.5 * ((data - mu) ** 2 / var + torch.log(var))
            below = -torch.special.log_ndtr((CLIP_COUNTS - mu) / var.sqrt())
            loss = torch.where(clipped, below, seen).sum()
        else:
            loss = poisson_deviance(mu, data, torch.ones_like(data))
        loss.backward()
        opt.step()
    # the track in the models' frame: z = focus + height above the focal plane
    track = np.stack([(xy[:, 0].detach().numpy() + left) * 110.0,
                      (xy[:, 1].detach().numpy() + top) * 110.0,
                      z.detach().numpy()], 1).astype(np.float64)
    result = axial_merit(track)
    result["track_nm"] = track.round(1).tolist()
    name = "mle_censored" if censored else "mle"
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(name, json.dumps({k: v for k, v in result.items()
                            if k not in ("bias_nm", "track_nm")}))
    return result


def jitter(out: Path, degree: int = 5, central_nm: float = 4000.0) -> dict:
    """Does the bead's image move from plane to plane? Over the central planes, the part of
    the MLE track (mle.json) that a smooth curve in z (a polynomial of ``degree``) does not
    explain, against the same residual of the image's plain centroid (no PSF model at all):
    a PSF that changes smoothly with z can make a smooth error, not a white one, so residuals
    that correlate with the model-free centroid's are motion of the image. Also the peak to
    peak that white noise of that size gives over as many planes (the median of 10⁵ draws)."""
    import tifffile

    track = np.array(json.loads((out / "mle.json").read_text())["track_nm"])
    stack = tifffile.imread(DATA / STACKS["tetrapod"][0]).astype(np.float64)
    stage = np.arange(len(track)) * STEP_NM
    sel = np.abs(stage - 0.5 * (stage[0] + stage[-1])) <= central_nm / 2 + 1e-6
    rows, cols = np.indices(stack.shape[1:])
    total = stack.sum((1, 2))
    centroid = np.stack([(stack * cols).sum((1, 2)) / total,
                         (stack * rows).sum((1, 2)) / total], 1) * 110.0

    def residual(v):
        i = np.arange(len(v))
        return v - np.polyval(np.polyfit(i, v, degree), i)

    rng = np.random.default_rng(0)
    white = np.ptp(rng.standard_normal((100_000, int(sel.sum()))), axis=1)
    res = {"degree": degree, "planes": int(sel.sum())}
    for ax, name in enumerate("xy"):
        rm, rc = residual(track[sel, ax]), residual(centroid[sel, ax])
        res[name] = {"ptp_nm": float(np.ptp(track[sel, ax])),
                     "smooth_ptp_nm": float(np.ptp(track[sel, ax] - rm)),
                     "residual_std_nm": float(rm.std()),
                     "residual_lag1_autocorr": float(np.corrcoef(rm[:-1], rm[1:])[0, 1]),
                     "centroid_residual_std_nm": float(rc.std()),
                     "corr_with_centroid": float(np.corrcoef(rm, rc)[0, 1]),
                     "white_noise_ptp_nm": float(np.median(white) * rm.std())}
    (out / "jitter.json").write_text(json.dumps(res, indent=1))
    print("jitter", json.dumps(res))
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=("simulated", "calibrate", "train", "localize", "evaluate",
                                    "mle", "mle-censored", "jitter", "refine"))
    p.add_argument("--out", type=Path, default=ROOT / "bench_out" / "calib")
    p.add_argument("--minutes", type=float, default=25.0)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--docs", type=Path, default=None)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.step == "simulated":
        simulated(a.out)
    elif a.step == "calibrate":
        calibrate(a.out, a.steps)
    elif a.step == "train":
        train(a.out, a.minutes)
    elif a.step == "localize":
        localize(a.out)
    elif a.step == "mle":
        mle(a.out)
    elif a.step == "mle-censored":
        mle(a.out, censored=True)
    elif a.step == "jitter":
        jitter(a.out)
    elif a.step == "refine":
        localize(a.out, refine=True)
        evaluate(a.out, a.docs, refine=True)
    else:
        evaluate(a.out, a.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
