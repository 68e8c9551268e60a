"""fastloc (the camera-resolution localizer) side by side with Picasso, Deep-STORM and the
CRLB on the same frames, with frames rendered by a PSF that is not the one trained on.

    deepsmlm train configs/smlm2016-2d.yaml --out bench_out/fl2d --max-minutes 15
    python benchmarks/fastloc.py smlm-movies --out bench_out/fl_smlm
    python benchmarks/fastloc.py smlm-evaluate --model bench_out/fl2d \
        --movies bench_out/fl_smlm --json bench_out/fastloc_smlm.json
    python benchmarks/fastloc.py dense-evaluate --model bench_out/fl_dense \
        --movies bench_out/movies2d --json bench_out/fastloc_dense.json
    python benchmarks/fastloc.py speed --model bench_out/fl2d --json bench_out/fastloc_speed.json
    python benchmarks/fastloc.py isolated --model bench_out/fl2d   # lone spots, depth by depth
    python benchmarks/fastloc.py compare3d --fastloc A.json --deepstorm3d B.json  # 3D, below

3D (``compare3d``): fastloc with ``localize_z`` and DeepSTORM3D trained for the same time on
the same set-up, both scored by ``benchmarks/deepstorm3d.py evaluate`` on the same movies
(Tetrapod: both geometries; astigmatism over ±600 nm); the commands are in
docs/benchmarks.md.

SMLM-Challenge-style 2D (``smlm-*``): the 2D challenge set-up of ``configs/smlm2016-2d.yaml``
at 0.3 emitters/µm², emitters over ±750 nm, lognormal photons of mean 4000, the challenge's
EMCCD; 100 frames (seed 3000) rendered twice: with the PSF trained on ("matched") and with
the pupil aberrated by 20 mλ RMS of coma (Noll 7) and 30 mλ of spherical aberration (Noll
11) ("mismatched"). Scoring as the challenge: greedy matching within 250 nm laterally,
emitters closer than 450 nm to the frame edge excluded; lateral only (a 2D method reports
no depth). Picasso's net-gradient threshold is the best of a sweep against the truth
(generous to Picasso).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from common import (
    CONFIGS,
    DENSITIES,
    MISMATCH,
    edited_experiment,
    matmul_gflops,
    uncertainty_fit,
)

from deepsmlm.api import crlb_table, run_localize, simulate, write_movie
from deepsmlm.build import build_camera, crlb_operating_point, field_nm
from deepsmlm.evaluation.metrics import evaluate
from deepsmlm.io.localizations import read_csv

SMLM = CONFIGS / "smlm2016-2d.yaml"
BORDER_NM = 450.0
PICASSO_GRADIENTS = (1000.0, 2000.0, 3000.0, 5000.0, 8000.0, 12000.0, 20000.0)


def smlm_experiment(mismatched: bool):
    exp = edited_experiment(SMLM, emitters={"density_per_um2": 0.3})
    if mismatched:
        exp.optics.aberrations = type(exp.optics.aberrations)(noll=MISMATCH)
    return exp


def cmd_smlm_movies(args) -> None:
    for name, mism in (("matched", False), ("mismatched", True)):
        movie = simulate(smlm_experiment(mism), args.frames, seed=3000)
        write_movie(movie, Path(args.out) / name)
        print(f"{name}: {args.frames} frames, {len(movie.emitters)} emitters → {args.out}/{name}")


def lateral(table: dict) -> np.ndarray:
    xyz = table["xyz_nm"].copy()
    xyz[:, 2] = 0.0
    return xyz


def score(truth: dict, found: dict, field: tuple[float, float]) -> dict:
    r = evaluate(truth["frame"], lateral(truth), found["frame"], lateral(found),
                 field_nm=field, border_nm=BORDER_NM)
    keys = ("jaccard", "recall", "precision", "rmse_xy_nm", "efficiency_xy", "n_gt", "n_pred")
    return {k: r[k] for k in keys}


DEPTH_BINS_NM = (0.0, 250.0, 500.0, 650.0, 800.0)


def lateral_match(truth: dict, found: dict, field: tuple[float, float]):
    """The matching of ``score`` (greedy 250 nm, lateral only, 450 nm border)."""
    from deepsmlm.evaluation.matching import match

    return match(truth["frame"], lateral(truth), found["frame"], lateral(found),
                 field_nm=field, border_nm=BORDER_NM)


def by_depth(truth: dict, found: dict, m) -> list[dict]:
    """Recall and lateral RMSE by the true |z| (``DEPTH_BINS_NM``) over ``m``
    (``lateral_match``): where a 2D method loses its emitters and its precision."""
    t, f = lateral(truth), lateral(found)
    depth = np.abs(truth["xyz_nm"][:, 2])
    err = np.linalg.norm((f[m.pred_index] - t[m.gt_index])[:, :2], axis=1)
    rows = []
    for lo, hi in zip(DEPTH_BINS_NM[:-1], DEPTH_BINS_NM[1:], strict=True):
        scored = m.gt_used & (depth >= lo) & (depth < hi)
        hit = (depth[m.gt_index] >= lo) & (depth[m.gt_index] < hi)
        rows.append({"abs_z_nm": [lo, hi], "n_gt": int(scored.sum()),
                     "recall": float(hit.sum() / max(scored.sum(), 1)),
                     "rmse_xy_nm": float(np.sqrt(np.mean(err[hit] ** 2))) if hit.any() else None,
                     "median_error_nm": float(np.median(err[hit])) if hit.any() else None})
    return rows


def calibration(truth: dict, found: dict, field: tuple[float, float], axes: int) -> dict:
    """e/σ of the matched localizations (x, y; z too in 3D), overall and by photons; a 2D
    method is matched laterally (it reports no depth)."""
    if axes == 2:
        truth, found = {**truth, "xyz_nm": lateral(truth)}, {**found, "xyz_nm": lateral(found)}
    return uncertainty_fit(truth, found, axes, field, BORDER_NM)


def picasso(exp, frames: np.ndarray, truth: dict, field) -> tuple[dict, float]:
    from peers.picasso_peer import localize_picasso

    best = None
    for g in PICASSO_GRADIENTS:
        em, seconds = localize_picasso(frames, exp.optics.pixel_size_nm, build_camera(exp), g)
        r = score(truth, em.numpy(), field)
        r.update(min_net_gradient=g, frames_per_s=len(frames) / seconds)
        if best is None or r["jaccard"] > best["jaccard"]:
            best = r
    return best


def cmd_smlm_evaluate(args) -> None:
    from deepsmlm.io.frames import read_stack

    out = {"model": str(args.model), "rows": {}}
    exp = smlm_experiment(False)
    photons, bg = crlb_operating_point(exp)
    z = np.linspace(-750, 750, 7)
    bound = crlb_table(exp, photons, bg, z)
    radial = np.sqrt(bound["crlb_x"] ** 2 + bound["crlb_y"] ** 2)
    out["crlb"] = {"photons": photons, "background": bg, "z_nm": z.tolist(),
                   "radial_nm": radial.tolist(), "mean_radial_nm": float(np.mean(radial))}
    print(f"CRLB (radial, {photons:.0f} photons, {bg:.0f} background/px) over ±750 nm: "
          f"{radial.min():.1f} – {radial.max():.1f} nm, mean {np.mean(radial):.1f} nm")
    for name in ("matched", "mismatched"):
        mdir = Path(args.movies) / name
        truth = read_csv(mdir / "truth.csv").numpy()
        field = field_nm(exp)
        rows = {}
        arms = [("fastloc", args.model, False), ("deepstorm", args.deepstorm, False)]
        if args.refine:
            arms.insert(1, ("fastloc+refine", args.model, True))
        for label, model, refine in arms:
            if model is None:
                continue
            res = Path(args.out) / name / label
            loc = run_localize(model, mdir / "frames.tif", res, progress=False, refine=refine)
            found = read_csv(res / "localizations.csv").numpy()
            m = lateral_match(truth, found, field)
            rows[label] = {**score(truth, found, field), "frames_per_s": loc["frames_per_s"],
                           "by_depth": by_depth(truth, found, m)}
            if "uncertainty_xyz_nm" in found:
                rows[label]["calibration"] = calibration(truth, found, field, 2)
            if args.scene_bound:  # the frames' own bound, depth a nuisance
                rows[label]["scene_bound"] = scene_bound(
                    smlm_experiment(name == "mismatched"), truth, found, m, fit_z=True,
                    depth_bins_nm=DEPTH_BINS_NM)
        if not args.no_picasso:
            frames = np.asarray(read_stack(mdir / "frames.tif").data)
            rows["picasso"] = picasso(exp, frames, truth, field)
        out["rows"][name] = rows
        for label, r in rows.items():
            cal = r.get("calibration")
            print(f"{name:10s} {label:14s} Jaccard {r['jaccard']:5.1f} %  recall "
                  f"{r['recall']:.3f}  precision {r['precision']:.3f}  RMSE "
                  f"{r['rmse_xy_nm']:5.1f} nm  E_xy {r['efficiency_xy']:5.1f}"
                  + (f"  e/σ std x {cal['std'][0]:.2f} y {cal['std'][1]:.2f}" if cal else ""))
            bound = r.get("scene_bound", {}).get("by_depth")
            for i, b in enumerate(r.get("by_depth", [])):
                if b["rmse_xy_nm"] is not None:
                    sb = bound[i] if bound else None
                    print(f"{'':26s}|z| {b['abs_z_nm'][0]:3.0f}–{b['abs_z_nm'][1]:3.0f} nm: "
                          f"recall {b['recall']:.2f}  RMSE {b['rmse_xy_nm']:5.1f} nm  median "
                          f"error {b['median_error_nm']:5.1f} nm  ({b['n_gt']} emitters)"
                          + (f"  bound of the frames: median {sb['median_bound_xy_nm']:.1f} nm,"
                             f" RMS(error/bound) {sb['rms_error_over_bound']:.2f}"
                             if sb and sb["n"] else ""))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, default=float))


def cmd_dense_evaluate(args) -> None:
    """The held-out movies of deepstorm2d.py (2d-dense.yaml, seeds 1000 + i)."""
    from common import density_experiment

    from deepsmlm.evaluation.matching import match

    rows = []
    exp = density_experiment(1.0)
    photons, bg = crlb_operating_point(exp)
    bound = crlb_table(exp, photons, bg, np.array([0.0]))
    radial = float(np.hypot(bound["crlb_x"][0], bound["crlb_y"][0]))
    for density in args.densities:
        mdir = Path(args.movies) / f"density_{density:g}"
        res = Path(args.out) / f"density_{density:g}"
        loc = run_localize(args.model, mdir / "frames.tif", res, progress=False,
                           refine=args.refine)
        truth, found = read_csv(mdir / "truth.csv").numpy(), read_csv(res / "localizations.csv"
                                                                        ).numpy()
        r = evaluate(truth["frame"], truth["xyz_nm"], found["frame"], found["xyz_nm"],
                     field_nm=field_nm(exp))
        # the same matching, kept for the breakdowns below (evaluate does not return it)
        m = match(truth["frame"], truth["xyz_nm"], found["frame"], found["xyz_nm"],
                  field_nm=field_nm(exp))
        row = {"density_per_um2": density, "jaccard": r["jaccard"],
               "rmse_xy_nm": r["rmse_xy_nm"], "efficiency_xy": r["efficiency_xy"],
               "recall": r["recall"], "precision": r["precision"],
               "frames_per_s": loc["frames_per_s"],
               "calibration": calibration(truth, found, field_nm(exp), 2),
               "by_gap": rmse_by_gap(truth, found, m)}
        if args.scene_bound:
            from deepsmlm.config import load_experiment

            row["scene_bound"] = scene_bound(load_experiment(mdir / "experiment.yaml"), truth,
                                             found, m)
        rows.append(row)
        iso, crowd = row["by_gap"]["isolated"], row["by_gap"]["crowded"]
        print(f"{density:4g}/µm²: Jaccard {r['jaccard']:5.1f} %  RMSE {r['rmse_xy_nm']:5.1f} nm "
              f"({r['rmse_xy_nm'] / radial:.2f}× CRLB {radial:.1f} nm)  E_xy "
              f"{r['efficiency_xy']:5.1f}  e/σ std {row['calibration']['std'][0]:.2f}, "
              f"{row['calibration']['std'][1]:.2f}  RMSE isolated (> 500 nm) "
              f"{iso['rmse_xy_nm']:.1f} nm (n {iso['n']}), crowded "
              f"{crowd['rmse_xy_nm']:.1f} nm (n {crowd['n']})")
        if args.scene_bound:
            b = row["scene_bound"]
            print(f"        bound of the frames as they are: median {b['median_bound_xy_nm']:.1f}"
                  f" nm, RMS of error/bound {b['rms_error_over_bound']:.2f} over {b['n']} "
                  f"matches ({b['n_unbounded']} on one spot left out)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"crlb_radial_nm": radial, "refine": args.refine,
                                               "rows": rows},
                                              indent=2, default=float))


def rmse_by_gap(truth: dict, found: dict, m, gap_nm: float = 500.0) -> dict:
    """Radial RMSE [nm] of the matched emitters (``m``, an ``evaluation.matching.Matching``)
    whose nearest true neighbour in the frame is farther than ``gap_nm`` ("isolated") and of
    the rest ("crowded"), with their counts: the CRLB is a one-emitter bound, which only the
    isolated ones can reach."""
    t_xyz, f_xyz = lateral(truth), lateral(found)
    gap = np.full(len(t_xyz), np.inf)
    for t in np.unique(truth["frame"]):
        k = np.flatnonzero(truth["frame"] == t)
        d = np.linalg.norm(t_xyz[k, None, :2] - t_xyz[None, k, :2], axis=-1)
        np.fill_diagonal(d, np.inf)
        gap[k] = d.min(1) if len(k) > 1 else np.inf
    err2 = ((f_xyz[m.pred_index] - t_xyz[m.gt_index])[:, :2] ** 2).sum(1)
    alone = gap[m.gt_index] > gap_nm
    out = {"gap_nm": gap_nm}
    for name, rows in (("isolated", alone), ("crowded", ~alone)):
        out[name] = {"n": int(rows.sum()),
                     "rmse_xy_nm": float(np.sqrt(err2[rows].mean())) if rows.any() else None}
    return out


def scene_bound(exp, truth: dict, found: dict, m, fit_z: bool = False,
                depth_bins_nm: tuple[float, ...] | None = None) -> dict:
    """The Cramér–Rao bound of the frames as they are: every true emitter bounded together
    with those whose PSF patches overlap it (``refine.crlb_nm``: their positions, photons,
    the known background level), against the one-emitter CRLB the bar names. A pair closer
    than the PSF has a bound of microns, which an RMS of bounds would be all about, so the
    summary is per emitter: the RMS of (radial error / its radial bound) over the matched
    emitters with a finite bound (1: every emitter at its own bound), beside the median
    bound, and how many matches had no finite bound (two emitters on one spot).
    ``fit_z``: depth is unknown too (a 2D method on emitters spread in depth: z is a
    nuisance); ``depth_bins_nm``: the same summary by the true |z|."""
    import torch

    from deepsmlm.build import build_camera, build_psf
    from deepsmlm.refine import crlb_nm

    frames = np.unique(truth["frame"])
    index = np.searchsorted(frames, truth["frame"])
    bg = float(np.mean(exp.background.photons_per_px))
    sd = crlb_nm(build_psf(exp).eval(), exp.emitters.blur_sigma_nm / exp.optics.pixel_size_nm,
                 build_camera(exp), torch.as_tensor(truth["xyz_nm"], dtype=torch.float32),
                 torch.as_tensor(truth["photons"], dtype=torch.float32),
                 torch.as_tensor(index), torch.full((len(frames),), bg),
                 (exp.frame.height_px, exp.frame.width_px), fit_z=fit_z).numpy()
    radial = np.hypot(sd[:, 0], sd[:, 1])[m.gt_index]
    err2 = ((found["xyz_nm"][m.pred_index] - truth["xyz_nm"][m.gt_index])[:, :2] ** 2).sum(1)

    def summary(rows: np.ndarray) -> dict:
        ok = rows & np.isfinite(radial)
        if not ok.any():
            return {"median_bound_xy_nm": None, "rms_error_over_bound": None, "n": 0,
                    "n_unbounded": int(rows.sum())}
        return {"median_bound_xy_nm": float(np.median(radial[ok])),
                "rms_error_over_bound": float(np.sqrt(np.mean(err2[ok] / radial[ok] ** 2))),
                "n": int(ok.sum()), "n_unbounded": int((rows & ~ok).sum())}

    out = summary(np.ones(len(radial), bool))
    if depth_bins_nm is not None:
        depth = np.abs(truth["xyz_nm"][m.gt_index, 2])
        out["by_depth"] = [{"abs_z_nm": [lo, hi], **summary((depth >= lo) & (depth < hi))}
                           for lo, hi in zip(depth_bins_nm[:-1], depth_bins_nm[1:], strict=True)]
    return out


# the operating point of the lone-spot tests (defocus-fit, isolated): photons of a spot,
# background photons per pixel
LONE_PHOTONS, LONE_BACKGROUND = 4000.0, 30.0


def lone_spot(psf, camera, xyz_nm, frame, n_frames: int, generator):
    """Frames (n_frames, 64, 64) in ADU of spots at ``xyz_nm`` (N, 3) in ``frame`` (N,) at
    the lone-spot operating point, and the radial CRLB [nm] of the first spot with z
    unknown."""
    import torch

    from deepsmlm.refine import crlb_nm

    n = len(xyz_nm)
    with torch.no_grad():
        mu = psf.render(xyz_nm, torch.full((n,), LONE_PHOTONS), frame, (n_frames, 64, 64))
        adu = camera(mu + LONE_BACKGROUND, generator).float()
    sd = crlb_nm(psf, 0.0, camera, xyz_nm[:1], torch.tensor([LONE_PHOTONS]), frame[:1],
                 torch.tensor([LONE_BACKGROUND]), (64, 64), fit_z=True)[0]
    return adu, float(torch.hypot(sd[0], sd[1]))


def cmd_defocus_fit(args) -> None:
    """One isolated emitter of the SMLM set-up at depth ``--z-nm`` (4000 photons, 30
    background/px, the EMCCD's noise), fitted by ``refine.fit_frames`` with z as a nuisance
    from a start 100 nm off laterally and off the focus: what one defocused spot allows,
    against its Cramér–Rao bound (z unknown)."""
    import torch

    from deepsmlm.build import build_camera, build_psf
    from deepsmlm.refine import fit_frames, nuisance_start_nm

    exp = smlm_experiment(False)
    psf, camera = build_psf(exp).eval(), build_camera(exp)
    n, truth = args.draws, torch.tensor([[3200.0, 3150.0, args.z_nm]])
    frame = torch.arange(n)
    adu, bound = lone_spot(psf, camera, truth.repeat(n, 1), frame, n,
                           torch.Generator().manual_seed(args.seed))
    start = truth.repeat(n, 1) + torch.tensor([80.0, -60.0, 0.0])
    bounds = (-825.0, 825.0)
    start[:, 2] = nuisance_start_nm(bounds)
    xyz, photons, bg = fit_frames(psf, 0.0, camera, camera.to_photons(adu.float()), start,
                                  frame, True, bounds, roi_px=psf.patch_px)
    err = (xyz - truth)[:, :2]
    print(f"z {args.z_nm:.0f} nm, {n} draws: lateral RMSE {err.pow(2).sum(1).mean().sqrt():.1f} "
          f"nm (radial), CRLB {bound:.1f} nm with z unknown; "
          f"fitted |z| median {xyz[:, 2].abs().median():.0f} nm")


ISOLATED_DEPTHS_NM = (0.0, 250.0, 400.0, 550.0, 650.0, 750.0)


def cmd_isolated(args) -> None:
    """A model on isolated spots of the SMLM set-up (16 per 64×64 frame, 1.6 µm apart;
    4000 photons, 30 background/px, the EMCCD), one depth at a time: recall, lateral RMSE
    and mean error (a bias) against the one-emitter CRLB with z unknown, and std(e/σ) of
    the σ it reports — what the network makes of one defocused spot, with no neighbours to
    blame (``--mismatch``: the test aberration it never saw)."""
    import torch

    from deepsmlm.build import build_camera, build_psf
    from deepsmlm.inference import Predictor

    exp = smlm_experiment(args.mismatch)
    psf, camera = build_psf(exp).eval(), build_camera(exp)
    pred = Predictor.load(args.model)
    g = torch.Generator().manual_seed(args.seed)
    n, per = args.frames, 16
    grid = torch.tensor([8.0, 24.0, 40.0, 56.0]) * exp.optics.pixel_size_nm
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    sites = torch.stack([gx.ravel(), gy.ravel()], 1).repeat(n, 1)
    frame = torch.arange(n).repeat_interleave(per)
    rows = []
    for z in args.z_nm:
        xy = sites + (torch.rand(n * per, 2, generator=g) - 0.5) * exp.optics.pixel_size_nm
        xyz = torch.cat([xy, torch.full((n * per, 1), float(z))], 1)
        adu, bound = lone_spot(psf, camera, xyz, frame, n, g)
        found = pred.localize(pred.super_resolve(adu))
        errors, ratios, extra, hits = [torch.zeros(0, 2)], [torch.zeros(0, 2)], 0, 0
        for t in range(n):
            f, true = found.in_frame(t), xyz[frame == t]
            if not len(f):
                continue
            near, j = torch.cdist(f.xyz_nm[:, :2], true[:, :2]).min(1)
            ok = near < 250.0  # sites are 1.6 µm apart: a detection is its nearest site's
            found_sites = len(torch.unique(j[ok]))
            hits += found_sites
            extra += len(f) - found_sites  # far from every site, or a site's second
            e = f.xyz_nm[ok, :2] - true[j[ok], :2]
            errors.append(e)
            ratios.append(e / f.uncertainty_xyz_nm[ok, :2])
        e, r = torch.cat(errors).double(), torch.cat(ratios).double()  # NaN below if none
        rows.append({"z_nm": z, "recall": hits / (n * per), "extra_detections": extra,
                     "rmse_xy_nm": float(e.pow(2).sum(1).mean().sqrt()),
                     "mean_error_xy_nm": e.mean(0).tolist(),
                     "crlb_xy_nm": bound,
                     "std_e_over_sigma_xy": r.std(0).tolist()})
        w = rows[-1]
        print(f"z {z:5.0f} nm: recall {w['recall']:.3f}, extra {extra}, RMSE "
              f"{w['rmse_xy_nm']:5.1f} nm = {w['rmse_xy_nm'] / w['crlb_xy_nm']:.2f}× CRLB "
              f"{w['crlb_xy_nm']:.1f}, mean error x, y {w['mean_error_xy_nm'][0]:+.1f}, "
              f"{w['mean_error_xy_nm'][1]:+.1f} nm, std(e/σ) {w['std_e_over_sigma_xy'][0]:.2f}, "
              f"{w['std_e_over_sigma_xy'][1]:.2f}", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"model": args.model, "mismatch": args.mismatch,
                                               "rows": rows}, indent=1))


def flops_per_frame(model, side: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, getattr(model, "in_frames", 1), side, side)  # temporal context
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model.eval()(x)
    return float(fc.get_total_flops())


def cmd_speed(args) -> None:
    """End-to-end ``deepsmlm localize`` frames/s (reading → CSV) for fastloc and the
    published Deep-STORM (U = 8; random weights: speed does not depend on them)."""
    import time

    import torch

    from deepsmlm.api import run_localize as localize
    from deepsmlm.io.frames import write_stack
    from deepsmlm.training.model_folder import ModelFolder

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = out / "deepstorm_u8"
    if not (ds / "model.json").is_file():
        _random_deepstorm(ds, args.model)
    gflops = matmul_gflops()
    rows = []
    gen = np.random.default_rng(0)
    for side in args.sides:
        for label, folder, n in (("fastloc", Path(args.model), args.frames),
                                 ("deepstorm U=8", ds, max(4, args.frames // 40))):
            movie = out / f"movie_{side}.tif"
            frames = gen.poisson(120.0, (n, side, side)).astype(np.uint16)
            write_stack(movie, frames, 100.0)
            mf = ModelFolder(folder)
            card = mf.read_card()
            fl = flops_per_frame(mf.load_network(card), side)
            t0 = time.perf_counter()
            r = localize(folder, movie, out / f"loc_{side}", batch_size=args.batch_size,
                         progress=False)
            fps = n / (time.perf_counter() - t0)
            rows.append({"model": label, "side_px": side, "frames": n, "frames_per_s": fps,
                         "megapixels_per_s": fps * side * side / 1e6,
                         "gflop_per_frame": fl / 1e9, "model_gflop_per_s": fps * fl / 1e9,
                         "fraction_of_matmul": fps * fl / 1e9 / gflops,
                         "localize_reported_frames_per_s": r["frames_per_s"]})
            print(f"{label:14s} {side:4d}² px: {fps:8.1f} frames/s, {fl / 1e9:6.2f} GFLOP/frame,"
                  f" {fps * fl / 1e9:6.1f} GFLOP/s ({fps * fl / 1e9 / gflops:.0%} of the "
                  f"measured matmul rate {gflops:.0f} GFLOP/s)")
    for side in args.sides:
        a = [r for r in rows if r["side_px"] == side]
        ratio = a[0]["frames_per_s"] / a[1]["frames_per_s"]
        print(f"{side}² px: fastloc / Deep-STORM = {ratio:.0f}×")
    if args.json:
        Path(args.json).write_text(json.dumps({"matmul_gflops": gflops,
                                               "threads": torch.get_num_threads(),
                                               "rows": rows}, indent=2))


def cmd_compare3d(args) -> None:
    """Side by side from ``deepstorm3d.py evaluate`` JSONs of the same movies: fastloc (3D)
    against DeepSTORM3D per density, beside the CRLB (mean over z)."""
    a = json.loads(Path(args.fastloc).read_text())
    b = json.loads(Path(args.deepstorm3d).read_text())
    crlb = a["crlb"]
    print(f"CRLB mean over z: lateral {crlb['mean_radial_xy_nm']:.1f} nm (radial), axial "
          f"{crlb['mean_z_nm']:.1f} nm ({crlb['photons']:g} photons, "
          f"{crlb['background']:g} background/px)\n")
    print("| emitters per 64×64 | fastloc Jaccard | DeepSTORM3D Jaccard | Δ | fastloc "
          "RMSE xy / z [nm] | DeepSTORM3D RMSE xy / z [nm] | fastloc greedy Jaccard | "
          "DeepSTORM3D greedy Jaccard | fastloc std(e/σ) x, y, z |")
    print("|---:|---:|---:|---:|---|---|---:|---:|---|")
    rows_b = {r["emitters_per_frame"]: r for r in b["rows"]}
    for r in a["rows"]:
        q = rows_b.get(r["emitters_per_frame"])
        if q is None:
            continue
        cal = r.get("calibration")
        std = ", ".join(f"{v:.2f}" for v in cal["std"]) if cal else "–"
        print(f"| {r['emitters_per_frame']} | {r['jaccard_100nm']:.3f} | "
              f"{q['jaccard_100nm']:.3f} | {r['jaccard_100nm'] - q['jaccard_100nm']:+.3f} | "
              f"{r['rmse_xy_nm']:.1f} / {r['rmse_z_nm']:.1f} | {q['rmse_xy_nm']:.1f} / "
              f"{q['rmse_z_nm']:.1f} | {r['jaccard_greedy']:.3f} | {q['jaccard_greedy']:.3f} "
              f"| {std} |")


def cmd_uncertainty(args) -> None:
    """Bar 4 from evaluate JSONs (``deepstorm3d.py evaluate``, ``smlm-evaluate``,
    ``dense-evaluate``): per set, std(e/σ) per axis overall and its range over every row
    and photon quartile, and the cells outside 0.8–1.25."""
    lo_bar, hi_bar = 0.8, 1.25
    print("| set | row | std(e/σ) overall | range over quartiles | outside 0.8–1.25 |")
    print("|---|---|---|---|---|")
    for path in args.json:
        d = json.loads(Path(path).read_text())
        rows = d["rows"]
        if isinstance(rows, dict):  # smlm-evaluate: {frames: {method: row}}
            rows = [{"label": k, **v["fastloc"]} for k, v in rows.items() if "fastloc" in v]
        for r in rows:
            cal = r.get("calibration")
            if not cal:
                continue
            label = r.get("label", r.get("emitters_per_frame", r.get("density_per_um2")))
            quart = [v for b in cal["by_photons"] for v in b["std"]]
            out = [f"{'xyz'[i % len(cal['std'])]}{1 + i // len(cal['std'])}={v:.2f}"
                   for i, v in enumerate(quart) if not lo_bar <= v <= hi_bar]
            out += [f"{'xyz'[i]}={v:.2f}" for i, v in enumerate(cal["std"])
                    if not lo_bar <= v <= hi_bar]
            print(f"| {Path(path).stem} | {label} | "
                  f"{', '.join(f'{v:.2f}' for v in cal['std'])} | "
                  f"{min(quart):.2f}–{max(quart):.2f} | {' '.join(out) or '–'} |")


def _random_deepstorm(folder: Path, like: str) -> None:
    """A model folder of the published Deep-STORM (U = 8) with random weights, the
    normaliser and camera of ``like``."""
    from deepsmlm.io.tensors import save_tensors
    from deepsmlm.training.model_folder import ModelCard, ModelFolder, versions
    from deepsmlm.training.train import new_network

    src = ModelFolder(like).read_card()
    card = ModelCard("deepstorm", src.pixel_size_nm, 8, src.normalization,
                     {"target_scale": 100.0, "channels": [32, 64, 128, 512]}, threshold=20.0,
                     versions=versions())
    folder.mkdir(parents=True, exist_ok=True)
    ModelFolder(folder).write_card(card)
    save_tensors(new_network(card, 0).state_dict(), folder / "weights.safetensors")


def cmd_mass_speed(args) -> None:
    """Time of ``postprocess.claim_mass`` (the mass-accounting decoding option) per frame on
    synthetic probability maps: emitters at ``density`` per µm² (100 nm pixels) at random,
    each spread over three pixels (0.6 + 0.2 + 0.15). With ``--model``, also the whole
    decoding (``method.decode``: maxima, offsets, σ and their calibration, suppression, the
    model's tuned options) of those maps as the network's probability channel, the other
    channels 0."""
    import time

    import torch

    from deepsmlm import methods
    from deepsmlm.models.fastloc import channels
    from deepsmlm.postprocess import claim_mass, pixel_detections
    from deepsmlm.training.model_folder import ModelFolder

    card = ModelFolder(args.model).read_trained_card() if args.model else None

    g = torch.Generator().manual_seed(0)
    for side in args.sides:
        for density in args.densities:
            p = torch.zeros(args.frames, side, side)
            n = int(density * (side * 0.1) ** 2)
            for t in range(args.frames):
                r = torch.randint(1, side - 1, (n,), generator=g)
                c = torch.randint(1, side - 1, (n,), generator=g)
                p[t, r, c] += 0.6
                p[t, r, c + 1] += 0.2
                p[t, r + 1, c] += 0.15
            p = p.clamp(max=1.0)
            idx, score = pixel_detections(p, 0.3, 0.3)
            t0 = time.perf_counter()
            claim_mass(p, idx[:, 0], idx[:, 1], idx[:, 2], score, 2)
            ms = 1e3 * (time.perf_counter() - t0) / args.frames
            line = (f"{side}×{side}, {density:g}/µm²: {len(idx) / args.frames:.0f} detections "
                    f"per frame, claim_mass {ms:.1f} ms per frame")
            if card is not None:
                s = card.settings
                names = channels(bool(s["localize_z"]), len(s.get("species", [])))
                raw = torch.zeros(args.frames, len(names), side, side)
                raw[:, 0] = torch.logit(p.clamp(1e-4, 1 - 1e-4))
                method = methods.get(card.method)
                t0 = time.perf_counter()
                found = method.decode(card, raw, card.threshold)
                ms = 1e3 * (time.perf_counter() - t0) / args.frames
                line += (f"; {args.model}'s decoding {ms:.1f} ms per frame "
                         f"({len(found) / args.frames:.0f} localizations)")
            print(line)


def cmd_retune(args) -> None:
    """``deepsmlm tune`` with one of fastloc's decoding options withheld (the arm a tuned
    option is compared against)."""
    import deepsmlm.methods.fastloc as fastloc
    from deepsmlm.cli import main as cli

    if args.withhold:
        keep = tuple(o for o in fastloc.DECODING_OPTIONS if o.get(args.withhold) is None)
        if len(keep) == len(fastloc.DECODING_OPTIONS):
            print(f"error: no decoding option of fastloc sets {args.withhold!r}",
                  file=sys.stderr)
            raise SystemExit(2)
        fastloc.DECODING_OPTIONS = keep
    raise SystemExit(cli(["tune", args.model, "--frames", str(args.frames)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("smlm-movies")
    s.add_argument("--out", required=True)
    s.add_argument("--frames", type=int, default=100)
    s.set_defaults(func=cmd_smlm_movies)
    s = sub.add_parser("smlm-evaluate")
    s.add_argument("--model", required=True)
    s.add_argument("--deepstorm", default=None, help="a Deep-STORM model folder beside it")
    s.add_argument("--movies", required=True)
    s.add_argument("--out", default="bench_out/fastloc_smlm")
    s.add_argument("--no-picasso", action="store_true")
    s.add_argument("--scene-bound", action="store_true",
                   help="also the CRLB of the frames as they are, depth unknown, by |z|")
    s.add_argument("--refine", action="store_true",
                   help="add fastloc with localize --refine (maximum likelihood through the PSF)")
    s.add_argument("--json", default=None)
    s.set_defaults(func=cmd_smlm_evaluate)
    s = sub.add_parser("dense-evaluate")
    s.add_argument("--model", required=True)
    s.add_argument("--movies", required=True)
    s.add_argument("--out", default="bench_out/fastloc_dense")
    s.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    s.add_argument("--refine", action="store_true", help="localize --refine")
    s.add_argument("--scene-bound", action="store_true",
                   help="also the CRLB of the frames as they are (neighbours bounded together)")
    s.add_argument("--json", default=None)
    s.set_defaults(func=cmd_dense_evaluate)
    s = sub.add_parser("defocus-fit", help="one isolated defocused spot fitted through the PSF")
    s.add_argument("--z-nm", type=float, default=700.0)
    s.add_argument("--draws", type=int, default=20)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_defocus_fit)
    s = sub.add_parser("isolated", help="a model on isolated spots, depth by depth")
    s.add_argument("--model", required=True)
    s.add_argument("--mismatch", action="store_true", help="the test aberration it never saw")
    s.add_argument("--z-nm", type=float, nargs="+", default=list(ISOLATED_DEPTHS_NM))
    s.add_argument("--frames", type=int, default=40)
    s.add_argument("--seed", type=int, default=5)
    s.add_argument("--json", default=None)
    s.set_defaults(func=cmd_isolated)
    s = sub.add_parser("mass-speed", help="claim_mass per frame on synthetic maps")
    s.add_argument("--sides", type=int, nargs="+", default=[64, 256])
    s.add_argument("--densities", type=float, nargs="+", default=[1.0, 6.0])
    s.add_argument("--frames", type=int, default=16)
    s.add_argument("--model", default=None, help="also time this model's whole decoding")
    s.set_defaults(func=cmd_mass_speed)
    s = sub.add_parser("retune", help="deepsmlm tune with a decoding option withheld")
    s.add_argument("--model", required=True)
    s.add_argument("--frames", type=int, default=512)
    s.add_argument("--withhold", default=None, help="e.g. mass_radius_px")
    s.set_defaults(func=cmd_retune)
    s = sub.add_parser("speed")
    s.add_argument("--model", required=True)
    s.add_argument("--out", default="bench_out/fastloc_speed")
    s.add_argument("--sides", type=int, nargs="+", default=[64, 256])
    s.add_argument("--frames", type=int, default=400)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--json", default=None)
    s.set_defaults(func=cmd_speed)
    s = sub.add_parser("compare3d")
    s.add_argument("--fastloc", required=True, help="deepstorm3d.py evaluate JSON of fastloc")
    s.add_argument("--deepstorm3d", required=True, help="... of DeepSTORM3D, same movies")
    s.set_defaults(func=cmd_compare3d)
    s = sub.add_parser("uncertainty", help="bar 4 (std of error/σ) from evaluate JSONs")
    s.add_argument("json", nargs="+")
    s.set_defaults(func=cmd_uncertainty)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
