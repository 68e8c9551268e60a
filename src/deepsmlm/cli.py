"""The ``deepsmlm`` command: parse, call one function, write files.

Expected errors (bad files, bad values) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from deepsmlm.errors import UserError


def _z_range(text: str) -> tuple[float, float, float]:
    """'a:b:step' in nm → (a, b, step); b is included when it lies on the grid."""
    try:
        a, b, step = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a:b:step in nm, got {text!r}") from None
    if step <= 0 or b < a:
        raise argparse.ArgumentTypeError(f"needs a <= b and step > 0, got {text!r}")
    if (b - a) / step > 10000:
        raise argparse.ArgumentTypeError(f"gives more than 10000 planes: {text!r}")
    return a, b, step


def _finite(text: str) -> float:
    """Any finite number (NaN and inf are refused)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def _positive(text: str) -> float:
    """A finite number > 0."""
    v = _finite(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def _non_negative(text: str) -> float:
    """A finite number ≥ 0."""
    v = _finite(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def _fraction(text: str) -> float:
    """A quantum efficiency: 0 < value ≤ 1."""
    v = _finite(text)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}")
    return v


def _device(text: str) -> str:
    """A torch device this build can use (``steps.common.check_device``)."""
    from deepsmlm.steps.common import check_device

    try:
        return check_device(text)
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, ``deepsmlm: error: …``, exit 2."""

    def error(self, message: str):
        sub = self.prog.removeprefix("deepsmlm").strip()
        if message.startswith("argument "):  # "argument --frames: …" → "simulate --frames: …"
            message = message.removeprefix("argument ")
            where = f"{sub} " if sub else ""
        else:
            where = f"{sub}: " if sub else ""
        print(f"deepsmlm: error: {where}{' '.join(message.split())}", file=sys.stderr)
        raise SystemExit(2)


def _int_at_least(text: str, lowest: int, what: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if v < lowest:
        raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
    return v


def _non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def _seed(text: str) -> int:
    """A random seed: a whole number in 0 … 2⁶³ − 1."""
    v = _non_negative_int(text)
    if v >= 2**63:
        raise argparse.ArgumentTypeError(f"expected a seed below 2**63, got {text!r}")
    return v


# ------------------------------------------------------------------ commands
def cmd_simulate(args) -> None:
    from deepsmlm.steps.simulate import run_simulate

    t0 = time.perf_counter()
    n_emitters = run_simulate(args.experiment, args.frames, args.out, args.seed,
                              progress=not args.quiet)
    dt = time.perf_counter() - t0
    print(f"wrote {args.out}/frames.tif ({args.frames} frames), truth.csv "
          f"({n_emitters} emitters), experiment.yaml in {dt:.1f} s")


def cmd_psf(args) -> None:
    from deepsmlm.steps.psf import run_psf

    z = run_psf(args.experiment, args.out, args.z_nm, args.size_px, args.species)
    print(f"wrote {args.out}/psf.tif ({len(z)} planes, z {z[0]:.0f}..{z[-1]:.0f} nm), "
          f"psf_z.csv, psf.png")


def cmd_demo(args) -> None:
    from deepsmlm.steps.demo import run_demo

    run_demo(args.out, args.frames, args.seed, args.train_minutes)


def cmd_evaluate(args) -> None:
    from deepsmlm.steps.evaluate import format_report, run_evaluate

    res = run_evaluate(args.pred, args.truth, args.tol_xy_nm, args.tol_z_nm, args.method,
                       args.border_nm, args.experiment, args.pixel_size_nm, args.json)
    print(format_report(res))
    if args.json:
        print(f"wrote {args.json}")


def cmd_render(args) -> None:
    from deepsmlm.steps.render import run_render

    sigma = None if args.sigma in (None, "precision") else _float(args.sigma, "--sigma")
    img = run_render(args.locs, args.pixel_nm, args.out, sigma, args.sigma == "precision",
                     args.experiment, args.pixel_size_nm, args.by)
    png = args.out.with_suffix(".png")
    print(f"wrote {args.out} ({img.shape[0]}×{img.shape[1]} px of {args.pixel_nm:g} nm) "
          f"and {png}" + (" (one colour per species), one TIFF per species "
                          f"({args.out.stem}_<species>{args.out.suffix})"
                          if args.by == "species" else ""))


def cmd_crlb(args) -> None:
    import math

    from deepsmlm.steps.crlb import run_crlb

    res = run_crlb(args.experiment, args.photons, args.background, args.out, args.z_nm,
                   args.species)
    print("z [nm]    crlb_x [nm]  crlb_y [nm]  crlb_z [nm]")
    for z, x, y, zz in zip(res["z_nm"], res["crlb_x"], res["crlb_y"], res["crlb_z"]):
        zs = "–" if math.isnan(zz) else f"{zz:.2f}"
        print(f"{z:8.0f}  {x:11.2f}  {y:11.2f}  {zs:>11}")
    print(f"wrote {args.out}/crlb.csv, crlb.png")


def cmd_frc(args) -> None:
    from deepsmlm.steps.frc import run_frc

    res = run_frc(args.locs, args.pixel_nm, args.block_frames, args.out, args.experiment,
                  args.pixel_size_nm)
    print(f"FRC resolution: {res.resolution_nm:.1f} nm (1/7 threshold)")


def cmd_train(args) -> None:
    from deepsmlm.steps.train import run_train
    from deepsmlm.training.distributed import is_main_process

    card = run_train(args.experiment, args.out, args.max_minutes, args.resume, args.device,
                     args.stack, args.truth, progress=not args.quiet)
    if not is_main_process():  # under torchrun: rank 0 speaks for all
        return
    v, t = card.validation, card.training
    print(f"trained {t['epochs']} epochs ({t['stopped']}) in {t['seconds'] / 60:.1f} min; "
          f"validation Jaccard {v['jaccard']:.1f} %, RMSE {v['rmse_xy_nm']:.1f} nm at threshold "
          f"{card.threshold:.3g} → {args.out}")


def cmd_tune(args) -> None:
    from deepsmlm.steps.tune import run_tune

    r = run_tune(args.model, args.experiment, args.frames, args.seed, args.device,
                 args.objective)
    extra = "".join(f", {k} {r[k]:g}" if isinstance(r[k], float) else f", {k} {r[k]}"
                    for k in ("certain_probability", "suppress_px", "max_sigma_px",
                              "mass_radius_px") if k in r)
    eff = "" if r["efficiency"] is None else f", efficiency {r['efficiency']:.1f} %"
    print(f"threshold {r['threshold']:.3g}{extra} (for the {r['objective']}): validation "
          f"Jaccard {r['jaccard']:.1f} %, RMSE {r['rmse_xy_nm']:.1f} nm{eff} on "
          f"{r['tuned_on']['frames']} frames of {r['tuned_on']['experiment']} → "
          f"{args.model}/model.json")


def cmd_design(args) -> None:
    from deepsmlm.steps.design import run_design

    r = run_design(args.experiment, args.out, args.objective, args.max_minutes, args.resume,
                   args.init_model, progress=not args.quiet, device=args.device)
    crlb = (f"mean CRLB {r['mean_crlb_start_nm']:.1f} → {r['mean_crlb_nm']:.1f} nm"
            if r["objective"] == "crlb" else
            f"mean σ_λ/Δλ {r['mean_colour_bound_start']:.3f} → {r['mean_colour_bound']:.3f}"
            if r["objective"] == "crlb-colour" else
            f"best validation loss {r['best_val_loss']:.4g} after {r['epochs']} epochs "
            f"({r['stopped'] or 'done'}); mean CRLB {r['mean_crlb_start_nm']:.1f} → "
            f"{r['mean_crlb_learned_nm']:.1f} nm")
    shape = r.get("shape", {})
    if "learned" in shape:
        crlb += (f"; mean 80 % radius {shape['start']['mean_radius80_nm']:.0f} → "
                 f"{shape['learned']['mean_radius80_nm']:.0f} nm")
    print(f"{crlb} → {args.out}/mask.npy, mask.json, mask_slm.tif, mask.png, psf.png, "
          "footprint.png")


def cmd_localize(args) -> None:
    from deepsmlm.steps.localize import run_localize

    camera = {"baseline_adu": args.camera_baseline_adu, "e_per_adu": args.camera_e_per_adu,
              "em_gain": args.camera_em_gain, "qe": args.camera_qe}
    r = run_localize(args.model, args.movie, args.out, args.chunk_frames, args.batch_size,
                     args.device, camera, args.threshold, progress=not args.quiet,
                     resume=args.resume, dask=args.dask, pixel_size_nm=args.pixel_size_nm,
                     refine=args.refine, refine_roi_px=args.refine_roi_px)
    refined = ""
    if "refine" in r:
        c = r["refine"]
        refined = (f" ({c.get('refined', 0)} refined through the PSF, "
                   f"{c.get('kept_network', 0)} kept the network's value)")
    print(f"{r['localizations']} localizations{refined} in {r['frames']} frames, "
          f"{r['frames_per_s']:.1f} frames/s → {r['out']}/localizations.csv, .hdf5, sr.tif, "
          "sr.png, localize.json")


def cmd_estimate(args) -> None:
    from deepsmlm.steps.estimate import run_estimate

    est, skeleton = run_estimate(args.movie, args.pixel_size_nm, args.baseline_adu,
                                 args.e_per_adu, args.em_gain, args.qe)
    print(f"frames analysed        {est['frames']}")
    print(f"camera                 {est['camera_from']}")
    print(f"baseline               {est['baseline_adu']:.1f} ADU")
    print(f"ADU per photon         {est['adu_per_photon']:.3f}")
    lo, hi = est["background_photons_per_px"]
    print(f"background             {lo:.1f} – {hi:.1f} photons/px (5–95 % of frames)")
    lo, hi = est["spot_photons"]
    print(f"spot photons           {lo:.0f} – {hi:.0f} (10–90 %, {est['spots']} spots)")
    print(f"PSF sigma              {est['psf_sigma_px']:.2f} px = {est['psf_sigma_nm']:.0f} nm")
    print("\n" + skeleton)


def cmd_calibrate(args) -> None:
    from deepsmlm.steps.calibrate import run_calibrate

    r = run_calibrate(args.beads, args.experiment, args.out, args.z_step_nm,
                      crop_px=args.crop_px, z_direction=args.z_direction,
                      max_beads=args.max_beads, steps=args.steps,
                      pixel_map_steps=args.pixel_map_steps, zernike_max=args.zernike_max,
                      saturation_adu=args.saturation_adu, fit_blur=not args.no_blur,
                      seed=args.seed, progress=not args.quiet)
    for i, b in enumerate(r["beads"]):
        print(f"bead {i + 1} at x {b['x_px']:.1f}, y {b['y_px']:.1f} px: in focus at plane "
              f"{b['focus_plane']:.1f}; correlation per plane "
              f"{min(b['correlation']):.3f} – {max(b['correlation']):.3f}")
    for why in r["skipped_beads"]:
        print(f"skipped: {why}")
    print(f"blur {r['blur_sigma_nm']:.0f} nm; {len(r['noll'])} Zernike modes; "
          f"{r['seconds']:.0f} s → {args.out}/experiment.yaml, pupil_phase.npy, planes.png")


def _float(text: str, name: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise UserError(f"{name} must be a number or 'precision', got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise UserError(f"{name} must be a number of nm > 0 or 'precision', got {text!r}")
    return v


def _locs_context(s: argparse.ArgumentParser) -> None:
    """Options that tell a localization file's field of view and pixel size."""
    s.add_argument("--experiment", type=Path, default=None,
                   help="experiment file for the field of view (default: one beside the file)")
    s.add_argument("--pixel-size-nm", type=_positive, default=None,
                   help="camera pixel size for Picasso files without metadata")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="deepsmlm",
                                description="Deep-learning SMLM at high emitter density.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("simulate", help="simulate a movie and its ground truth")
    s.add_argument("experiment", type=Path, help="experiment YAML")
    s.add_argument("--frames", type=_positive_int, required=True, help="number of frames")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("psf", help="PSF z-stack of the experiment (one photon)")
    s.add_argument("experiment", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--z-nm", type=_z_range, default=None,
                   help="a:b:step in nm (default: the experiment's z range, or focus ± 1 µm)")
    s.add_argument("--size-px", type=_positive_int, default=None,
                   help="side of each plane in pixels (default: the model's patch)")
    s.add_argument("--species", default=None,
                   help="multicolor: the species whose PSF (default: the first listed)")
    s.set_defaults(func=cmd_psf)

    s = sub.add_parser("evaluate", help="match localizations to the truth; Jaccard, RMSE, ...")
    s.add_argument("pred", type=Path, help="predicted localizations (CSV or Picasso .hdf5)")
    s.add_argument("truth", type=Path, help="ground truth (any supported format)")
    s.add_argument("--tol-xy-nm", type=_positive, default=250.0)
    s.add_argument("--tol-z-nm", type=_positive, default=500.0)
    s.add_argument("--method", choices=["greedy", "hungarian"], default="greedy")
    s.add_argument("--border-nm", type=_non_negative, default=0.0,
                   help="exclude a band at the frame edges (needs the field of view)")
    _locs_context(s)
    s.add_argument("--json", type=Path, default=None,
                   help="write every metric as JSON (with species metrics when both tables "
                        "carry species)")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("render", help="super-resolution image of localizations")
    s.add_argument("locs", type=Path)
    s.add_argument("--pixel-nm", type=_positive, default=10.0)
    s.add_argument("--out", type=Path, required=True, help="IMG.tif (+ IMG.png)")
    s.add_argument("--sigma", default=None,
                   help="Gaussian σ in nm, or 'precision' (per localization); default histogram")
    s.add_argument("--by", choices=["species"], default=None,
                   help="species: also one image per species (IMG_<name>.tif) and an RGB "
                        "PNG, one colour per species (a multicolor table)")
    _locs_context(s)
    s.set_defaults(func=cmd_render)

    s = sub.add_parser("crlb", help="Cramér–Rao bound of the experiment's PSF and camera")
    s.add_argument("experiment", type=Path)
    s.add_argument("--photons", type=_positive, required=True)
    s.add_argument("--background", type=_non_negative, required=True, help="photons per pixel")
    s.add_argument("--z-nm", type=_z_range, default=None)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--species", default=None,
                   help="multicolor: the species whose PSF (default: the first listed)")
    s.set_defaults(func=cmd_crlb)

    s = sub.add_parser("frc", help="Fourier ring correlation resolution")
    s.add_argument("locs", type=Path)
    s.add_argument("--pixel-nm", type=_positive, default=5.0)
    s.add_argument("--block-frames", type=_positive_int, default=None)
    s.add_argument("--out", type=Path, default=None, help="folder for the curve")
    _locs_context(s)
    s.set_defaults(func=cmd_frc)

    s = sub.add_parser("train", help="train a model (training.model) on simulated frames")
    s.add_argument("experiment", type=Path, nargs="?", default=None,
                   help="experiment YAML (omit with --resume)")
    s.add_argument("--out", type=Path, required=True, help="model folder")
    s.add_argument("--max-minutes", type=_positive, default=None, help="time budget")
    s.add_argument("--resume", action="store_true", help="continue the model in --out")
    s.add_argument("--device", type=_device, default="cpu")
    s.add_argument("--stack", type=Path, default=None,
                   help="train on your own simulated stack (with --truth) instead")
    s.add_argument("--truth", type=Path, default=None, help="ground truth of --stack")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("tune", help="tune a trained model's threshold, decoding and σ again "
                                    "(on its experiment or one closer to your microscope)")
    s.add_argument("model", type=Path, help="model folder")
    s.add_argument("--experiment", type=Path, default=None,
                   help="simulate the validation frames from this experiment (default: the "
                        "model's own); same pixel size and method")
    s.add_argument("--frames", type=_positive_int, default=None,
                   help="validation patches (default: the experiment's training.tune_frames, "
                        "else its val_frames)")
    s.add_argument("--seed", type=_seed, default=None,
                   help="their seed (default: the training's validation seed)")
    s.add_argument("--objective", choices=("jaccard", "efficiency"), default=None,
                   help="what the tuning maximises (default: the experiment's "
                        "training.tune_objective): the Jaccard, or the SMLM Challenge's "
                        "efficiency, which trades found emitters for precise ones")
    s.add_argument("--device", type=_device, default="cpu")
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser("design", help="learn a phase mask (end to end with a CNN, or by CRLB)")
    s.add_argument("experiment", type=Path, nargs="?", default=None,
                   help="experiment YAML (omit with --resume)")
    s.add_argument("--out", type=Path, required=True, help="design folder")
    s.add_argument("--objective", choices=["end-to-end", "crlb"], default="end-to-end")
    s.add_argument("--max-minutes", type=_positive, default=None, help="time budget")
    s.add_argument("--resume", action="store_true", help="continue the design in --out")
    s.add_argument("--init-model", type=Path, default=None,
                   help="start the network from this trained model folder (same architecture)")
    s.add_argument("--device", type=_device, default="cpu",
                   help="where the network and the PSF run (cpu, cuda, cuda:N, mps)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_design)

    s = sub.add_parser("localize", help="reconstruct a movie with a trained model")
    s.add_argument("model", type=Path, help="model folder")
    s.add_argument("movie", type=Path,
                   help="movie in ADU: a TIFF (OME, ImageJ), a folder or glob of TIFFs, or "
                        "a Zarr array")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--chunk-frames", type=_positive_int, default=None,
                   help="frames read and committed at a time (default 256)")
    s.add_argument("--batch-size", type=_positive_int, default=None,
                   help="frames per network batch (default 16)")
    s.add_argument("--resume", action="store_true",
                   help="continue the interrupted localize in --out")
    s.add_argument("--dask", default=None, metavar="local:N|tcp://HOST:PORT",
                   help="run the chunks on a Dask cluster: a local one of N worker "
                        "processes, or a running scheduler")
    s.add_argument("--pixel-size-nm", type=_positive, default=None,
                   help="the movie's pixel size when its metadata is wrong (must be the "
                        "model's)")
    s.add_argument("--device", type=_device, default="cpu")
    s.add_argument("--threshold", type=_finite, default=None,
                   help="override the tuned one (in the units of model.json's score)")
    s.add_argument("--refine", action="store_true",
                   help="refine each localization by maximum likelihood through the model's "
                        "own PSF (experiment.yaml), all of a frame's together, and write its "
                        "Cramér–Rao σ as the uncertainty columns (slower: ~150 PSF renders "
                        "per batch of frames). Use it with a measured PSF (deepsmlm "
                        "calibrate): through a PSF that is off it follows the wrong model")
    s.add_argument("--refine-roi-px", type=_positive_int, default=None,
                   help="with --refine: fit the pixels within this square about each "
                        "localization (default: the crop a `deepsmlm calibrate` pupil was "
                        "fitted on, else the PSF's patch)")
    s.add_argument("--camera-baseline-adu", type=_finite, default=None)
    s.add_argument("--camera-e-per-adu", type=_positive, default=None)
    s.add_argument("--camera-em-gain", type=_positive, default=None)
    s.add_argument("--camera-qe", type=_fraction, default=None)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_localize)

    s = sub.add_parser("estimate", help="measure a raw movie; print an experiment skeleton")
    s.add_argument("movie", type=Path)
    s.add_argument("--pixel-size-nm", type=_positive, default=None)
    s.add_argument("--baseline-adu", type=_finite, default=None)
    s.add_argument("--e-per-adu", type=_positive, default=None)
    s.add_argument("--em-gain", type=_positive, default=None)
    s.add_argument("--qe", type=_fraction, default=None)
    s.set_defaults(func=cmd_estimate)

    s = sub.add_parser("calibrate", help="retrieve the pupil (PSF) from a bead z-stack")
    s.add_argument("beads", type=Path, help="bead z-stack, TIFF (planes × rows × columns)")
    s.add_argument("experiment", type=Path, help="experiment YAML of the microscope")
    s.add_argument("--z-step-nm", type=_positive, required=True,
                   help="stage step between planes")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--z-direction", choices=("up", "down"), default="up",
                   help="up: the bead's height above the focal plane grows with the plane "
                        "index (the focus moves towards the coverslip)")
    s.add_argument("--crop-px", type=_positive_int, default=None,
                   help="bead crop side (default: optics.patch_px or 61)")
    s.add_argument("--max-beads", type=_positive_int, default=4)
    s.add_argument("--steps", type=_positive_int, default=150, help="Adam steps per stage")
    s.add_argument("--zernike-max", type=_positive_int, default=45,
                   help="highest Noll index fitted")
    s.add_argument("--pixel-map-steps", type=_non_negative_int, default=0,
                   help="> 0: refine with a smooth pixel map after the Zernike stages")
    s.add_argument("--saturation-adu", type=_finite, default=None,
                   help="pixels at or above are excluded (default: the dtype's maximum)")
    s.add_argument("--no-blur", action="store_true", help="do not fit the bead blur")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("demo", help="the main job on built-in data")
    s.add_argument("--out", type=Path, default=Path("demo_out"))
    s.add_argument("--frames", type=_positive_int, default=200)
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--train-minutes", type=_positive, default=5.0)
    s.set_defaults(func=cmd_demo)
    return p


def _version() -> str:
    from deepsmlm._version import __version__

    return f"deepsmlm {__version__}"


def _join_negative_values(argv: list[str]) -> list[str]:
    """Let '--z-nm -400:400:100' through argparse, which reads '-400…' as an option."""
    out: list[str] = []
    it = iter(argv)
    for a in it:
        if a == "--z-nm":
            nxt = next(it, None)
            out.append(a if nxt is None else f"{a}={nxt}")
        else:
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(_join_negative_values(list(argv)))
    except SystemExit as stop:  # --help, --version (0) or a bad argument (2, one line)
        return stop.code if isinstance(stop.code, int) else 2
    try:
        args.func(args)
    except UserError as err:
        print(f"deepsmlm: error: {' '.join(str(err).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepsmlm: interrupted (train, design and localize keep their progress: "
              "continue with --resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
