"""Deep-STORM 2D against Picasso and the CRLB on `2d-dense.yaml` movies at 0.5–6 emitters/µm².

    python benchmarks/deepstorm2d.py train   --out bench_out/ds2d [--device cuda] [--minutes 6]
    python benchmarks/deepstorm2d.py movies  --out bench_out/movies2d          # held-out movies
    python benchmarks/deepstorm2d.py evaluate --model bench_out/ds2d/model \
        --movies bench_out/movies2d [--device cuda] [--json bench_out/deepstorm2d.json]

`train` fits the published network (U = 8, 1.37 M weights, 26-px patches) on frames
simulated on the fly with densities drawn in [0.25, 8] emitters/µm², so one model serves all
densities; the threshold is tuned on its validation set. `movies` writes the held-out movies
(the same seeds as `picasso_baseline.py`: 1000 + i, 100 frames). `evaluate` localizes them,
reports Jaccard, lateral RMSE, efficiency, SR-image correlation with the ground truth
(σ = 1 fine pixel), frames/s, the model's FLOPs per frame and the device's matmul rate, and
puts Picasso's numbers (bench_out/picasso_baseline.json) beside them when present.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import DENSITIES, density_experiment, matmul_gflops

from deepsmlm.api import simulate, write_movie


def cmd_train(args) -> None:
    from deepsmlm.api import run_train

    exp = density_experiment(None, model="deepstorm", density_range_per_um2=[0.25, 8.0],
                             batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch,
                             max_epochs=1000, early_stop_epochs=1000,
                             lr_patience_epochs=args.lr_patience, val_frames=args.val_frames,
                             seed=11)
    t0 = time.perf_counter()
    card = run_train(exp, Path(args.out) / "model", max_minutes=args.minutes,
                     device=args.device, progress=False)
    print(json.dumps({"validation": card.validation, "training": card.training,
                      "wall_s": time.perf_counter() - t0}, indent=1))


def cmd_movies(args) -> None:
    out = Path(args.out)
    for i, density in enumerate(DENSITIES):
        if density not in args.densities:
            continue
        exp = density_experiment(density)
        if args.psf_sigma_nm is not None:  # a PSF a little off the one trained on
            exp.optics.gaussian_sigma_nm = args.psf_sigma_nm
        movie = simulate(exp, args.frames, seed=1000 + i)
        write_movie(movie, out / f"density_{density:g}")
        print(f"density {density:g}: {len(movie.emitters) / args.frames:.1f} emitters/frame")


def cmd_evaluate(args) -> None:
    from deepsmlm.api import run_evaluate, run_localize
    from deepsmlm.evaluation.image import sr_correlation
    from deepsmlm.inference import Predictor
    from deepsmlm.io.frames import read_stack
    from deepsmlm.io.localizations import read_csv
    from deepsmlm.models.deepstorm import flops_per_frame

    pred = Predictor.load(args.model, args.device)
    card = pred.card
    flops = flops_per_frame(pred.model, 64, 64)
    peak = matmul_gflops(args.device, n=4096)
    peers = {}
    if args.picasso and Path(args.picasso).is_file():
        peers = {r["density_per_um2"]: r for r in json.loads(Path(args.picasso).read_text())
                 ["rows"]}
    rows = []
    for density in args.densities:
        mdir = Path(args.movies) / f"density_{density:g}"
        res_dir = Path(args.out) / f"density_{density:g}"
        loc = run_localize(args.model, mdir / "frames.tif", res_dir, batch_size=args.batch_size,
                           device=args.device, progress=False)
        m = run_evaluate(res_dir / "localizations.csv", mdir / "truth.csv",
                         experiment=mdir / "experiment.yaml")
        sr = np.asarray(read_stack(res_dir / "sr.tif", allow_single_frame=True).data[0])
        truth = read_csv(mdir / "truth.csv").numpy()
        r = sr_correlation(sr, truth["xyz_nm"][:, :2], card.fine_pixel_nm)
        row = dict(density_per_um2=density, jaccard=m["jaccard"], recall=m["recall"],
                   precision=m["precision"], rmse_xy_nm=m["rmse_xy_nm"],
                   efficiency_xy=m["efficiency_xy"], sr_correlation=r,
                   frames_per_s=loc["frames_per_s"])
        p = peers.get(density)
        if p:
            row.update(picasso_jaccard=p["jaccard"], picasso_rmse_xy_nm=p["rmse_xy_nm"],
                       picasso_efficiency_xy=p["efficiency_xy"],
                       picasso_frames_per_s=p["frames_per_s"])
        rows.append(row)
        extra = f"  Picasso {p['jaccard']:.1f} %" if p else ""
        print(f"density {density:g}: Jaccard {m['jaccard']:.1f} %{extra}, RMSE "
              f"{m['rmse_xy_nm']:.1f} nm, E {m['efficiency_xy']:.1f}, r = {r:.3f}, "
              f"{loc['frames_per_s']:.1f} frames/s")
    out = dict(device=args.device, gpu=torch.cuda.get_device_name() if args.device == "cuda"
               else None, matmul_gflops=peak, model_gflop_per_frame=flops / 1e9,
               weights=sum(p.numel() for p in pred.model.parameters()),
               training=card.training, validation=card.validation,
               threshold=card.threshold, rows=rows)
    for row in rows:
        row["fraction_of_peak"] = row["frames_per_s"] * flops / (peak * 1e9)
    print(f"model {flops / 1e9:.1f} GFLOP per 64×64 frame; device matmul {peak:.0f} GFLOP/s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, default=float))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--device", default="cpu")
    t.add_argument("--minutes", type=float, default=60.0)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--steps-per-epoch", type=int, default=400)
    t.add_argument("--lr-patience", type=int, default=5)
    t.add_argument("--val-frames", type=int, default=256)
    t.set_defaults(func=cmd_train)
    m = sub.add_parser("movies")
    m.add_argument("--out", required=True)
    m.add_argument("--frames", type=int, default=100)
    m.add_argument("--psf-sigma-nm", type=float, default=None,
                   help="render with this Gaussian σ instead of the config's 110 nm")
    m.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES),
                   choices=DENSITIES, help="a subset (the same movies)")
    m.set_defaults(func=cmd_movies)
    e = sub.add_parser("evaluate")
    e.add_argument("--model", required=True)
    e.add_argument("--movies", required=True)
    e.add_argument("--out", default="bench_out/ds2d_eval")
    e.add_argument("--device", default="cpu")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--picasso", default="bench_out/picasso_baseline.json")
    e.add_argument("--json", default=None)
    e.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    e.set_defaults(func=cmd_evaluate)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
