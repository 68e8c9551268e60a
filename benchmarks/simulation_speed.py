"""Simulation throughput: frames/s of `deepsmlm.simulate` for the shipped experiments.

    python benchmarks/simulation_speed.py [--device cpu|cuda] [--repeats 3] [--json OUT]

Reports, per experiment: frame size, emitters per frame, PSF model, frames/s (best of
`--repeats` runs after one warm-up), and the machine's measured float32 matmul GFLOP/s.
The Tetrapod row needs ../shared/data (skipped when absent). Goals (issue 2): ≥ 200
frames/s for 2d-dense (64×64, ≈ 250 emitters/frame) and ≥ 50 frames/s for the Tetrapod
pupil model (64×64, 30 emitters/frame) on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from common import CONFIGS, matmul_gflops

from deepsmlm.api import simulate
from deepsmlm.config import load_experiment
from deepsmlm.errors import UserError

CASES = [("2d-dense.yaml", 400, 200.0), ("3d-tetrapod.yaml", 100, 50.0),
         ("3d-astigmatic.yaml", 100, None), ("smlm2016-2d.yaml", 100, None)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    info = dict(machine=platform.machine(), processor=platform.processor(),
                cpus=os.cpu_count(), torch=torch.__version__, threads=torch.get_num_threads(),
                device=args.device, matmul_gflops=round(matmul_gflops(args.device), 1))
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(info))
    rows = []
    for name, frames, goal in CASES:
        try:
            exp = load_experiment(CONFIGS / name)
            simulate(exp, 8, seed=0, device=args.device)  # warm-up (and mask loading)
        except UserError as err:
            print(f"{name}: skipped ({err})")
            continue
        best = float("inf")
        for r in range(args.repeats):
            t = time.perf_counter()
            movie = simulate(exp, frames, seed=100 + r, device=args.device)
            if args.device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        row = dict(experiment=name, psf=exp.optics.psf, mask=exp.optics.mask.kind,
                   frame=f"{exp.frame.height_px}x{exp.frame.width_px}", frames=frames,
                   emitters_per_frame=round(len(movie.emitters) / frames, 1),
                   frames_per_s=round(frames / best, 1), goal_frames_per_s=goal)
        rows.append(row)
        ok = "" if goal is None else ("  (goal met)" if row["frames_per_s"] >= goal
                                      else "  (BELOW GOAL)")
        print(f"{name:20s} {row['psf']:20s} {row['frame']:6s} "
              f"{row['emitters_per_frame']:6.1f} em/frame  {row['frames_per_s']:8.1f} frames/s{ok}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(info=info, rows=rows), indent=2))


if __name__ == "__main__":
    main()
