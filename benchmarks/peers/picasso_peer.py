"""Peer harness: Picasso's spot finding + Gaussian fitting on a stack, written as our CSV.

Needs the optional extra: ``pip install -e ".[peers]"`` (picassosr; never a core
dependency). Run on a movie simulated by deepsmlm:

    python benchmarks/peers/picasso_peer.py sim/frames.tif --experiment sim/experiment.yaml \
        --out picasso.csv [--min-net-gradient 3000 --box 7 --fit gausslq]

Camera values (baseline, e⁻/ADU, EM gain) and the pixel size come from the experiment, so
Picasso sees the same calibration as deepsmlm. Picasso puts the centre of pixel i at i;
positions are converted to our convention (nm, centre at i + 0.5) on the way out.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from deepsmlm.camera import Camera
from deepsmlm.emitters import EmitterSet
from deepsmlm.io.localizations import PICASSO_OFFSET_PX, write_csv


def camera_info(camera: Camera, pixel_size_nm: float) -> dict:
    """Picasso's camera dictionary from ours (Picasso ignores QE since v0.6)."""
    return {"Baseline": float(camera.baseline_adu), "Sensitivity": float(camera.e_per_adu),
            "Gain": float(camera.em_gain), "Qe": float(camera.qe),
            "Pixelsize": float(pixel_size_nm)}


def localize_picasso(frames: np.ndarray, pixel_size_nm: float, camera: Camera,
                     min_net_gradient: float, box: int = 7, fitting_method: str = "gausslq",
                     threaded: bool = True) -> tuple[EmitterSet, float]:
    """Run Picasso identify + fit on frames (T, H, W) in ADU; returns (localizations, seconds).

    Photons are converted back to photons at the sample with our QE (Picasso reports
    photo-electrons).
    """
    import pandas as pd  # noqa: F401  (picasso needs it; fail early and clearly)
    from picasso import localize

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "movie.npy")
        np.save(path, np.ascontiguousarray(frames, dtype=np.uint16))
        movie = np.load(path, mmap_mode="r")
        t0 = time.perf_counter()
        ids = localize.identify(movie, min_net_gradient, box, threaded=threaded,
                                return_info=False)
        if isinstance(ids, tuple):
            ids = ids[0]
        if len(ids) == 0:
            return EmitterSet.empty(), time.perf_counter() - t0
        locs, _ = localize.fit(movie, camera_info=camera_info(camera, pixel_size_nm),
                               identifications=ids, box=box, fitting_method=fitting_method,
                               multiprocess=threaded)
        seconds = time.perf_counter() - t0
    # drop failed fits (non-finite values), as Picasso's own loader does
    cols = ["x", "y", "photons", "lpx", "lpy"]
    locs = locs[np.isfinite(locs[cols].to_numpy(float)).all(axis=1)]
    px = pixel_size_nm
    x = (locs["x"].to_numpy(float) + PICASSO_OFFSET_PX) * px
    y = (locs["y"].to_numpy(float) + PICASSO_OFFSET_PX) * px
    # per-axis precision (Picasso: camera pixels) → nm; a 2D fit knows nothing of z
    unc = np.column_stack([locs["lpx"].to_numpy(float) * px, locs["lpy"].to_numpy(float) * px,
                           np.full(len(x), np.nan)])
    em = EmitterSet.from_numpy(np.column_stack([x, y, np.zeros_like(x)]),
                               locs["photons"].to_numpy(float) / camera.qe,
                               locs["frame"].to_numpy().astype(np.int64), None, unc)
    return em, seconds


def main(argv: list[str] | None = None) -> int:
    from deepsmlm.build import build_camera
    from deepsmlm.config import load_experiment
    from deepsmlm.errors import UserError
    from deepsmlm.io.frames import read_stack

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("movie", type=Path)
    ap.add_argument("--experiment", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--min-net-gradient", type=float, default=3000.0)
    ap.add_argument("--box", type=int, default=7)
    ap.add_argument("--fit", default="gausslq")
    args = ap.parse_args(argv)
    try:
        exp = load_experiment(args.experiment)
        frames = np.asarray(read_stack(args.movie).data)
    except UserError as err:
        print(f"picasso peer: error: {err}", file=sys.stderr)
        return 2
    em, seconds = localize_picasso(frames, exp.optics.pixel_size_nm, build_camera(exp),
                                   args.min_net_gradient, args.box, args.fit)
    write_csv(em, args.out)
    print(f"Picasso: {len(em)} localizations in {seconds:.2f} s "
          f"({len(frames) / seconds:.1f} frames/s) → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
