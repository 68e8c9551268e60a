"""DeepSTORM3D on Tetrapod frames: Jaccard and RMSE against density and z, beside the CRLB.

    deepsmlm train configs/3d-tetrapod.yaml --out bench_out/ds3d/model --max-minutes 50
    python benchmarks/deepstorm3d.py movies --out bench_out/movies3d
    python benchmarks/deepstorm3d.py evaluate --model bench_out/ds3d/model \
        --movies bench_out/movies3d --json bench_out/deepstorm3d.json
    python benchmarks/deepstorm3d.py movies --out bench_out/movies3d_field --context-px 20
    python benchmarks/deepstorm3d.py evaluate --model bench_out/ds3d/model \
        --movies bench_out/movies3d_field --out bench_out/ds3d_eval_field \
        --json bench_out/deepstorm3d_field.json
    python benchmarks/deepstorm3d.py loss-optimum   # what targets + loss can represent

A model that reports uncertainties (fastloc, ``training.localize_z``) also gets the std of
error/σ per axis over the greedy 250/500 nm matches (1 when its σ are calibrated);
``movies --mismatch`` renders the frames with a PSF a little off the one trained on.

Held-out movies (seeds 2000 + i, 100 frames) at 5, 10, 20, 30, 40 emitters per 64×64
frame of 110 nm pixels. Matching: Hungarian within a 100 nm sphere (DeepSTORM3D's
reporting) and the SMLM-Challenge greedy 250 nm lateral / 500 nm axial. The CRLB is that
of one emitter of the same PSF per z, at the experiment's CRLB operating point
(``build.crlb_operating_point``: the middle of its photon and background ranges).

Two geometries. Default: emitters anywhere in 64×64 frames, up to the edge. The Tetrapod
reaches ~2 µm (~20 px) from its centre at the ends of the z range, so about half of these
emitters have a PSF cut by the frame edge. --context-px C: frames of (64 + 2C)² px with
emitters at the same density everywhere, scored on the central 64×64 region only (truth
and localizations inside it): a 64×64 region inside a larger field of view, where no scored
emitter's PSF is cut — what the interior of a real camera frame looks like, and the
published protocol (DeepSTORM3D keeps emitters 20 px from the edge of its 121-px frames:
``clear_dist``).

Needs the Tetrapod mask of ../shared/data/deepstorm3d (the config's path).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import (
    CONFIG_3D,
    COUNTS,
    MISMATCH,
    ROI_PX,
    SPHERE_100NM,
    localize_movie,
    movie_context_px,
    roi_area_um2,
    roi_experiment,
    uncertainty_fit,
    write_field,
)

from deepsmlm.api import simulate, write_movie


def cmd_movies(args) -> None:
    """Seeds 2000 + i: the same emitters, backgrounds and noise draws whatever the PSF."""
    for count in args.counts:
        exp = roi_experiment(count, args.context_px, args.config)
        if args.mismatch:
            exp.optics.aberrations = type(exp.optics.aberrations)(noll=MISMATCH)
        movie = simulate(exp, args.frames, seed=2000 + COUNTS.index(count))
        write_movie(movie, Path(args.out) / f"n{count}")
        write_field(Path(args.out) / f"n{count}", args.context_px)
        print(f"{count} emitters per 64×64 region → {args.out}/n{count} "
              f"({exp.frame.height_px}×{exp.frame.width_px} px frames)")


def cmd_evaluate(args) -> None:
    from deepsmlm.api import crlb_table
    from deepsmlm.build import crlb_operating_point
    from deepsmlm.config import load_experiment
    from deepsmlm.evaluation.metrics import evaluate
    from deepsmlm.inference import Predictor
    from deepsmlm.training.model_folder import ModelFolder

    pred = Predictor.load(args.model, args.device)
    exp = load_experiment(ModelFolder(args.model).experiment_path)
    photons, background = crlb_operating_point(exp)
    z_lo, z_hi = exp.emitters.z_range_nm
    bound = crlb_table(exp, photons, background, np.arange(z_lo + 250, z_hi, 500.0))
    pixel_nm = exp.optics.pixel_size_nm
    rows = []
    for count in args.counts:
        mdir = Path(args.movies) / f"n{count}"
        context = movie_context_px(mdir)
        loc, t, q = localize_movie(args.model, mdir, Path(args.out) / f"n{count}", context,
                                   pixel_nm, args.device)
        density = len(t["frame"]) / loc["frames"] / roi_area_um2(pixel_nm)
        side_nm = ROI_PX * pixel_nm  # by_edge: distance to the frame edge (64×64 frames)
        h = evaluate(t["frame"], t["xyz_nm"], q["frame"], q["xyz_nm"], **SPHERE_100NM,
                     z_step_nm=500.0, field_nm=None if context else (side_nm, side_nm))
        g = evaluate(t["frame"], t["xyz_nm"], q["frame"], q["xyz_nm"], z_step_nm=500.0)
        cal = uncertainty_fit(t, q, 3) if "uncertainty_xyz_nm" in q else None
        row = dict(emitters_per_frame=count, density_per_um2=density, context_px=context,
                   jaccard_100nm=h["jaccard"] / 100, rmse_xy_nm=h["rmse_xy_nm"],
                   rmse_z_nm=h["rmse_z_nm"], recall_100nm=h["recall"],
                   precision_100nm=h["precision"], jaccard_greedy=g["jaccard"] / 100,
                   rmse_xy_greedy_nm=g["rmse_xy_nm"], rmse_z_greedy_nm=g["rmse_z_nm"],
                   frames_per_s=loc["frames_per_s"], by_z=h.get("by_z", []),
                   by_edge=h.get("by_edge", []), calibration=cal)
        rows.append(row)
        print(f"{count:3d}/frame ({density:.2f}/µm²): Jaccard(100 nm) "
              f"{row['jaccard_100nm']:.3f}, RMSE xy {row['rmse_xy_nm']:.1f} nm, "
              f"z {row['rmse_z_nm']:.1f} nm; greedy Jaccard {row['jaccard_greedy']:.3f}; "
              f"{row['frames_per_s']:.1f} frames/s"
              + ("" if cal is None else "; e/σ std x {:.2f} y {:.2f} z {:.2f}".format(
                  *cal["std"])))
    mean_xy = float(np.mean(np.sqrt(bound["crlb_x"] ** 2 + bound["crlb_y"] ** 2)))
    mean_z = float(np.mean(bound["crlb_z"]))
    print(f"CRLB ({photons:g} photons, {background:g} background/px), mean over z: "
          f"lateral {mean_xy:.1f} nm (radial), axial {mean_z:.1f} nm")
    out = dict(model=str(args.model), card=pred.card.to_dict(), crlb={
        "z_nm": bound["z_nm"].tolist(),
        "radial_xy_nm": np.sqrt(bound["crlb_x"] ** 2 + bound["crlb_y"] ** 2).tolist(),
        "z_nm_bound": bound["crlb_z"].tolist(), "mean_radial_xy_nm": mean_xy,
        "mean_z_nm": mean_z, "photons": photons, "background": background}, rows=rows)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, default=float))


def cmd_table(args) -> None:
    """Markdown tables from an evaluate JSON: by density, and by z beside the CRLB."""
    d = json.loads(Path(args.json).read_text())
    context = d["rows"][0].get("context_px", 0)
    print("Emitters anywhere in 64×64 frames (up to the edge).\n" if not context else
          f"Central 64×64 regions of {64 + 2 * context}² px frames (no scored PSF cut by "
          "the edge); frames/s for the whole frames.\n")
    print("| emitters/frame | per µm² | Jaccard, 100 nm sphere | recall | precision | "
          "RMSE_xy [nm] | RMSE_z [nm] | greedy 250/500 Jaccard | frames/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in d["rows"]:
        print(f"| {r['emitters_per_frame']} | {r['density_per_um2']:.2f} | "
              f"{r['jaccard_100nm']:.3f} | {r['recall_100nm']:.2f} | "
              f"{r['precision_100nm']:.2f} | {r['rmse_xy_nm']:.1f} | {r['rmse_z_nm']:.1f} | "
              f"{r['jaccard_greedy']:.3f} | {r['frames_per_s']:.1f} |")
    row = next(r for r in d["rows"] if r["emitters_per_frame"] == args.count)
    if row.get("by_edge"):
        print(f"\nBy distance to the frame edge at {args.count} emitters/frame:\n")
        print("| distance [nm] | emitters | recall | precision | Jaccard |")
        print("|---|---:|---:|---:|---:|")
        for b in row["by_edge"]:
            hi = "∞" if b["hi"] > 1e8 else f"{b['hi']:.0f}"
            print(f"| {b['lo']:.0f}–{hi} | {b['tp'] + b['fn']} | {b['recall']:.2f} | "
                  f"{b['precision']:.2f} | {b['jaccard'] / 100:.2f} |")
    c = d["crlb"]
    bound = {round(z): (xy, zz) for z, xy, zz in zip(c["z_nm"], c["radial_xy_nm"],
                                                     c["z_nm_bound"])}
    print(f"\nBy z at {args.count} emitters/frame (Hungarian, 100 nm sphere; CRLB of one "
          f"emitter, {c['photons']:g} photons, {c['background']:g} background/px):\n")
    print("| z [nm] | Jaccard | RMSE_xy (radial) [nm] | CRLB_xy [nm] | ratio | "
          "RMSE_z [nm] | CRLB_z [nm] | ratio | bias_z [nm] |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b in row["by_z"]:
        xy, zz = bound.get(round(0.5 * (b["lo"] + b["hi"])), (float("nan"),) * 2)
        print(f"| {b['lo']:.0f}–{b['hi']:.0f} | {b['jaccard'] / 100:.2f} | "
              f"{b['rmse_xy_nm']:.1f} | {xy:.1f} | {b['rmse_xy_nm'] / xy:.1f} | "
              f"{b['rmse_z_nm']:.1f} | {zz:.1f} | {b['rmse_z_nm'] / zz:.1f} | "
              f"{b['bias_z_nm']:+.0f} |")


def cmd_retune(args) -> None:
    """Re-tune a trained model's threshold, decoding and σ on its validation set:
    ``deepsmlm tune`` (``steps.tune``), also for a model whose training stopped before it
    tuned a threshold."""
    from deepsmlm.steps.tune import run_tune
    from deepsmlm.training.model_folder import ModelFolder

    folder = ModelFolder(args.model)
    card = folder.read_card()
    if card.threshold is None:  # training was stopped before it tuned one
        card.threshold = 1.0
        folder.write_card(card)
    print(json.dumps(run_tune(args.model, device=args.device), indent=1))


def cmd_loss_optimum(args) -> None:
    """What each target encoding + loss can represent at best: a free output volume (no
    network) is fitted to the loss by Adam, starting from the ideal scale·target, and
    decoded like a network's output. Emitters: the CPU config's grid, 23 per frame, 4 frames.
    The targets, loss and decoding are the method's (``methods.get("deepstorm3d")``) with
    the training section's encoding and Dice term replaced per case.
    """
    import torch

    from deepsmlm import methods
    from deepsmlm.config import load_experiment
    from deepsmlm.evaluation.metrics import evaluate
    from deepsmlm.training.model_folder import ModelCard

    torch.set_num_threads(1)
    exp = load_experiment(CONFIG_3D)
    method = methods.get("deepstorm3d")
    t = exp.training
    px, (z_lo, z_hi) = exp.optics.pixel_size_nm, exp.emitters.z_range_nm
    gen = torch.Generator().manual_seed(0)
    frames, n, side = 4, 4 * 23, t.patch_px
    lo = torch.tensor([2 * px, 2 * px, z_lo + 100.0])
    span = torch.tensor([(side - 4) * px, (side - 4) * px, z_hi - z_lo - 200.0])
    xyz = lo + span * torch.rand(n, 3, generator=gen)
    fr = torch.randint(0, frames, (n,), generator=gen)
    scale = t.target_scale
    cases = [("voxel", "Σp + Σt", False, 1.0), ("trilinear", "Σp + Σt", False, 1.0),
             ("trilinear", "Σp² + Σt²", True, 1.0), ("trilinear", "none", False, 0.0)]
    print("| target | Dice denominator | Jaccard (100 nm) | RMSE_xy [nm] | RMSE_z [nm] |")
    print("|---|---|---:|---:|---:|")
    for encoding, label, squares, weight in cases:
        tc = t.model_copy(update=dict(target_encoding=encoding, overlap_squares=squares,
                                      overlap_weight=weight,
                                      overlap_counts_false_positives=True))
        card = ModelCard(method.name, px, method.upsampling(tc), {},
                         method.card_settings(tc, (z_lo, z_hi)))
        target = method.encoder(tc, px, (z_lo, z_hi))(xyz, fr, frames, side)
        loss_fn = method.loss(tc)
        vol = (scale * target).requires_grad_(True)
        opt = torch.optim.Adam([vol], lr=5.0)
        for _ in range(args.steps):
            loss = loss_fn(vol.clamp(0, scale), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        em = method.decode(card, vol.detach().clamp(0, scale), 0.5 * scale)
        r = evaluate(fr.numpy(), xyz.numpy(), em.frame.numpy(), em.xyz_nm.numpy(),
                     **SPHERE_100NM)
        print(f"| {encoding} | {label} | {r['jaccard'] / 100:.3f} | {r['rmse_xy_nm']:.1f} | "
              f"{r['rmse_z_nm']:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("movies")
    m.add_argument("--out", required=True)
    m.add_argument("--frames", type=int, default=100)
    m.add_argument("--config", default=str(CONFIG_3D), help="experiment (its PSF renders)")
    m.add_argument("--counts", type=int, nargs="+", default=list(COUNTS), choices=COUNTS,
                   help="emitters per 64×64 region (a subset: the same movies)")
    m.add_argument("--context-px", type=int, default=0,
                   help="simulate this many px of field around each 64×64 scored region")
    m.add_argument("--mismatch", action="store_true",
                   help="render with 20 mλ coma + 30 mλ spherical the models never saw")
    m.set_defaults(func=cmd_movies)
    e = sub.add_parser("evaluate")
    e.add_argument("--model", required=True)
    e.add_argument("--movies", required=True)
    e.add_argument("--out", default="bench_out/ds3d_eval")
    e.add_argument("--device", default="cpu")
    e.add_argument("--counts", type=int, nargs="+", default=list(COUNTS))
    e.add_argument("--json", default=None)
    e.set_defaults(func=cmd_evaluate)
    t = sub.add_parser("table")
    t.add_argument("--json", required=True)
    t.add_argument("--count", type=int, default=5)
    t.set_defaults(func=cmd_table)
    r = sub.add_parser("retune")
    r.add_argument("--model", required=True)
    r.add_argument("--device", default="cpu")
    r.set_defaults(func=cmd_retune)
    o = sub.add_parser("loss-optimum")
    o.add_argument("--steps", type=int, default=150)
    o.set_defaults(func=cmd_loss_optimum)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
