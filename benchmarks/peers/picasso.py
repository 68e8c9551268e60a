"""Peer harness: Picasso's spot finding + Gaussian fitting on a stack, written as our CSV.

Needs the optional extra: ``pip install -e ".[peers]"`` (picassosr; never a core
dependency). Run on a movie simulated by deepsmlm:

    python benchmarks/peers/picasso.py sim/frames.tif --experiment sim/experiment.yaml \
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

    localize = installed_picasso().localize

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
    unc = np.sqrt(0.5 * (locs["lpx"].to_numpy(float) ** 2 + locs["lpy"].to_numpy(float) ** 2))
    em = EmitterSet.from_numpy(np.column_stack([x, y, np.zeros_like(x)]),
                               locs["photons"].to_numpy(float) / camera.qe,
                               locs["frame"].to_numpy().astype(np.int64), None, unc * px)
    return em, seconds


def installed_picasso():
    """The installed ``picasso`` package, its ``localize`` module imported.

    Imported as ``peers.picasso``, a plain import. Run as a script, this file's folder leads
    the import path and ``import picasso`` would find this very file: the package is then
    loaded from where its distribution (picassosr) installed it."""
    import importlib

    if __name__ == "__main__":
        return _load_installed("picasso", "picassosr")
    importlib.import_module("picasso.localize")
    return sys.modules["picasso"]


def _load_installed(package: str, distribution: str):
    """``package`` of the installed ``distribution``, located by its metadata (not by the
    import path) and registered in ``sys.modules``, so that its own imports find it."""
    import importlib
    import importlib.util
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import distribution as dist

    if package not in sys.modules:
        try:
            init = Path(dist(distribution).locate_file(f"{package}/__init__.py"))
        except PackageNotFoundError:
            init = None
        if init is None or not init.is_file():
            raise ImportError(f"no installed {package} package ({distribution}): "
                              'pip install -e ".[peers]"')
        spec = importlib.util.spec_from_file_location(
            package, init, submodule_search_locations=[str(init.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[package]
            raise
    importlib.import_module(f"{package}.localize")
    return sys.modules[package]


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
