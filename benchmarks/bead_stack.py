"""A Tetrapod bead focus scan localized plane by plane, before and after the issue-18 fix.

    python benchmarks/bead_stack.py orient   --out bench_out/beads
    python benchmarks/bead_stack.py train    --out bench_out/beads --minutes 30
    python benchmarks/bead_stack.py localize --out bench_out/beads
    python benchmarks/bead_stack.py evaluate --out bench_out/beads --docs docs/images

The stack is ../shared/data/deepnebulae/tetrapod_bead_stack.tiff (54 planes, 100 nm
steps; --stack to point elsewhere). A bead does not move while the stage steps, so its
localized x and y must stay put and its z must follow the stage one for one.

orient: which mask of masks_oracle_vipr.mat, in which of the 8 orientations (transpose,
flip x, flip y), fits the stack: ``deepsmlm psf`` over z 0–5.6 µm for each, and per plane
the best normalised cross-correlation (over lateral shifts and z) with the bead; printed
with the fitted z per stage step. This is how to choose a file mask's orientation for a
microscope (docs/conventions.md).
train: two DeepSTORM3D models for configs/3d-tetrapod-beads.yaml, one per orientation of
the mask: ``fixed`` (the file as it is: the image is the forward Fourier transform of the
pupil, as in the code that made the mask) and ``old`` (the same mask with flip_x and
flip_y, i.e. the PSF turned by 180° — exactly what deepsmlm rendered before issue 18).
--old-minutes gives the old orientation its own (shorter) budget.
localize: ``deepsmlm localize`` on the stack with each model.
evaluate: per plane the most confident localization (the bead), x, y, z against the stage
position; over the central 4 µm of the scan the peak-to-peak lateral drift and the axial
steps (mean ± std); the plot docs/images/bead_stack_xyz.png and beads.json.
Drives the library only through the ``deepsmlm`` command and ``deepsmlm.io`` readers.
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

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "3d-tetrapod-beads.yaml"
STACK = ROOT.parent / "shared" / "data" / "deepnebulae" / "tetrapod_bead_stack.tiff"
STEP_NM = 100.0
ORIENTATIONS = {"fixed": {}, "old": {"flip_x": True, "flip_y": True}}
ALL_ORIENTATIONS = {  # name: (transpose, flip_x, flip_y)
    "as is": (False, False, False), "flip x": (False, True, False),
    "flip y": (False, False, True), "turn 180°": (False, True, True),
    "transpose": (True, False, False), "transpose + flip x": (True, True, False),
    "transpose + flip y": (True, False, True), "transpose + turn 180°": (True, True, True)}


def deepsmlm(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run([sys.executable, "-m", "deepsmlm.cli", *args], check=True, env=env)


def experiment_for(orientation: str, out: Path, mask_update: dict | None = None) -> Path:
    """The bead config with the mask path made absolute and the orientation applied."""
    exp = yaml.safe_load(CONFIG.read_text())
    mask = exp["optics"]["mask"]
    path = Path(os.path.expandvars(os.path.expanduser(mask["path"])))
    if not path.is_absolute():
        path = Path(os.path.abspath(CONFIG.parent / path))
    mask["path"] = str(path)
    mask.update(ORIENTATIONS.get(orientation, {}) if mask_update is None else mask_update)
    dest = out / f"{orientation}.yaml"
    dest.write_text(yaml.safe_dump(exp, sort_keys=False))
    return dest


def normalised_xcorr_max(planes: np.ndarray, models: np.ndarray) -> np.ndarray:
    """(T, D): max over circular lateral shifts of the Pearson correlation of each plane
    (T, P, P) with each model PSF (D, P, P)."""
    def unit(a):
        a = a - a.mean((-2, -1), keepdims=True)
        return a / np.linalg.norm(a, axis=(-2, -1), keepdims=True)
    fa, fb = np.fft.rfft2(unit(planes))[:, None], np.fft.rfft2(unit(models))[None]
    cc = np.fft.irfft2(fa * np.conj(fb), s=planes.shape[-2:])
    return cc.reshape(*cc.shape[:2], -1).max(-1)


def orient(out: Path, stack: Path, size_px: int = 81) -> list[dict]:
    import tifffile

    from deepsmlm.io.frames import read_stack

    out.mkdir(parents=True, exist_ok=True)
    data = np.asarray(read_stack(stack).data, dtype=np.float64)
    mean_img = data.sum(0)
    yy, xx = np.mgrid[:mean_img.shape[0], :mean_img.shape[1]]
    cy = int(round((mean_img * yy).sum() / mean_img.sum()))
    cx = int(round((mean_img * xx).sum() / mean_img.sum()))
    h = size_px // 2
    planes = data[:, cy - h:cy + h + 1, cx - h:cx + h + 1]
    rows = []
    for key in ("mask1", "mask2"):
        for name, (tr, fx, fy) in ALL_ORIENTATIONS.items():
            tag = f"orient_{key}_{name.replace(' ', '').replace('+', '_').replace('°', '')}"
            cfg = experiment_for(tag, out, {"key": key, "transpose": tr, "flip_x": fx,
                                            "flip_y": fy})
            deepsmlm("psf", str(cfg), "--out", str(out / tag), "--z-nm=0:5600:100",
                     "--size-px", str(size_px))
            models = tifffile.imread(out / tag / "psf.tif").astype(np.float64)
            z = np.arange(0.0, 5600.1, 100.0)
            c = normalised_xcorr_max(planes, models)
            z_best = z[c.argmax(1)]
            slope, _ = np.polyfit(np.arange(len(z_best)) * STEP_NM, z_best, 1)
            rows.append(dict(mask=key, orientation=name, mean_corr=float(c.max(1).mean()),
                             min_corr=float(c.max(1).min()),
                             z_per_stage_step_nm=float(slope * STEP_NM)))
            print(f"| {key} | {name} | {rows[-1]['mean_corr']:.3f} | {rows[-1]['min_corr']:.3f} "
                  f"| {rows[-1]['z_per_stage_step_nm']:.0f} |", flush=True)
    (out / "orientation.json").write_text(json.dumps(rows, indent=1))
    return rows


def train(out: Path, minutes: float, old_minutes: float | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in ORIENTATIONS:
        budget = minutes if name == "fixed" or old_minutes is None else old_minutes
        deepsmlm("train", str(experiment_for(name, out)), "--out", str(out / f"model_{name}"),
                 "--max-minutes", str(budget))


def localize(out: Path, stack: Path) -> None:
    for name in ORIENTATIONS:
        deepsmlm("localize", str(out / f"model_{name}"), str(stack), "--out",
                 str(out / f"loc_{name}"), "--quiet")


def read_table(csv: Path) -> dict[str, np.ndarray]:
    """Our localization CSV as columns (the reader's EmitterSet drops ``confidence``)."""
    from deepsmlm.io.localizations import read_localizations

    e = read_localizations(csv)  # validates the file; frames 0-based
    header = csv.read_text().splitlines()[0].split(",")
    table = np.loadtxt(csv, delimiter=",", skiprows=1, ndmin=2).reshape(-1, len(header))
    score = header.index("confidence") if "confidence" in header else None
    return {"xyz": np.asarray(e.xyz_nm, dtype=np.float64), "frame": np.asarray(e.frame),
            "score": table[:, score] if score is not None else np.asarray(e.photons)}


def bead_track(csv: Path, n_planes: int) -> np.ndarray:
    """(n_planes, 3) x, y, z [nm] of the most confident localization per plane (NaN if
    none): the bead."""
    t = read_table(csv)
    track = np.full((n_planes, 3), np.nan)
    for f in range(n_planes):
        idx = np.flatnonzero(t["frame"] == f)
        if len(idx):
            track[f] = t["xyz"][idx[np.argmax(t["score"][idx])]]
    return track


def figures_of_merit(track: np.ndarray, central_nm: float = 4000.0) -> dict:
    stage = np.arange(len(track)) * STEP_NM
    mid = 0.5 * (stage[0] + stage[-1])
    sel = np.abs(stage - mid) <= central_nm / 2 + 1e-6
    c = track[sel]
    ok = np.isfinite(c).all(1)
    steps = np.diff(c[:, 2])
    steps = steps[np.isfinite(steps)]
    slope, icpt = np.polyfit(stage[sel][ok], c[ok, 2], 1)
    resid = c[ok, 2] - (slope * stage[sel][ok] + icpt)
    lat = {}
    for k, name in ((0, "x"), (1, "y")):
        v = c[ok, k]
        worst = np.argmax(np.abs(v - np.median(v)))
        lat[f"{name}_ptp_without_worst_nm"] = float(np.ptp(np.delete(v, worst)))
        lat[f"{name}_trend_nm_per_um"] = float(np.polyfit(stage[sel][ok], v, 1)[0] * 1000.0)
    return {
        **lat, "z_steps_within_15nm": f"{int((np.abs(steps - 100.0) <= 15.0).sum())}/"
                                      f"{len(steps)}",
        "planes_central": int(sel.sum()), "planes_found": int(ok.sum()),
        "x_median_nm": float(np.median(c[ok, 0])), "y_median_nm": float(np.median(c[ok, 1])),
        "z_median_nm": float(np.median(c[ok, 2])),
        "x_ptp_nm": float(np.ptp(c[ok, 0])), "y_ptp_nm": float(np.ptp(c[ok, 1])),
        "x_std_nm": float(np.std(c[ok, 0])), "y_std_nm": float(np.std(c[ok, 1])),
        "z_step_mean_nm": float(np.mean(steps)), "z_step_std_nm": float(np.std(steps)),
        "z_step_min_nm": float(np.min(steps)), "z_step_max_nm": float(np.max(steps)),
        "z_slope_per_100nm": float(slope * STEP_NM), "z_fit_resid_rms_nm": float(
            np.sqrt(np.mean(resid ** 2))),
        "lateral_ok_30nm": bool(max(np.ptp(c[ok, 0]), np.ptp(c[ok, 1])) <= 30.0),
        "axial_ok_100pm15": bool(abs(abs(np.mean(steps)) - 100.0) <= 15.0),
    }


def evaluate(out: Path, stack: Path, docs: Path | None) -> dict:
    from deepsmlm.io.frames import read_stack

    n_planes = len(read_stack(stack))
    tracks = {n: bead_track(out / f"loc_{n}" / "localizations.csv", n_planes)
              for n in ORIENTATIONS}
    result = {n: figures_of_merit(t) for n, t in tracks.items()}
    result["tracks_nm"] = {n: t.round(1).tolist() for n, t in tracks.items()}
    (out / "beads.json").write_text(json.dumps(result, indent=1))
    for n in ORIENTATIONS:
        print(n, json.dumps(result[n], indent=1))
    plot(tracks, result, (docs or out) / "bead_stack_xyz.png")
    return result


def plot(tracks: dict, result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    labels = {"fixed": "forward FFT (fixed)", "old": "turned 180° (before the fix)"}
    colours = {"fixed": "C0", "old": "C3"}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    t0 = tracks["fixed"]
    stage = np.arange(len(t0)) * STEP_NM
    mid = 0.5 * (stage[0] + stage[-1])
    sel = np.abs(stage - mid) <= 2000.0 + 1e-6
    ref = np.nanmedian(t0[sel], axis=0)  # both curves relative to the fixed model's bead
    for name, t in tracks.items():
        r = result[name]
        for ax, k, lab in zip(axes, range(3), ("x", "y", "z")):
            if k < 2:
                y = t[:, k] - ref[k]
                extra = f", p-p {r[f'{lab}_ptp_nm']:.0f} nm"
            else:
                y = t[:, 2] - np.nanmean(t0[sel, 2]) + np.nanmean(stage[sel] - mid)
                extra = f", step {r['z_step_mean_nm']:.0f}±{r['z_step_std_nm']:.0f} nm"
            ax.plot(stage - mid, y, ".-", color=colours[name], ms=4, lw=0.8,
                    label=labels[name] + extra)
    for ax, lab in zip(axes, ("x − bead x [nm]", "y − bead y [nm]", "z (centred) [nm]")):
        ax.axvspan(-2000, 2000, color="0.9", zorder=0)
        ax.set_xlabel("stage position (centred) [nm]")
        ax.set_ylabel(lab)
        ax.legend(fontsize=7, loc="best")
    axes[2].plot([-2700, 2700], [-2700, 2700], "k:", lw=0.8)
    fig.suptitle("Tetrapod bead focus scan (DeepNebulae), the bead localized in each plane "
                 "(relative to the fixed model's median); shaded: central 4 µm")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=["orient", "train", "localize", "evaluate"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stack", type=Path, default=STACK)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--old-minutes", type=float, default=None)
    p.add_argument("--docs", type=Path, default=None)
    args = p.parse_args(argv)
    if args.step != "train" and not args.stack.is_file():
        print(f"bead stack not found: {args.stack}", file=sys.stderr)
        return 2
    if args.step == "orient":
        print("| mask | orientation | mean corr | min corr | z per 100 nm stage step |")
        print("|---|---|---|---|---|")
        orient(args.out, args.stack)
    elif args.step == "train":
        train(args.out, args.minutes, args.old_minutes)
    elif args.step == "localize":
        localize(args.out, args.stack)
    else:
        evaluate(args.out, args.stack, args.docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
