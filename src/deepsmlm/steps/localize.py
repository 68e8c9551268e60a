"""``deepsmlm localize``: a movie through a trained model of any method."""

from __future__ import annotations

import time

import numpy as np

from deepsmlm.steps.common import check_movie_fits_model, out_dir


def run_localize(model_dir, movie, out, chunk_frames: int = 256, batch_size: int = 16,
                 device: str = "cpu", camera: dict | None = None,
                 threshold: float | None = None, progress: bool = True) -> dict:
    """Localize a movie; writes localizations.csv/.hdf5, sr.tif, sr.png; returns a summary.

    sr.tif is the method's output image summed over frames (Deep-STORM: the super-resolved
    image; DeepSTORM3D: its z projection; fastloc: the detection probability); sr.png is
    the method's preview beside the widefield sum."""
    from deepsmlm.inference import Predictor, localize_stack
    from deepsmlm.io.frames import read_stack, write_stack
    from deepsmlm.io.localizations import write_csv, write_picasso

    pred = Predictor.load(model_dir, device, camera)
    if threshold is not None:
        pred.card.threshold = float(threshold)
    stack = read_stack(movie)
    px = pred.card.pixel_size_nm
    check_movie_fits_model(stack, pred.card)  # issue 17: a pixel-size mismatch is an error
    out = out_dir(out)
    t0 = time.perf_counter()
    em, sr, wf = localize_stack(pred, stack, chunk_frames, batch_size, progress)
    seconds = time.perf_counter() - t0
    n, h, w = stack.data.shape
    write_csv(em, out / "localizations.csv", value_column=pred.method.value_column)
    write_picasso(em, out / "localizations.hdf5", px, (h, w), n, source=str(movie))
    write_stack(out / "sr.tif", sr.astype(np.float32)[None], pred.fine_pixel_nm, axes="ZYX")
    pred.method.preview(pred.card, wf, sr, em, out / "sr.png",
                        f"{n} frames, {len(em)} localizations")
    return {"frames": n, "localizations": len(em), "seconds": seconds,
            "frames_per_s": n / seconds, "out": str(out)}
