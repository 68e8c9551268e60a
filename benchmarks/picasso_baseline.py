"""The bar to beat: Picasso (spot finding + Gaussian least squares) and the CRLB on
`2d-dense.yaml` movies at several densities.

    python benchmarks/picasso_baseline.py [--frames 100] [--json bench_out/picasso_baseline.json]

Needs the optional extra `[peers]` (picassosr). For each density (emitters/µm²/frame) a
tuning movie (seed 7, 50 frames) picks Picasso's minimum net gradient (best Jaccard over a
sweep) and a held-out movie (seed 1000 + i) is evaluated with the SMLM-Challenge matching
(greedy, 250 nm). The CRLB line is the lateral bound of one emitter with the movie's mean
photons and background (``build.crlb_operating_point``) through the same PSF and camera:
σ_x per axis, and √2·σ_x, the bound on the radial RMSE that `rmse_xy_nm` reports.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from common import DENSITIES, density_experiment
from peers.picasso_peer import localize_picasso

from deepsmlm.api import crlb_table, simulate
from deepsmlm.build import build_camera, crlb_operating_point, field_nm
from deepsmlm.evaluation.metrics import evaluate

THRESHOLDS = (500.0, 1000.0, 2000.0, 3000.0, 5000.0, 8000.0, 12000.0)


def score(exp, movie, threshold: float, box: int) -> tuple[dict, float]:
    em, seconds = localize_picasso(movie.frames_adu, exp.optics.pixel_size_nm,
                                   build_camera(exp), threshold, box)
    t, p = movie.emitters.numpy(), em.numpy()
    return evaluate(t["frame"], t["xyz_nm"], p["frame"], p["xyz_nm"],
                    field_nm=field_nm(exp)), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--box", type=int, default=7)
    ap.add_argument("--tune-frames", type=int, default=50)
    ap.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES),
                    choices=DENSITIES, help="a subset (the same movies)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    exp0 = density_experiment(1.0)
    warm = simulate(exp0, 4, seed=0)
    localize_picasso(warm.frames_adu, 100.0, build_camera(exp0), 2000.0, args.box)  # JIT

    photons, bg = crlb_operating_point(exp0)
    bound = crlb_table(exp0, photons, bg, np.array([0.0]))["crlb_x"][0]
    print(f"CRLB (x, per axis) {bound:.2f} nm; radial {math.sqrt(2) * bound:.2f} nm "
          f"({photons:g} photons, {bg:g} background photons/px, EMCCD)")

    rows = []
    for i, density in enumerate(DENSITIES):
        if density not in args.densities:
            continue
        exp = density_experiment(density)
        tune = simulate(exp, args.tune_frames, seed=7)
        best = max(THRESHOLDS, key=lambda g: np.nan_to_num(score(exp, tune, g, args.box)[0]
                                                           ["jaccard"], nan=-1))
        test = simulate(exp, args.frames, seed=1000 + i)
        t0 = time.perf_counter()
        res, seconds = score(exp, test, best, args.box)
        wall = time.perf_counter() - t0
        row = dict(density_per_um2=density,
                   emitters_per_frame=round(len(test.emitters) / args.frames, 1),
                   min_net_gradient=best, jaccard=res["jaccard"], recall=res["recall"],
                   precision=res["precision"], rmse_xy_nm=res["rmse_xy_nm"],
                   efficiency_xy=res["efficiency_xy"], frames_per_s=args.frames / seconds,
                   wall_s=wall)
        rows.append(row)
        print(f"density {density:4.1f}/µm² ({row['emitters_per_frame']:6.1f}/frame), "
              f"net gradient {best:>7g}: Jaccard {res['jaccard']:5.1f} %, "
              f"RMSE {res['rmse_xy_nm']:5.1f} nm, E_xy {res['efficiency_xy']:5.1f}, "
              f"recall {res['recall']:.2f}, precision {res['precision']:.2f}, "
              f"{row['frames_per_s']:.0f} frames/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(crlb_x_nm=bound, crlb_radial_nm=math.sqrt(2) * bound,
                                             photons=photons, background=bg, rows=rows),
                                        indent=2))


if __name__ == "__main__":
    main()
