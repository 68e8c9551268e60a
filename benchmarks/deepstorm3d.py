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

Held-out movies (seeds 2000 + i, 100 frames) at 5, 10, 20, 30, 40 emitters per 64×64
frame of 110 nm pixels. Matching: Hungarian within a 100 nm sphere (DeepSTORM3D's
reporting) and the SMLM-Challenge greedy 250 nm lateral / 500 nm axial. The CRLB is that
of one emitter of the same PSF with the mean photons on the mean background, per z.

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

from deepsmlm.api import simulate
from deepsmlm.config import experiment_from_dict, load_experiment
from deepsmlm.workflows import write_movie

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "3d-tetrapod.yaml"
COUNTS = (5, 10, 20, 30, 40)


def experiment(count: int, config: str | Path = CONFIG):
    """The config's experiment with ``count`` emitters in every frame."""
    config = Path(config)
    d = load_experiment(config).to_dict()
    d["emitters"]["n_per_frame"] = [count, count]
    return experiment_from_dict(d, base_dir=config.parent)


ROI_PX = 64


def field_experiment(count: int, context_px: int, config: str | Path = CONFIG):
    """``count`` emitters per 64×64 region, in frames of (64 + 2 context_px)² px."""
    side = ROI_PX + 2 * context_px
    n = round(count * (side / ROI_PX) ** 2)
    d = experiment(n, config).to_dict()
    d["frame"] = {"height_px": side, "width_px": side}
    return experiment_from_dict(d, base_dir=Path(config).parent)


def cmd_movies(args) -> None:
    """Seeds 2000 + i: the same emitters, backgrounds and noise draws whatever the PSF."""
    for i, count in enumerate(COUNTS):
        exp = (experiment(count, args.config) if not args.context_px else
               field_experiment(count, args.context_px, args.config))
        movie = simulate(exp, args.frames, seed=2000 + i)
        write_movie(movie, Path(args.out) / f"n{count}")
        (Path(args.out) / f"n{count}" / "field.json").write_text(json.dumps(
            {"context_px": args.context_px, "roi_px": ROI_PX}))
        print(f"{count} emitters per 64×64 region → {args.out}/n{count} "
              f"({exp.frame.height_px}×{exp.frame.width_px} px frames)")


def central_rows(table: dict, context_px: int, pixel_nm: float) -> dict:
    """The rows of a localization table (``EmitterSet.numpy()``) inside the central
    ROI_PX × ROI_PX region of a (ROI_PX + 2 context_px)² px frame."""
    from deepsmlm.evaluation.matching import inside_border

    side_nm = (ROI_PX + 2 * context_px) * pixel_nm
    keep = inside_border(table["xyz_nm"], (side_nm, side_nm), context_px * pixel_nm)
    return {k: v[keep] for k, v in table.items()}


def cmd_evaluate(args) -> None:
    from deepsmlm.build import build_camera, build_psf
    from deepsmlm.deepstorm_steps import run_localize
    from deepsmlm.evaluation.crlb import crlb
    from deepsmlm.evaluation.metrics import evaluate
    from deepsmlm.inference import Predictor
    from deepsmlm.io.localizations import read_csv

    pred = Predictor.load(args.model, args.device)
    exp = experiment(COUNTS[0], Path(args.model) / "experiment.yaml")
    p, b = exp.emitters.photons, exp.background.photons_per_px
    photons, background = 0.5 * (p.lo + p.hi), 0.5 * (b[0] + b[1])
    z_lo, z_hi = exp.emitters.z_range_nm
    z_grid = np.arange(z_lo + 250, z_hi, 500.0)
    bound = crlb(build_psf(exp), z_grid, photons, background, build_camera(exp))
    pixel_nm = exp.optics.pixel_size_nm
    area_um2 = (ROI_PX * pixel_nm / 1000) ** 2
    rows = []
    for count in args.counts:
        mdir = Path(args.movies) / f"n{count}"
        res = Path(args.out) / f"n{count}"
        loc = run_localize(args.model, mdir / "frames.tif", res, device=args.device,
                           progress=False)
        t = read_csv(mdir / "truth.csv").numpy()
        q = read_csv(res / "localizations.csv").numpy()
        field = mdir / "field.json"
        context = json.loads(field.read_text())["context_px"] if field.is_file() else 0
        if context:  # score the central region only
            t, q = central_rows(t, context, pixel_nm), central_rows(q, context, pixel_nm)
        density = len(t["frame"]) / loc["frames"] / area_um2
        side_nm = ROI_PX * pixel_nm  # by_edge: distance to the frame edge (64×64 frames)
        h = evaluate(t["frame"], t["xyz_nm"], q["frame"], q["xyz_nm"], method="hungarian",
                     tol_xy_nm=100, tol_z_nm=100, tol_3d_nm=100, z_step_nm=500.0,
                     field_nm=None if context else (side_nm, side_nm))
        g = evaluate(t["frame"], t["xyz_nm"], q["frame"], q["xyz_nm"], z_step_nm=500.0)
        row = dict(emitters_per_frame=count, density_per_um2=density, context_px=context,
                   jaccard_100nm=h["jaccard"] / 100, rmse_xy_nm=h["rmse_xy_nm"],
                   rmse_z_nm=h["rmse_z_nm"], recall_100nm=h["recall"],
                   precision_100nm=h["precision"], jaccard_greedy=g["jaccard"] / 100,
                   rmse_xy_greedy_nm=g["rmse_xy_nm"], rmse_z_greedy_nm=g["rmse_z_nm"],
                   frames_per_s=loc["frames_per_s"], by_z=h.get("by_z", []),
                   by_edge=h.get("by_edge", []))
        rows.append(row)
        print(f"{count:3d}/frame ({density:.2f}/µm²): Jaccard(100 nm) "
              f"{row['jaccard_100nm']:.3f}, RMSE xy {row['rmse_xy_nm']:.1f} nm, "
              f"z {row['rmse_z_nm']:.1f} nm; greedy Jaccard {row['jaccard_greedy']:.3f}; "
              f"{row['frames_per_s']:.1f} frames/s")
    mean_xy = float(np.mean(np.sqrt(bound["crlb_x"] ** 2 + bound["crlb_y"] ** 2)))
    mean_z = float(np.mean(bound["crlb_z"]))
    print(f"CRLB ({photons:g} photons, {background:g} background/px), mean over z: "
          f"lateral {mean_xy:.1f} nm (radial), axial {mean_z:.1f} nm")
    out = dict(model=str(args.model), settings=pred.settings, crlb={
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
    """Re-tune a trained model's threshold on its validation set (``methods.tuning_match``)."""
    from deepsmlm.config import load_experiment as load
    from deepsmlm.data.datasets import PatchSampler, fixed_batches
    from deepsmlm.inference import Predictor
    from deepsmlm.io.models import read_json, write_json
    from deepsmlm.training.deepstorm import tune_threshold

    folder = Path(args.model)
    exp = load(folder / "experiment.yaml")
    t = exp.training
    s = read_json(folder / "model.json")
    if s.get("threshold") is None:  # training was stopped before it tuned one
        s["threshold"] = 1.0
        write_json(folder / "model.json", s)
    pred = Predictor.load(folder, args.device)
    val = fixed_batches(PatchSampler(exp), t.val_frames, t.batch_size, t.seed + 1)
    tuned = tune_threshold(pred.model, pred.normalizer, val, pred.settings, args.device)
    s.update(threshold=tuned["threshold"], validation=tuned)
    write_json(folder / "model.json", s)
    print(json.dumps(tuned, indent=1))


def cmd_loss_optimum(args) -> None:
    """What each target encoding + loss can represent at best: a free output volume (no
    network) is fitted to the loss by Adam, starting from the ideal scale·target, and
    decoded like a network's output. Emitters: the CPU config's grid, 23 per frame, 4 frames.
    """
    import torch

    from deepsmlm.data.targets import voxel_grid
    from deepsmlm.evaluation.metrics import evaluate
    from deepsmlm.losses import deepstorm3d_loss
    from deepsmlm.postprocess import decode_3d

    torch.set_num_threads(1)
    exp = load_experiment(CONFIG)
    t = exp.training
    px, (z_lo, z_hi) = exp.optics.pixel_size_nm, exp.emitters.z_range_nm
    gen = torch.Generator().manual_seed(0)
    frames, n, side = 4, 4 * 23, t.patch_px
    lo = torch.tensor([2 * px, 2 * px, z_lo + 100.0])
    span = torch.tensor([(side - 4) * px, (side - 4) * px, z_hi - z_lo - 200.0])
    xyz = lo + span * torch.rand(n, 3, generator=gen)
    fr = torch.randint(0, frames, (n,), generator=gen)
    shape = (frames, t.depth_planes, side, side)
    scale = t.target_scale
    cases = [("voxel", "Σp + Σt", False, 1.0), ("trilinear", "Σp + Σt", False, 1.0),
             ("trilinear", "Σp² + Σt²", True, 1.0), ("trilinear", "none", False, 0.0)]
    print("| target | Dice denominator | Jaccard (100 nm) | RMSE_xy [nm] | RMSE_z [nm] |")
    print("|---|---|---:|---:|---:|")
    for encoding, label, squares, weight in cases:
        target = voxel_grid(xyz, fr, shape, px, (z_lo, z_hi), trilinear=encoding == "trilinear")
        vol = (scale * target).requires_grad_(True)
        opt = torch.optim.Adam([vol], lr=5.0)
        for _ in range(args.steps):
            loss = deepstorm3d_loss(vol.clamp(0, scale), target, scale, t.heatmap_sigma_px,
                                    t.heatmap_sigma_planes, weight, True, squares)
            opt.zero_grad()
            loss.backward()
            opt.step()
        score = "mass" if encoding == "trilinear" else "peak"
        em = decode_3d(vol.detach().clamp(0, scale), px, (z_lo, z_hi), 0.5 * scale, scale,
                       score=score)
        r = evaluate(fr.numpy(), xyz.numpy(), em.frame.numpy(), em.xyz_nm.numpy(),
                     method="hungarian", tol_xy_nm=100, tol_z_nm=100, tol_3d_nm=100)
        print(f"| {encoding} | {label} | {r['jaccard'] / 100:.3f} | {r['rmse_xy_nm']:.1f} | "
              f"{r['rmse_z_nm']:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("movies")
    m.add_argument("--out", required=True)
    m.add_argument("--frames", type=int, default=100)
    m.add_argument("--config", default=str(CONFIG), help="experiment (its PSF renders)")
    m.add_argument("--context-px", type=int, default=0,
                   help="simulate this many px of field around each 64×64 scored region")
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
