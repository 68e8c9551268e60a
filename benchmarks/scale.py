"""Scale on one machine (issue 17): peak memory of ``simulate`` and ``localize`` against the
movie's length, and localize frames/s in one process against a Dask LocalCluster.

    python benchmarks/scale.py rss  --out bench_out/scale --frames 2000 20000
    python benchmarks/scale.py dask --out bench_out/scale --model bench_out/fl2d --frames 600

``rss``: a 256×256 movie of each length is simulated (``deepsmlm simulate``, streamed) and
localized (``deepsmlm localize``) by a small fastloc model trained here for a minute; each
command runs in its own process and its peak resident memory (``ru_maxrss``) is read by a
fresh parent, so nothing else is counted. The movies are never kept in the repository
(20,000 frames are 2.6 GB). ``dask``: the same movie localized by one process (all cores,
then one thread) and by ``--dask local:2`` (two single-threaded worker processes), in
chunks of 32 frames; the tables must agree. The times include starting the cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from common import CONFIG_2D, ROOT, edited_experiment

DEEPSMLM = [sys.executable, "-m", "deepsmlm.cli"]
# The RSS movie: 256×256 px, EMCCD, a Gaussian PSF (the model is small and the point is the
# memory, not the accuracy), about 30 emitters per frame.
FRAME = {"height_px": 256, "width_px": 256}
TINY_TRAINING = {"model": "fastloc", "width": 8, "patch_px": 32, "batch_size": 16,
                 "steps_per_epoch": 100, "max_epochs": 8, "val_frames": 64}


def measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` in a child of a fresh Python process: wall seconds and its peak RSS."""
    probe = ("import resource, subprocess, sys, time, json\n"
             "t = time.perf_counter(); rc = subprocess.run(sys.argv[1:]).returncode\n"
             "print(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t, 'peak_rss_mb':"
             " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True,
                         env=env or dict(os.environ))
    if out.returncode != 0 or not out.stdout.strip():
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r["rc"] != 0:
        raise SystemExit(f"exit {r['rc']}: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return r


def experiment(out: Path) -> Path:
    exp = edited_experiment(CONFIG_2D, frame=FRAME, emitters={"density_per_um2": 0.05},
                            training=TINY_TRAINING)
    d = exp.to_dict()
    d["optics"]["psf"] = "gaussian"
    path = out / "exp256.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def cmd_rss(args) -> None:
    out = Path(args.out)
    exp = experiment(out)
    model = out / "tiny_model"
    if not (model / "model.json").is_file():
        subprocess.run([*DEEPSMLM, "train", str(exp), "--out", str(model), "--quiet"],
                       check=True)
    rows = []
    for n in args.frames:
        movie = out / f"movie_{n}"
        sim = measured([*DEEPSMLM, "simulate", str(exp), "--frames", str(n), "--out",
                        str(movie), "--seed", "1", "--quiet"])
        loc = measured([*DEEPSMLM, "localize", str(model), str(movie / "frames.tif"),
                        "--out", str(out / f"loc_{n}"), "--quiet",
                        *([] if args.threshold is None else ["--threshold",
                                                              str(args.threshold)])])
        summary = json.loads((out / f"loc_{n}" / "localize.json").read_text())
        rows.append({"frames": n, "movie_gb": (movie / "frames.tif").stat().st_size / 1e9,
                     "simulate_peak_rss_mb": sim["peak_rss_mb"],
                     "simulate_s": sim["seconds"],
                     "localize_peak_rss_mb": loc["peak_rss_mb"], "localize_s": loc["seconds"],
                     "localize_frames_per_s": summary["frames_per_s"],
                     "localizations": summary["localizations"]})
        print(json.dumps(rows[-1]), flush=True)
        if not args.keep_movies:
            (movie / "frames.tif").unlink()
    a, b = rows[0], rows[-1]
    result = {"rows": rows, "chunk_frames": 256,
              "localize_rss_ratio": b["localize_peak_rss_mb"] / a["localize_peak_rss_mb"],
              "simulate_rss_ratio": b["simulate_peak_rss_mb"] / a["simulate_peak_rss_mb"],
              "command": "python benchmarks/scale.py rss --out bench_out/scale "
                         f"--frames {' '.join(map(str, args.frames))}"}
    _write(args.json, result)


def cmd_dask(args) -> None:
    out = Path(args.out)
    exp = experiment(out)
    movie = out / f"dask_movie_{args.frames}"
    if not (movie / "frames.tif").is_file():
        subprocess.run([*DEEPSMLM, "simulate", str(exp), "--frames", str(args.frames),
                        "--out", str(movie), "--seed", "2", "--quiet"], check=True)
    runs = {}
    chunk = ["--chunk-frames", str(args.chunk_frames)]
    one_thread = dict(os.environ, OMP_NUM_THREADS="1")
    for name, extra, env in (("single", [], None),
                             ("single_1_thread", [], one_thread),
                             ("dask_local_2", ["--dask", "local:2"], None)):
        t, wall = time.perf_counter(), None
        if not (args.reuse and (out / f"dask_{name}" / "localize.json").is_file()):
            subprocess.run([*DEEPSMLM, "localize", str(args.model), str(movie / "frames.tif"),
                            "--out", str(out / f"dask_{name}"), "--quiet", *chunk, *extra],
                           check=True, env=env)
            wall = time.perf_counter() - t
        s = json.loads((out / f"dask_{name}" / "localize.json").read_text())
        runs[name] = {"frames_per_s": s["frames_per_s"], "wall_s_with_start": wall,
                      "localizations": s["localizations"]}
        print(name, json.dumps(runs[name]), flush=True)
    def rows(name):
        return (out / f"dask_{name}" / "localizations.csv").read_text().splitlines()

    dask_rows = rows("dask_local_2")
    # the workers run one thread each: byte for byte the one-thread process; a process on
    # more threads sums convolutions in another order (last digits of a few rows)
    same = dask_rows == rows("single_1_thread")
    other = sum(a != b for a, b in zip(dask_rows, rows("single"), strict=False)) + abs(
        len(dask_rows) - len(rows("single")))
    fps = {k: v["frames_per_s"] for k, v in runs.items()}
    result = {"frames": args.frames, "chunk_frames": args.chunk_frames,
              "model": str(args.model), "runs": runs,
              "identical_to_single_1_thread": same,
              "rows_differing_from_single_all_threads": other,
              "speedup_vs_single": fps["dask_local_2"] / fps["single"],
              "speedup_vs_single_1_thread": fps["dask_local_2"] / fps["single_1_thread"],
              "cores": os.cpu_count(),
              "command": f"python benchmarks/scale.py dask --out {args.out} --model "
                         f"{args.model} --frames {args.frames} "
                         f"--chunk-frames {args.chunk_frames}"}
    print(json.dumps(result, indent=1))
    _write(args.json, result)


def _write(path, result) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("rss")
    s.add_argument("--out", default=str(ROOT / "bench_out" / "scale"))
    s.add_argument("--frames", type=int, nargs="+", default=[2000, 20000])
    s.add_argument("--keep-movies", action="store_true")
    s.add_argument("--threshold", type=float, default=None,
                   help="detection threshold (default: the model's tuned one)")
    s.add_argument("--json", default=str(ROOT / "bench_out" / "scale_rss.json"))
    s.set_defaults(func=cmd_rss)
    s = sub.add_parser("dask")
    s.add_argument("--out", default=str(ROOT / "bench_out" / "scale"))
    s.add_argument("--model", default=str(ROOT / "bench_out" / "fl2d"))
    s.add_argument("--frames", type=int, default=600)
    s.add_argument("--chunk-frames", type=int, default=32)
    s.add_argument("--reuse", action="store_true", help="keep runs already in --out")
    s.add_argument("--json", default=str(ROOT / "bench_out" / "scale_dask.json"))
    s.set_defaults(func=cmd_dask)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
