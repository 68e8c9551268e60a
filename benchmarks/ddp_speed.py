"""Training throughput of torch DDP on this machine: 1 process vs K processes (torchrun,
gloo on the CPU, one thread per rank), the same experiment and the same time budget.

    python benchmarks/ddp_speed.py [--minutes 2] [--ranks 1 2] [--model fastloc]

Each run is ``deepsmlm train`` (1 rank: plain; K ranks: ``torchrun --standalone
--nproc_per_node K -m deepsmlm.cli train``) of ``configs/2d-dense.yaml`` with the method's
default network and batch, ``--max-minutes``; its model card gives the optimiser steps and
samples done and the training seconds (validation included: 32 frames after every 50
steps). A rank's step is one batch of ``batch_size``; K ranks together take one step of
K × ``batch_size`` samples (gradients averaged). With ``--threads-reference`` one more
single-process run uses as many threads as there are ranks (what one process would do with
the cores instead). Writes ``bench_out/ddp_speed.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import CONFIG_2D, ROOT

from deepsmlm.config import experiment_from_dict, load_experiment

STEPS_PER_EPOCH = 50
VAL_FRAMES = 32


def run(config: Path, out: Path, ranks: int, minutes: float, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    args = ["train", str(config), "--out", str(out), "--max-minutes", str(minutes), "--quiet"]
    if ranks == 1:
        cmd = [sys.executable, "-m", "deepsmlm.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(ranks), "-m", "deepsmlm.cli", *args]
    t0, load_before = time.perf_counter(), os.getloadavg()[0]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    card = json.loads((out / "model.json").read_text())
    t = card["training"]
    with open(out / "curves.csv") as f:
        steps = sum(int(r["steps"]) for r in csv.DictReader(f))
    return {"ranks": ranks, "threads_per_rank": threads, "batch_size_per_rank":
            t["effective_batch_size"] // t["world_size"],
            "effective_batch_size": t["effective_batch_size"], "steps": steps,
            "samples": t["samples"], "training_seconds": t["seconds"],
            "steps_per_s": steps / t["seconds"], "samples_per_s": t["samples"] / t["seconds"],
            "epochs": t["epochs"], "best_val_loss": t["best_val_loss"],
            "wall_seconds": wall, "command": " ".join(cmd[1:]),
            # other work on the machine slows every rank: the 1-min load before and after
            "load_average_1min": [load_before, os.getloadavg()[0]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--model", default="fastloc")
    p.add_argument("--threads-reference", action="store_true")
    a = p.parse_args()
    d = load_experiment(CONFIG_2D).to_dict()
    d["training"] = {"model": a.model, "steps_per_epoch": STEPS_PER_EPOCH,  # else defaults
                     "val_frames": VAL_FRAMES, "max_epochs": 100000, "early_stop_epochs": 100000}
    exp = experiment_from_dict(d, base_dir=CONFIG_2D.parent)
    results = []
    with tempfile.TemporaryDirectory(prefix="ddp_speed_") as tmp:
        config = Path(tmp) / "experiment.yaml"
        config.write_text(yaml.safe_dump(exp.to_dict()))
        plan = [(k, 1) for k in a.ranks]
        if a.threads_reference:
            plan.append((1, max(a.ranks)))
        for ranks, threads in plan:
            out = Path(tmp) / f"k{ranks}_t{threads}"
            r = run(config, out, ranks, a.minutes, threads)
            shutil.rmtree(out)
            results.append(r)
            print(f"{ranks} rank(s) × {threads} thread(s): {r['steps_per_s']:.2f} steps/s per "
                  f"rank, {r['samples_per_s']:.1f} samples/s (effective batch "
                  f"{r['effective_batch_size']}), {r['steps']} steps in "
                  f"{r['training_seconds']:.0f} s", flush=True)
    report = {"experiment": "configs/2d-dense.yaml", "model": a.model,
              "minutes": a.minutes, "cpu_count": os.cpu_count(), "runs": results}
    out = ROOT / "bench_out" / "ddp_speed.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"→ {out}")


if __name__ == "__main__":
    main()
