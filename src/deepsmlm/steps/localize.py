"""``deepsmlm localize``: a movie through a trained model of any method, streamed to disk.

Memory is bounded by one chunk of frames, whatever the movie's length: each chunk's
localizations are appended to ``localizations.partial.csv`` (whole rows, synced) and the
running sums of the output image and of the widefield are saved with the progress in
``localize.partial.safetensors`` (one atomic file: frames done, rows written). A run that is
stopped — Ctrl-C, a crash, ``kill -9`` — leaves that valid partial result, clearly named;
``--resume`` continues after its last chunk. At the end the partial CSV becomes
``localizations.csv``, the Picasso file is written from it block by block, and the progress
files go. The chunks are computed here or on a Dask cluster (``--dask``,
``deepsmlm.parallel``); either way they are committed in frame order, so the result is the
same.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from deepsmlm.errors import UserError
from deepsmlm.steps.common import (
    check_device,
    check_localize_options,
    check_movie_fits_model,
    out_dir,
)

PARTIAL_CSV = "localizations.partial.csv"
PARTIAL_STATE = "localize.partial.safetensors"
PROGRESS_JSON = "localize.progress.json"
FINAL_FILES = ("localizations.csv", "localizations.hdf5", "localizations.yaml", "sr.tif",
               "sr.png", "localize.json")
DEFAULT_CHUNK_FRAMES = 256
DEFAULT_BATCH_SIZE = 16
PREVIEW_MAX_LOCALIZATIONS = 200_000


def run_localize(model_dir, movie, out, chunk_frames: int | None = None,
                 batch_size: int | None = None, device: str = "cpu",
                 camera: dict | None = None, threshold: float | None = None,
                 progress: bool = True, resume: bool = False, dask: str | None = None,
                 pixel_size_nm: float | None = None, refine: bool = False,
                 refine_roi_px: int | None = None) -> dict:
    """Localize a movie; writes localizations.csv/.hdf5, sr.tif, sr.png, localize.json;
    returns a summary.

    ``movie``: a TIFF, a folder or glob of TIFFs, or a Zarr array (``io.movies``). sr.tif
    is the method's output image summed over frames (Deep-STORM: the super-resolved image;
    DeepSTORM3D: its z projection; fastloc: the detection probability); sr.png is the
    method's preview beside the widefield sum. ``resume`` continues an interrupted run in
    ``out`` (same model and movie; its chunking, threshold and camera). ``dask``:
    ``local:N`` or a scheduler address (``tcp://HOST:PORT``). ``pixel_size_nm``: the
    movie's pixel size, overriding its metadata (which must otherwise agree with the
    model's within 2 %). ``refine``: each localization refined by maximum likelihood
    through the model's own PSF, with its Cramér–Rao σ (``deepsmlm.refine``), over
    ``refine_roi_px`` × ``refine_roi_px`` pixels about each (default: the crop a calibrated
    pupil was fitted on, else the PSF's patch)."""
    from deepsmlm.inference import Predictor
    from deepsmlm.io.atomic import remove_stale_temporaries
    from deepsmlm.io.lock import folder_lock
    from deepsmlm.io.movies import movie_identity, open_movie
    from deepsmlm.training.model_folder import ModelFolder

    device = check_device(device)
    check_localize_options(threshold, camera)
    if refine_roi_px is not None and (not refine or int(refine_roi_px) != refine_roi_px
                                      or refine_roi_px < 3):
        raise UserError(f"--refine-roi-px {refine_roi_px}: a whole number of pixels ≥ 3, "
                        "with --refine")
    pred = Predictor.load(model_dir, device, camera)
    stack = open_movie(movie)
    if pixel_size_nm is not None:
        stack.pixel_size_nm = float(pixel_size_nm)
    check_movie_fits_model(stack, pred.card)
    # built before anything is written (its errors first); a resumed run builds its own
    refiner = _refiner(model_dir, pred, refine_roi_px) if refine and not resume else None
    if resume and not (Path(out) / PARTIAL_STATE).is_file():
        raise UserError(f"--resume: no interrupted localize in {out}")
    out = out_dir(out)
    settings = {"model": _model_identity(model_dir), "movie": movie_identity(stack),
                "threshold": float(pred.card.threshold if threshold is None else threshold),
                "threshold_given": threshold is not None,
                "camera": {k: v for k, v in (camera or {}).items() if v is not None},
                "chunk_frames": chunk_frames, "batch_size": batch_size, "refine": bool(refine),
                "refine_roi_px": refine_roi_px}
    with folder_lock(out, "localize"):
        remove_stale_temporaries(out)  # of a run killed in the middle of a write
        state = _start(out, settings, resume)
        if state["settings"]["camera"] != settings["camera"]:  # a resumed run's own camera
            pred.normalizer = ModelFolder(model_dir).normalizer(pred.card,
                                                                state["settings"]["camera"])
        pred.card.threshold = state["settings"]["threshold"]
        if state["settings"].get("refine"):  # a resumed run refines as it did
            pred.refiner = refiner or _refiner(model_dir, pred,
                                               state["settings"].get("refine_roi_px"))
        run = _Run(out, pred, stack, state, progress)
        chunks, batch = state["settings"]["chunk_frames"], state["settings"]["batch_size"]
        try:
            if dask:
                from deepsmlm.parallel import localize_on_dask

                results = localize_on_dask(dask, model_dir, movie, len(stack), chunks, batch,
                                           device, state["settings"]["camera"],
                                           pred.card.threshold, state["frames_done"],
                                           refiner=pred.refiner)
            else:
                from deepsmlm.inference import localize_chunks

                results = localize_chunks(pred, stack, chunks, batch, state["frames_done"])
            for t0, r in results:
                run.commit(t0, r)
        except KeyboardInterrupt:
            run.close()
            held = (f"{out / PARTIAL_CSV} holds their {run.n_localizations} localizations"
                    if run.n_localizations else "no localizations yet")
            print(f"deepsmlm: localize interrupted after {run.frames_done} of {len(stack)} "
                  f"frames; {held}. Continue with --resume.", file=sys.stderr)
            raise
        run.close()
        return run.finish(str(movie), bool(dask))


def _refiner(model_dir, pred, roi_px: int | None):
    """The refinement through the PSF of the experiment the model was trained for, with the
    movie's camera (the model's, with the user's overrides)."""
    import numpy as np

    from deepsmlm.build import build_refiner
    from deepsmlm.config import load_experiment

    fit_z = bool(np.isfinite(pred.method.tuning_match(pred.card).get("tol_z_nm", np.inf)))
    refiner = build_refiner(load_experiment(_experiment_of(model_dir)), pred.normalizer.camera,
                            fit_z, fits_photons="photon" in pred.method.value_column,
                            roi_px=roi_px)
    if refiner.psf.takes_species and not pred.method.species_names(pred.card):
        raise UserError("--refine: the model's experiment has several species (one PSF each) "
                        "but the model does not tell them apart; refine a multicolor model")
    return refiner


def _experiment_of(model_dir) -> Path:
    """The model folder's experiment.yaml, which holds the PSF --refine fits through."""
    from deepsmlm.training.model_folder import ModelFolder

    path = ModelFolder(model_dir).experiment_path
    if not path.is_file():
        raise UserError(f"--refine: {path} is missing (the experiment the model was trained "
                        "for holds the PSF to fit through)")
    return path


def _model_identity(model_dir) -> dict:
    folder = Path(model_dir)
    out = {"path": str(folder.resolve())}
    for name in ("model.json", "weights.safetensors"):
        st = (folder / name).stat()
        out[name] = [st.st_size, int(st.st_mtime)]
    return out


def _start(out: Path, settings: dict, resume: bool) -> dict:
    """The run's state: a fresh one (old results in ``out`` removed), or the interrupted
    one (``resume``), checked against this model, movie and settings."""
    from deepsmlm.io.tensors import load_tensors

    state_path = out / PARTIAL_STATE
    n = settings["movie"]["shape"][0]
    if not resume:
        if state_path.exists():
            meta = _read_state_meta(state_path)
            raise UserError(f"{out} holds an interrupted localize ({meta['frames_done']} of "
                            f"{n} frames); continue it with --resume, or choose another --out")
        old = [f for f in FINAL_FILES + (PARTIAL_CSV, PROGRESS_JSON) if (out / f).exists()]
        if old:
            print(f"replacing the previous result in {out} ({', '.join(old)})", file=sys.stderr)
            for f in old:
                (out / f).unlink()
        s = dict(settings)
        s["chunk_frames"] = s["chunk_frames"] or DEFAULT_CHUNK_FRAMES
        s["batch_size"] = s["batch_size"] or DEFAULT_BATCH_SIZE
        return {"settings": s, "frames_done": 0, "csv_bytes": 0, "n_localizations": 0,
                "refine_counts": {},
                "n_uncertainty": None, "species": None, "species_probability": None,
                "seconds": 0.0, "sums": None}
    if not state_path.exists():
        raise UserError(f"--resume: no interrupted localize in {out}")
    meta = _read_state_meta(state_path)
    saved = meta["settings"]
    for key, what in (("model", "model"), ("movie", "movie")):
        if saved[key] != settings[key]:
            raise UserError(f"--resume: {out} was localizing another {what} "
                            f"({saved[key]['path']}); give the same {what}, or start again "
                            "without --resume")
    for key, flag in (("chunk_frames", "--chunk-frames"), ("batch_size", "--batch-size")):
        if settings[key] is not None and settings[key] != saved[key]:
            raise UserError(f"--resume: the interrupted run used {flag} {saved[key]}; give "
                            "the same or leave it out")
    if settings["threshold_given"] and settings["threshold"] != saved["threshold"]:
        raise UserError(f"--resume: the interrupted run used --threshold "
                        f"{saved['threshold']:g}; give the same or leave it out")
    if settings["refine"] and not saved.get("refine"):
        raise UserError("--resume: the interrupted run did not use --refine; leave it out, "
                        "or start again without --resume")
    if (settings["refine_roi_px"] is not None
            and settings["refine_roi_px"] != saved.get("refine_roi_px")):
        raise UserError(f"--resume: the interrupted run used --refine-roi-px "
                        f"{saved.get('refine_roi_px')}; give the same or leave it out")
    if settings["camera"] and settings["camera"] != saved["camera"]:
        raise UserError(f"--resume: the interrupted run used the camera values "
                        f"{saved['camera'] or 'of the model'}; give the same or leave them out")
    tensors = load_tensors(state_path)
    meta["sums"] = (tensors["sr_sum"].numpy(), tensors["wf_sum"].numpy())
    return meta


def _read_state_meta(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads(f.metadata()["state"])
    except Exception as err:  # a foreign or damaged file
        raise UserError(f"{path}: not a readable localize progress file ({err}); remove "
                        "it to start again") from None


class _Run:
    """The committed part of one localize run, and its files."""

    def __init__(self, out: Path, pred, stack, state: dict, progress: bool):
        from tqdm import tqdm

        from deepsmlm.io.localizations import CsvAppender

        self.out, self.pred, self.stack, self.state = out, pred, stack, state
        n, h, w = stack.data.shape
        u = pred.card.upsampling
        sums = state.pop("sums")
        self.sr_sum, self.wf_sum = sums if sums is not None else (
            np.zeros((h * u, w * u)), np.zeros((h, w)))
        # the table's columns are the method's, fixed before its first row (a multicolor
        # model: species and species_probability); a resumed table keeps its own header
        self.species_names = list(pred.method.species_names(pred.card))
        layout = {"n_uncertainty": pred.uncertainty_columns(),
                  "species": bool(self.species_names),
                  "species_probability": bool(self.species_names)}
        layout.update({k: state[k] for k in layout if state.get(k) is not None})
        self.csv = CsvAppender(out / PARTIAL_CSV, pred.method.value_column,
                               resume_bytes=state["csv_bytes"] or None, **layout)
        self.t_start = time.perf_counter()
        self.bar = tqdm(total=n, initial=state["frames_done"], disable=not progress,
                        unit="frame", desc="localize")

    frames_done = property(lambda self: self.state["frames_done"])
    n_localizations = property(lambda self: self.state["n_localizations"])

    def commit(self, t0: int, r) -> None:
        """Append a chunk's localizations (numbered on), add its sums, save the progress."""
        import torch

        from deepsmlm.io.atomic import atomic_write_text
        from deepsmlm.io.tensors import save_tensors

        st = self.state
        if t0 != st["frames_done"]:
            raise RuntimeError(f"chunk at frame {t0} committed after {st['frames_done']}")
        em = r.emitters
        em.id = torch.arange(len(em)) + st["n_localizations"]
        self.csv.append(em)
        self.sr_sum += r.sr_sum
        self.wf_sum += r.wf_sum
        done = min(t0 + st["settings"]["chunk_frames"], len(self.stack))
        counts = st.setdefault("refine_counts", {})
        for k, v in r.refine_counts.items():
            counts[k] = counts.get(k, 0) + v
        st.update(frames_done=done, csv_bytes=self.csv.size_bytes,
                  n_localizations=st["n_localizations"] + len(em),
                  n_uncertainty=self.csv.n_uncertainty, species=self.csv.species,
                  species_probability=self.csv.species_probability,
                  seconds=st["seconds"] + time.perf_counter() - self.t_start)
        self.t_start = time.perf_counter()
        save_tensors({"sr_sum": torch.from_numpy(self.sr_sum),
                      "wf_sum": torch.from_numpy(self.wf_sum)}, self.out / PARTIAL_STATE,
                     metadata={"state": json.dumps(st)})
        atomic_write_text(self.out / PROGRESS_JSON, json.dumps(
            {"frames_done": done, "frames": len(self.stack),
             "localizations": st["n_localizations"], "partial_csv": PARTIAL_CSV,
             "continue_with": "deepsmlm localize ... --resume"}, indent=1) + "\n")
        self.bar.update(done - t0)

    def close(self) -> None:
        self.csv.close()
        self.bar.close()

    def finish(self, source: str, on_dask: bool) -> dict:
        """The final files from the partial ones; the progress files removed."""
        from deepsmlm.emitters import EmitterSet
        from deepsmlm.io.atomic import atomic_write_text
        from deepsmlm.io.frames import write_stack
        from deepsmlm.io.localizations import iter_csv, write_csv, write_picasso_blocks

        out, card = self.out, self.pred.card
        csv_path = out / PARTIAL_CSV
        if not self.csv.size_bytes:  # nothing found at all
            empty = EmitterSet.empty()
            if self.csv.species or (self.csv.species is None and self.species_names):
                empty.species = empty.frame.clone()  # the multicolor columns, no rows
                empty.species_probability = empty.photons.clone()
            write_csv(empty, csv_path, value_column=self.pred.method.value_column)
        n, h, w = self.stack.data.shape
        write_picasso_blocks(lambda: iter_csv(csv_path), out / "localizations.hdf5",
                             card.pixel_size_nm, (h, w), n, source=source,
                             species_names=self.species_names or None)
        write_stack(out / "sr.tif", self.sr_sum.astype(np.float32)[None],
                    self.pred.fine_pixel_nm, axes="ZYX")
        sample, total = _preview_sample(csv_path)
        shown = "" if len(sample) == total else f" (preview: {len(sample)})"
        self.pred.method.preview(card, self.wf_sum, self.sr_sum, sample, out / "sr.png",
                                 f"{n} frames, {total} localizations{shown}")
        seconds = self.state["seconds"]
        summary = {"frames": n, "localizations": self.n_localizations, "seconds": seconds,
                   "frames_per_s": n / seconds if seconds > 0 else float("nan"),
                   "out": str(out), "movie": source, "dask": on_dask,
                   "threshold": card.threshold, "settings": self.state["settings"],
                   **({"refine": self.state["refine_counts"]}
                      if self.state["settings"].get("refine") else {}),
                   **({"species_names": self.species_names} if self.species_names else {})}
        from deepsmlm.steps.common import json_safe

        atomic_write_text(out / "localize.json", json.dumps(json_safe(summary), indent=1) + "\n")
        # the progress goes before the rename: a kill in between leaves a folder that a new
        # run simply replaces, never one that neither a new run nor --resume accepts
        for f in (PARTIAL_STATE, PROGRESS_JSON):
            (out / f).unlink(missing_ok=True)
        os.replace(csv_path, out / "localizations.csv")
        return summary


def _preview_sample(csv_path: Path):
    """Every k-th localization of the CSV (k doubling as needed): at most
    ``PREVIEW_MAX_LOCALIZATIONS``, spread over the whole movie; and the total count."""
    from deepsmlm.emitters import EmitterSet
    from deepsmlm.io.localizations import iter_csv

    kept, stride, total = [], 1, 0
    for block in iter_csv(csv_path):
        kept.append(block.subset(block.id % stride == 0))  # ids number the rows
        total += len(block)
        while sum(len(k) for k in kept) > PREVIEW_MAX_LOCALIZATIONS:
            stride *= 2
            kept = [k.subset(k.id % stride == 0) for k in kept]
    return EmitterSet.cat(kept), total
