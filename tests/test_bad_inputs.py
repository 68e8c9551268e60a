"""The bad-input catalogue of issue 17: every bad input gets ONE line on stderr,
``deepsmlm: error: <the problem>``, exit status 2, no traceback, and nothing written.

Each case runs ``deepsmlm.cli.main`` in an empty folder; the tiny inputs (an experiment, a
4-frame movie, a tiny fastloc model and broken variants of each) are built once per module
by ``build_world``. ``benchmarks/bad_inputs_table.py`` runs the same table and prints the
markdown of docs/benchmarks.md ("Bad inputs (issue 17)").
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from deepsmlm.cli import main

TINY_EXPERIMENT = {
    "frame": {"height_px": 32, "width_px": 32},
    "optics": {"psf": "gaussian", "pixel_size_nm": 100.0},
    "emitters": {"density_per_um2": 0.6, "z_range_nm": [0.0, 0.0],
                 "photons": {"lo": 2000, "hi": 4000}},
    "background": {"photons_per_px": [20, 20]},
    "training": {"model": "fastloc", "seed": 3, "patch_px": 16, "batch_size": 4,
                 "steps_per_epoch": 2, "max_epochs": 1, "val_frames": 4, "width": 8},
}


def _quiet(args: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main([str(a) for a in args])


def _model_variant(root: Path, name: str, edit: Callable[[Path], None]) -> Path:
    folder = root / name
    shutil.copytree(root / "model", folder, ignore=shutil.ignore_patterns("checkpoint"))
    edit(folder)
    return folder


def _edit_card(change: Callable[[dict], object], replace: bool = False
               ) -> Callable[[Path], None]:
    """Edit model.json in place (``replace``: write what ``change`` returns instead)."""
    def edit(folder: Path) -> None:
        card = json.loads((folder / "model.json").read_text())
        new = change(card)
        (folder / "model.json").write_text(json.dumps(new if replace else card))
    return edit


def build_world(root: Path) -> dict[str, str]:
    """Tiny valid inputs and broken variants of each under ``root``; returns the
    placeholders the cases use ({exp}, {movie}, {model}, …) as absolute paths."""
    import tifffile

    from deepsmlm.io.frames import write_stack
    from deepsmlm.io.localizations import read_csv, write_smlm

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    w: dict[str, Path] = {}
    w["exp"] = root / "exp.yaml"
    w["exp"].write_text(yaml.safe_dump(TINY_EXPERIMENT))
    assert _quiet(["simulate", w["exp"], "--frames", "4", "--out", root / "sim",
                   "--seed", "1"]) == 0
    assert _quiet(["train", w["exp"], "--out", root / "model", "--quiet"]) == 0
    w["movie"], w["truth"], w["model"] = root / "sim/frames.tif", root / "sim/truth.csv", \
        root / "model"

    # experiment files
    texts = {
        "empty.yaml": b"", "comments.yaml": b"# only a comment\n\n", "braces.yaml": b"{}\n",
        "latin1.yaml": "optics: {na: 1.4}\n# café\n".encode("latin-1"),
        "binary.yaml": bytes(range(256)) * 4, "notyaml.yaml": b"optics: [1, 2\n",
        "list.yaml": b"- optics\n- camera\n", "unknownkey.yaml": b"camera: {gain: 3}\n",
        "wrongtype.yaml": b"frame: {height_px: many}\n",
        "impossible.yaml": b"optics: {na: 1.7, n_immersion: 1.518}\n",
        "mc1.yaml": b"emitters: {species: [{name: a, wavelength_nm: 500}]}\n"
                    b"training: {model: multicolor}\n",
        "nomask.yaml": b"optics: {mask: {kind: file, path: nowhere.npy, "
                       b"pupil_radius_px: 10}}\n",
    }
    (root / "garbage.npy").write_bytes(b"\x93NUMPY" + bytes(range(40)))
    texts["badmask.yaml"] = (b"optics: {mask: {kind: file, path: garbage.npy, "
                             b"pupil_radius_px: 10}}\n")
    texts["px160.yaml"] = yaml.safe_dump(
        {**TINY_EXPERIMENT, "optics": {"psf": "gaussian", "pixel_size_nm": 160.0}}).encode()
    for name, data in texts.items():
        (root / name).write_bytes(data)
        w[name.replace(".", "_")] = root / name

    # localization files
    good = w["truth"].read_text().splitlines()
    header = good[0]
    locs = {
        "binary.csv": bytes(range(256)) * 4,
        "latin1.csv": (header + "\n" + good[1] + "\n# café\n").encode("latin-1"),
        "nonnumeric.csv": (header + "\n1,1,abc,2,0,100\n").encode(),
        "nan.csv": (header + "\n1,1,nan,2,0,100\n").encode(),
        "frame0.csv": (header + "\n1,0,5,2,0,100\n").encode(),
        "noxy.csv": b"id,frame,intensity\n1,1,100\n",
        "random.hdf5": bytes(np.random.default_rng(0).integers(0, 256, 2000, np.uint8)),
        "table.xls": b"x\n",
    }
    for name, data in locs.items():
        (root / name).write_bytes(data)
        w[name.replace(".", "_")] = root / name
    write_smlm(read_csv(w["truth"]), root / "smlm.csv")
    text = (root / "smlm.csv").read_text().splitlines()
    (root / "smlm_bad.csv").write_text("\n".join(text[:2] + ["1,2,x,y,z,w"]) + "\n")
    w["smlm_bad_csv"] = root / "smlm_bad.csv"
    import h5py

    with h5py.File(root / "nolocs.hdf5", "w") as f:
        f.create_dataset("other", data=np.zeros(3))
    w["nolocs_hdf5"] = root / "nolocs.hdf5"

    # movies
    full = w["movie"].read_bytes()
    (root / "truncated.tif").write_bytes(full[: len(full) // 2])
    (root / "zero.tif").write_bytes(b"")
    rng = np.random.default_rng(1)
    frames = (100 + rng.poisson(10, (4, 32, 32))).astype(np.float32)
    for name, value in (("nan.tif", np.nan), ("inf.tif", np.inf)):
        bad = frames.copy()
        bad[2, 5, 5] = value
        tifffile.imwrite(root / name, bad, photometric="minisblack")
    tifffile.imwrite(root / "complex.tif", frames.astype(np.complex64),
                     photometric="minisblack")
    tifffile.imwrite(root / "bool.tif", frames > 105, photometric="minisblack")
    tifffile.imwrite(root / "single.tif", frames[0].astype(np.uint16))
    write_stack(root / "tiny.tif", frames[:, :3, :3].astype(np.uint16), 100.0)
    write_stack(root / "px150.tif", frames.astype(np.uint16), 150.0)
    write_stack(root / "flat.tif", np.full((4, 32, 32), 100, np.uint16), 100.0)
    (root / "folder.tif").mkdir()
    for name in ("truncated", "zero", "nan", "inf", "complex", "bool", "single", "tiny",
                 "px150", "flat", "folder"):
        w[f"{name}_tif"] = root / f"{name}.tif"

    # model folders
    def wrong_shapes(card):
        card["settings"]["width"] = 16

    variants = {
        "future": _edit_card(lambda c: c.update(format_version=99)),
        "listcard": _edit_card(lambda c: [c], replace=True),
        "missingkeys": _edit_card(lambda c: c.pop("normalization")),
        "badtype": _edit_card(lambda c: c.update(pixel_size_nm="wide")),
        "unfinished": _edit_card(lambda c: c.update(threshold=None)),
        "unknownmethod": _edit_card(lambda c: c.update(method="magic")),
        "wrongshapes": _edit_card(wrong_shapes),
        "badsetting": _edit_card(lambda c: c["settings"].update(suppress_px="one")),
        "boolsetting": _edit_card(lambda c: c["settings"].update(levels=True)),
        "notjson": lambda f: (f / "model.json").write_text("{'method': 'fastloc',"),
        "binarycard": lambda f: (f / "model.json").write_bytes(bytes(range(256))),
        "noweights": lambda f: (f / "weights.safetensors").unlink(),
        "badweights": lambda f: (f / "weights.safetensors").write_bytes(b"junk" * 8),
    }
    for name, edit in variants.items():
        w[f"{name}_model"] = _model_variant(root, name, edit)
    return {k: str(v) for k, v in w.items()}


# ---------------------------------------------------------------- the catalogue
def _disk_full(target: str):
    """Make the first write through ``target`` ('tiff' or 'text') write a little, then
    fail with ENOSPC, as a full disk does."""
    def setup(mp, tmp: Path) -> None:
        def full(path, *args, **kwargs):
            Path(path).write_bytes(b"II*\x00partial")
            raise OSError(errno.ENOSPC, "No space left on device")

        if target == "tiff":
            import tifffile

            mp.setattr(tifffile, "imwrite", full)
            mp.setattr(tifffile, "memmap", full)  # how simulate lays out its streamed movie
        else:
            original = Path.write_text

            def write_text(self, data, *args, **kwargs):
                if self.name.endswith(".tmp"):
                    original(self, data[: len(data) // 2])
                    raise OSError(errno.ENOSPC, "No space left on device")
                return original(self, data, *args, **kwargs)

            mp.setattr(Path, "write_text", write_text)
    return setup


def _read_only_out(mp, tmp: Path) -> None:
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)


def _no_write_permission(mp, tmp: Path) -> None:
    """Creating any file is refused, as in a folder without write permission (this works
    for root too, where chmod does not)."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    mp.setattr(tempfile, "mkstemp", refuse)


def _existing_file(name: str):
    def setup(mp, tmp: Path) -> None:
        (tmp / name).write_text("precious\n")
    return setup


def _existing_folder(name: str):
    def setup(mp, tmp: Path) -> None:
        (tmp / name).mkdir()
    return setup


def _no_experiment_in_model(mp, tmp: Path) -> None:
    """A model folder without its experiment.yaml (copied by hand, or an old folder)."""
    from deepsmlm.training.model_folder import ModelFolder

    mp.setattr(ModelFolder, "experiment_path", property(lambda self: self.path / "gone.yaml"))


def _as_root() -> str | None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "running as root: chmod cannot make a folder read-only"
    return None


def _has_cuda() -> str | None:
    import torch

    return "a CUDA device is present" if torch.cuda.is_available() else None


@dataclass(frozen=True)
class Case:
    name: str            # what is wrong, in words (the docs table's first column)
    args: tuple[str, ...]  # the command; {placeholders} from build_world
    needle: str          # a phrase the one error line must contain
    setup: Callable | None = None   # (monkeypatch, tmp folder) → None
    skip: Callable[[], str | None] | None = None


def C(name, args, needle, setup=None, skip=None) -> Case:
    return Case(name, tuple(args.split()), needle, setup, skip)


LOC = "localize {model} {movie} --out out --quiet"
CASES = [
    # experiment files
    C("experiment file missing", "simulate nope.yaml --frames 2 --out out",
      "experiment file not found"),
    C("experiment file empty", "simulate {empty_yaml} --frames 2 --out out",
      "empty experiment file"),
    C("experiment file only comments", "simulate {comments_yaml} --frames 2 --out out",
      "empty experiment file"),
    C("experiment file an empty mapping {}", "simulate {braces_yaml} --frames 2 --out out",
      "empty experiment file"),
    C("experiment file Latin-1", "simulate {latin1_yaml} --frames 2 --out out",
      "not UTF-8"),
    C("experiment file binary", "simulate {binary_yaml} --frames 2 --out out",
      "a binary file"),
    C("experiment file not YAML", "simulate {notyaml_yaml} --frames 2 --out out",
      "not valid YAML"),
    C("experiment file a YAML list", "simulate {list_yaml} --frames 2 --out out",
      "expected a mapping"),
    C("experiment file is a folder", "psf {model} --out out", "is a folder"),
    C("config: unknown key", "simulate {unknownkey_yaml} --frames 2 --out out",
      "camera.gain: unknown key"),
    C("config: wrong type", "simulate {wrongtype_yaml} --frames 2 --out out",
      "frame.height_px"),
    C("config: impossible value", "simulate {impossible_yaml} --frames 2 --out out",
      "optics.na must be <"),
    C("config: mask file missing", "psf {nomask_yaml} --out out", "mask file not found"),
    C("config: mask file corrupt", "psf {badmask_yaml} --out out",
      "cannot read the mask file"),
    # simulate / psf arguments and sizes
    C("--frames negative", "simulate {exp} --frames -3 --out out", "--frames"),
    C("--frames zero", "simulate {exp} --frames 0 --out out", "positive integer"),
    C("--frames not a number", "simulate {exp} --frames many --out out", "positive integer"),
    C("--frames too many for the disk", "simulate {exp} --frames 100000000000 --out out",
      "would need"),
    C("--seed too large", "simulate {exp} --frames 2 --out out --seed 99999999999999999999",
      "seed below 2**63"),
    C("--seed negative", "simulate {exp} --frames 2 --out out --seed -1", "integer >= 0"),
    C("--out missing", "simulate {exp} --frames 2", "required: --out"),
    C("unknown command", "frobnicate {exp}", "invalid choice"),
    C("unknown option", "simulate {exp} --frames 2 --out out --colour red",
      "unrecognized arguments"),
    C("--out is an existing file", "simulate {exp} --frames 2 --out taken",
      "exists and is not a folder", _existing_file("taken")),
    C("disk full writing the movie", "simulate {exp} --frames 2 --out out",
      "disk full writing", _disk_full("tiff")),
    C("output folder not writable", "simulate {exp} --frames 2 --out ro",
      "permission denied", _read_only_out, _as_root),
    C("no permission to write (simulated)", "simulate {exp} --frames 2 --out out",
      "permission denied", _no_write_permission),
    C("psf --size-px huge", "psf {exp} --out out --size-px 1000000", "too large"),
    C("psf planes × size too large", "psf {exp} --out out --size-px 4096 --z-nm 0:2000:1",
      "would need"),
    C("--z-nm malformed", "psf {exp} --out out --z-nm a:b", "expected a:b:step"),
    C("--z-nm reversed", "psf {exp} --out out --z-nm 5:1:1", "a <= b"),
    C("--z-nm too many planes", "psf {exp} --out out --z-nm 0:1000000:1",
      "more than 10000 planes"),
    # localize: options
    C("--threshold NaN", LOC + " --threshold nan", "finite number"),
    C("--threshold inf", LOC + " --threshold inf", "finite number"),
    C("--camera-em-gain 0", LOC + " --camera-em-gain 0", "--camera-em-gain"),
    C("--camera-em-gain negative", LOC + " --camera-em-gain -5", "number > 0"),
    C("--camera-e-per-adu NaN", LOC + " --camera-e-per-adu nan", "finite number"),
    C("--camera-qe above 1", LOC + " --camera-qe 1.5", "fraction in (0, 1]"),
    C("--camera-qe 0", LOC + " --camera-qe 0", "fraction in (0, 1]"),
    C("--camera-baseline-adu inf", LOC + " --camera-baseline-adu inf", "finite number"),
    C("--device cuda on a CPU build", LOC + " --device cuda", "no CUDA", skip=_has_cuda),
    C("--device unknown", LOC + " --device banana", "unknown device 'banana'"),
    C("--chunk-frames 0", LOC + " --chunk-frames 0", "positive integer"),
    C("--refine-roi-px 0", LOC + " --refine --refine-roi-px 0", "positive integer"),
    C("--refine-roi-px without --refine", LOC + " --refine-roi-px 9", "with --refine"),
    C("--refine, model without experiment.yaml", LOC + " --refine", "gone.yaml is missing",
      _no_experiment_in_model),
    # localize: model folders
    C("model folder missing", "localize nomodel {movie} --out out --quiet",
      "model folder not found"),
    C("tune: model folder missing", "tune nomodel", "model folder not found"),
    C("tune: experiment of another pixel size", "tune {model} --experiment {px160_yaml}",
      "differs from the model's"),
    C("tune: --frames 0", "tune {model} --frames 0", "positive integer"),
    C("model of a newer format", "localize {future_model} {movie} --out out --quiet",
      "format version 99"),
    C("model.json a JSON list", "localize {listcard_model} {movie} --out out --quiet",
      "expected a JSON object"),
    C("model.json keys missing", "localize {missingkeys_model} {movie} --out out --quiet",
      "missing keys ['normalization']"),
    C("model.json value of wrong type",
      "localize {badtype_model} {movie} --out out --quiet", "'pixel_size_nm' must be"),
    C("model.json not JSON", "localize {notjson_model} {movie} --out out --quiet",
      "not valid JSON"),
    C("model.json binary", "localize {binarycard_model} {movie} --out out --quiet",
      "a binary file"),
    C("model of an unknown method",
      "localize {unknownmethod_model} {movie} --out out --quiet", "unknown method 'magic'"),
    C("model training unfinished", "localize {unfinished_model} {movie} --out out --quiet",
      "training did not finish"),
    C("weights file missing", "localize {noweights_model} {movie} --out out --quiet",
      "missing weights file"),
    C("weights file corrupt", "localize {badweights_model} {movie} --out out --quiet",
      "not a valid safetensors file"),
    C("model.json setting of wrong type",
      "localize {badsetting_model} {movie} --out out --quiet",
      "settings.suppress_px: Input should be a valid number, got 'one'"),
    C("model.json setting true for a number", "tune {boolsetting_model} --frames 2",
      "settings.levels: Input should be a valid integer, got True"),
    C("weights do not fit the network",
      "localize {wrongshapes_model} {movie} --out out --quiet",
      "of another shape, first"),
    # localize: movies
    C("movie missing", "localize {model} nothere.tif --out out --quiet", "movie not found"),
    C("movie is a folder without TIFFs", "localize {model} {folder_tif} --out out --quiet",
      "a folder without TIFF files"),
    C("movie glob matching nothing", "localize {model} nomatch_*.tif --out out --quiet",
      "no TIFF files match"),
    C("movie .zarr missing", "localize {model} absent.zarr --out out --quiet",
      "movie not found"),
    C("localize --resume with nothing to resume", LOC + " --resume",
      "no interrupted localize"),
    C("localize --dask local:0", LOC + " --dask local:0", "local:N with N ≥ 1"),
    C("movie empty (0 bytes)", "localize {model} {zero_tif} --out out --quiet",
      "empty file (0 bytes)"),
    C("movie truncated", "localize {model} {truncated_tif} --out out --quiet",
      "truncated"),
    C("CSV given as a movie", "localize {model} {truth} --out out --quiet", "not a TIFF"),
    C("movie with NaN pixels", "localize {model} {nan_tif} --out out --quiet", "NaN or inf"),
    C("movie with inf pixels", "localize {model} {inf_tif} --out out --quiet", "NaN or inf"),
    C("movie of complex pixels", "localize {model} {complex_tif} --out out --quiet",
      "unsupported pixel type complex64"),
    C("movie of bool pixels", "localize {model} {bool_tif} --out out --quiet",
      "unsupported pixel type bool"),
    C("single 2D image, not a stack", "localize {model} {single_tif} --out out --quiet",
      "a single 32×32 image"),
    C("frames too small for the network", "localize {model} {tiny_tif} --out out --quiet",
      "tiny frames"),
    C("movie pixel size ≠ model's", "localize {model} {px150_tif} --out out --quiet",
      "pixel size 150.0 nm"),
    # train / design
    C("train --out is an existing file", "train {exp} --out taken --quiet",
      "exists and is not a folder", _existing_file("taken")),
    C("train --device unknown", "train {exp} --out out --device banana --quiet",
      "unknown device"),
    C("train --max-minutes 0", "train {exp} --out out --max-minutes 0 --quiet",
      "number > 0"),
    C("train --max-minutes NaN", "train {exp} --out out --max-minutes nan --quiet",
      "finite number"),
    C("train --stack without --truth", "train {exp} --out out --stack {movie} --quiet",
      "needs both --stack and --truth"),
    C("train --resume without a checkpoint", "train --out out --resume --quiet",
      "no checkpoint"),
    C("train on an empty experiment", "train {empty_yaml} --out out --quiet",
      "empty experiment file"),
    C("design --out is an existing file", "design {exp} --out taken --quiet",
      "exists and is not a folder", _existing_file("taken")),
    # evaluate / localization files
    C("--tol-xy-nm negative", "evaluate {truth} {truth} --tol-xy-nm -5", "number > 0"),
    C("--tol-z-nm 0", "evaluate {truth} {truth} --tol-z-nm 0", "number > 0"),
    C("--tol-xy-nm NaN", "evaluate {truth} {truth} --tol-xy-nm nan", "finite number"),
    C("--border-nm negative", "evaluate {truth} {truth} --border-nm -1", "number >= 0"),
    C("localization file missing", "evaluate nothere.csv {truth}", "not found"),
    C("CSV binary", "evaluate {binary_csv} {truth}", "a binary file"),
    C("CSV Latin-1", "evaluate {latin1_csv} {truth}", "not UTF-8"),
    C("CSV not numeric", "evaluate {nonnumeric_csv} {truth}", "not a numeric table"),
    C("CSV with NaN coordinates", "evaluate {nan_csv} {truth}", "NaN or inf"),
    C("CSV frame 0 (frames are 1-based)", "evaluate {frame0_csv} {truth}",
      "whole numbers >= 1"),
    C("CSV without x/y columns", "evaluate {noxy_csv} {truth}", "unrecognised CSV header"),
    C("SMLM-challenge CSV broken", "evaluate {smlm_bad_csv} {truth}", "not a numeric table"),
    C("HDF5 of random bytes", "evaluate {random_hdf5} {truth} --pixel-size-nm 100",
      "cannot read as HDF5"),
    C("HDF5 without /locs", "evaluate {nolocs_hdf5} {truth} --pixel-size-nm 100",
      "no /locs dataset"),
    C("unknown localization format", "evaluate {table_xls} {truth}",
      "unknown localization format"),
    C("disk full writing --json", "evaluate {truth} {truth} --json m.json",
      "disk full writing", _disk_full("text")),
    # crlb / estimate / render / frc / calibrate / demo
    C("crlb --background NaN", "crlb {exp} --photons 1000 --background nan --out out",
      "finite number"),
    C("crlb --photons 0", "crlb {exp} --photons 0 --background 10 --out out", "number > 0"),
    C("crlb --background negative", "crlb {exp} --photons 1000 --background -1 --out out",
      "number >= 0"),
    C("train multicolor with one species",
      "train {mc1_yaml} --out out", "needs two or more emitters.species"),
    C("crlb --species of a single-colour experiment",
      "crlb {exp} --photons 1000 --background 10 --out out --species red",
      "lists no emitters.species"),
    C("psf --species of a single-colour experiment", "psf {exp} --out out --species red",
      "lists no emitters.species"),
    C("estimate --pixel-size-nm negative", "estimate {movie} --pixel-size-nm -100",
      "number > 0"),
    C("estimate --qe above 1", "estimate {movie} --qe 5", "fraction in (0, 1]"),
    C("estimate --em-gain 0", "estimate {movie} --em-gain 0", "number > 0"),
    C("estimate --e-per-adu negative", "estimate {movie} --e-per-adu -1", "number > 0"),
    C("estimate --baseline-adu NaN", "estimate {movie} --baseline-adu nan", "finite number"),
    C("estimate on a flat movie", "estimate {flat_tif}", "a flat movie"),
    C("render --out is a folder", "render {truth} --out sub", "is a folder",
      _existing_folder("sub")),
    C("render --out not a .tif", "render {truth} --out sr.png", "ending in .tif"),
    C("render --pixel-nm 0", "render {truth} --out sr.tif --pixel-nm 0", "number > 0"),
    C("render --sigma negative", "render {truth} --out sr.tif --sigma -3",
      "--sigma must be"),
    C("render --by species of a single-colour table",
      "render {truth} --out sr.tif --by species", "no species column for --by species"),
    C("render --by unknown", "render {truth} --out sr.tif --by colour", "invalid choice"),
    C("frc --pixel-nm 0", "frc {truth} --pixel-nm 0 --out out", "number > 0"),
    C("frc --block-frames 0", "frc {truth} --block-frames 0 --out out", "positive integer"),
    C("calibrate --z-step-nm 0", "calibrate {movie} {exp} --z-step-nm 0 --out out",
      "number > 0"),
    C("demo --train-minutes negative", "demo --out out --train-minutes -1", "number > 0"),
]


def prepare(case: Case, folder: Path, mp) -> None:
    """The case's own files and patches in ``folder`` (before the command runs)."""
    if case.setup:
        case.setup(mp, folder)


def run_case(case: Case, world: dict[str, str], folder: Path, mp) -> tuple[int, str, str]:
    """Run one (prepared) case in ``folder``: (exit status, stderr, stdout). Python
    warnings count as stderr lines, as a terminal would show them."""
    args = [a.format(**world) for a in case.args]
    err, out = io.StringIO(), io.StringIO()
    mp.chdir(folder)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(args)
            except SystemExit as stop:  # main itself must not exit; counted as a failure
                code = f"SystemExit({stop.code})"
    text = err.getvalue() + "".join(f"{w.category.__name__}: {w.message}\n" for w in seen)
    return code, text, out.getvalue()


def _files(*folders: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
            for f in folders for p in Path(f).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"))


def test_the_catalogue_is_large_and_named_uniquely():
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_line_and_exit_2(case, world, tmp_path, monkeypatch, capsys):
    why = case.skip() if case.skip else None
    if why:
        pytest.skip(why)
    work = tmp_path / "work"
    work.mkdir()
    prepare(case, work, monkeypatch)
    before = _files(work, Path(world["exp"]).parent)
    code, err, out = run_case(case, world, work, monkeypatch)
    monkeypatch.undo()
    assert code == 2, (code, err)
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("deepsmlm: error: "), err
    assert case.needle in lines[0], (case.needle, lines[0])
    assert "Traceback" not in err and "Traceback" not in out
    assert capsys.readouterr().err == ""  # nothing went around the redirect either
    after = _files(work, Path(world["exp"]).parent)
    assert after == before, sorted(set(after) ^ set(before))  # nothing new, nothing changed
    for name in ("out", "sub", "ro"):  # an output folder it made or had stays empty
        if (work / name).is_dir():
            assert not any((work / name).rglob("*")), list((work / name).rglob("*"))


def test_evaluate_json_creates_missing_folders(world, tmp_path, monkeypatch):
    """Not an error: ``--json`` into a folder that does not exist yet creates it."""
    monkeypatch.chdir(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["evaluate", world["truth"], world["truth"], "--json",
                     "new/deeper/m.json"]) == 0
    assert json.loads((tmp_path / "new/deeper/m.json").read_text())["jaccard"] == 100.0


# ---------------------------------------------------------------- the library's own checks
def test_atomic_write_disk_full_leaves_nothing(tmp_path, monkeypatch):
    """ENOSPC while writing: a UserError naming the file, the temporary file removed,
    nothing under the final name (and an older file of that name untouched)."""
    from deepsmlm.errors import UserError
    from deepsmlm.io.atomic import atomic_write_text

    original = Path.write_text

    def full(self, data, *args, **kwargs):
        original(self, data[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(UserError, match=r"disk full writing .*new\.json"):
        atomic_write_text(tmp_path / "new.json", "{}" * 100)
    (tmp_path / "old.json").write_bytes(b"kept")
    with pytest.raises(UserError, match="disk full"):
        atomic_write_text(tmp_path / "old.json", "{}" * 100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]
    assert (tmp_path / "old.json").read_bytes() == b"kept"


def test_check_device_names_the_device_and_why():
    import torch

    from deepsmlm.errors import UserError
    from deepsmlm.steps.common import check_device

    assert check_device("cpu") == "cpu"
    for bad in ("banana", "cuda:x", ""):
        with pytest.raises(UserError, match="device"):
            check_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="'cuda:0'"):
            check_device("cuda:0")
    else:
        with pytest.raises(UserError, match="only"):
            check_device(f"cuda:{torch.cuda.device_count()}")


def test_localize_options_checked_for_the_python_api():
    """``check_localize_options``: what the CLI's types check, for run_localize callers."""
    from deepsmlm.errors import UserError
    from deepsmlm.steps.common import check_localize_options

    check_localize_options(0.5, {"baseline_adu": -3.0, "em_gain": None, "qe": 1.0})
    for threshold, camera, option in [
            (float("nan"), {}, "--threshold"), (None, {"em_gain": 0.0}, "--camera-em-gain"),
            (None, {"qe": 1.2}, "--camera-qe"), (None, {"e_per_adu": -1}, "--camera-e-per-adu"),
            (None, {"baseline_adu": float("inf")}, "--camera-baseline-adu")]:
        with pytest.raises(UserError, match=option):
            check_localize_options(threshold, camera)


def test_help_and_version_still_exit_0(capsys):
    assert main(["--version"]) == 0
    assert main(["simulate", "--help"]) == 0
    assert "--frames" in capsys.readouterr().out
