"""Learned PSF vs Tetrapod vs astigmatism for dense 3D localization over 4 µm (issue 6).

    python benchmarks/deep_optics.py design   --out bench_out/optics --minutes 20 \
        [--init-model bench_out/ds3d/model]
    python benchmarks/deep_optics.py arms     --out bench_out/optics
    python benchmarks/deep_optics.py train    --out bench_out/optics --minutes 15
    python benchmarks/deep_optics.py movies   --out bench_out/optics
    python benchmarks/deep_optics.py evaluate --out bench_out/optics --docs docs/images

design: the end-to-end mask — from a clear aperture and an untrained network
(configs/design-4um.yaml, the paper's start), or with --init-model as Zernike corrections on
top of the Tetrapod with a network already trained on it (what a CPU budget allows) — and
the Fisher-information (CRLB) Zernike mask from a clear aperture.
arms: one experiment per mask, otherwise identical to configs/3d-tetrapod.yaml
— the learned mask, the Tetrapod (../shared/data/deepstorm3d when present, else the CRLB
design), and a clear aperture with astigmatism (Noll 6, the smallest amplitude within 2 %
of the lowest mean CRLB over the range); --epochs caps every arm's epochs, --seed sets
their training seed (0 by default). train: a fresh
DeepSTORM3D per arm, same architecture, same seed, same time budget.
movies: held-out frames at 5–40 emitters per 64×64 frame with the same emitters,
backgrounds and noise draws for every arm; with --context-px 20, frames of 104×104 px at
the same density, scored on their central 64×64 (no scored PSF cut by the frame edge; see
benchmarks/deepstorm3d.py).
evaluate: Jaccard (Hungarian, 100 nm sphere), RMSE, the table as JSON, and the figures
(--context-px: the field geometry; comparison_c20.json, deep_optics_jaccard_c20.png).
--base and --design-config name other experiment files than configs/3d-tetrapod.yaml and
configs/design-4um.yaml (e.g. copies with a tiny training section, for a quick check);
--counts scores a subset of the densities.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from common import (
    CONFIG_3D,
    CONFIGS,
    COUNTS,
    SPHERE_100NM,
    localize_movie,
    roi_area_um2,
    roi_experiment,
)

BASE = CONFIG_3D
DESIGN = CONFIGS / "design-4um.yaml"
SCRATCH = CONFIGS / "design-4um-scratch.yaml"
ARMS = ("scratch", "learned", "paper", "tetrapod", "astigmatic")
DESIGNS = {"scratch": "design_scratch", "learned": "design_e2e"}  # arm → its design folder


def warm_design_experiment(out: Path, base: Path = BASE, design: Path = DESIGN) -> Path:
    """3d-tetrapod.yaml + a design section: Zernike corrections (Noll 5–45) learned on top
    of the Tetrapod, for a network that starts trained on the Tetrapod (--init-model)."""
    from deepsmlm.config import experiment_from_dict, load_experiment

    d = load_experiment(base).to_dict()
    d["design"] = dict(load_experiment(design).to_dict()["design"], start="experiment")
    experiment_from_dict(d)  # validate
    out.mkdir(parents=True, exist_ok=True)
    path = out / "design_from_tetrapod.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def cmd_design(args) -> None:
    from deepsmlm.api import run_design

    out = Path(args.out)
    t0 = time.perf_counter()
    if args.init_model:  # start from the Tetrapod and a network trained on it
        r = run_design(warm_design_experiment(out, args.base, args.design_config),
                       out / "design_e2e", "end-to-end", args.minutes,
                       init_model=args.init_model, progress=False)
    else:  # the paper's start: a clear aperture and an untrained network
        r = run_design(args.design_config, out / "design_e2e", "end-to-end", args.minutes,
                       progress=False)
    print(f"end-to-end: {r['epochs']} epochs, {r['samples']} samples, "
          f"{(time.perf_counter() - t0) / 60:.1f} min; mean CRLB "
          f"{r['mean_crlb_start_nm']:.1f} → {r['mean_crlb_learned_nm']:.1f} nm")
    t0 = time.perf_counter()
    c = run_design(args.design_config, out / "design_crlb", "crlb", progress=False)
    print(f"crlb: {c['mean_crlb_start_nm']:.1f} → {c['mean_crlb_nm']:.1f} nm in "
          f"{(time.perf_counter() - t0) / 60:.1f} min")


def cmd_scratch(args) -> None:
    """The design from scratch (issue 16): Fisher stage from a clear aperture, the network
    alone on its mask, then pixel-wise mask and network together (design-4um-scratch.yaml)."""
    from deepsmlm.api import run_design
    from deepsmlm.config import experiment_from_dict, load_experiment

    out = Path(args.out)
    config = args.design_config
    folder, label = out / "design_scratch", "from scratch"
    if args.from_tetrapod:  # the same stages, started at the Tetrapod instead of stage 1
        d = load_experiment(config).to_dict()
        d["optics"]["mask"] = load_experiment(args.base).to_dict()["optics"]["mask"]
        d["design"]["start"] = "experiment"
        experiment_from_dict(d)  # validate
        out.mkdir(parents=True, exist_ok=True)
        config = out / "design_from_tetrapod_staged.yaml"
        config.write_text(yaml.safe_dump(d, sort_keys=False))
        folder, label = out / "design_e2e", "from the Tetrapod"
    t0 = time.perf_counter()
    r = run_design(config, folder, "end-to-end", args.minutes, progress=False)
    shape = r["shape"]
    print(f"{label}: {(time.perf_counter() - t0) / 60:.1f} min; mean CRLB "
          f"{r['mean_crlb_start_nm']:.2f} (start) → {r['mean_crlb_learned_nm']:.2f} nm; "
          f"mean 80 % radius {shape['start']['mean_radius80_nm']:.0f} → "
          f"{shape['learned']['mean_radius80_nm']:.0f} nm", flush=True)


def astigmatism_rad(exp) -> tuple[float, list]:
    """Noll-6 amplitude [rad RMS]: the smallest within 2 % of the lowest mean CRLB over the
    z range (the curve is nearly flat beyond ~1 rad while the footprint keeps growing)."""
    from deepsmlm.build import build_camera, build_psf, crlb_operating_point
    from deepsmlm.design.fisher import mean_crlb_nm
    from deepsmlm.optics.masks import zernike_mask

    psf = build_psf(exp)
    photons, bg = crlb_operating_point(exp)
    z = torch.linspace(*exp.emitters.z_range_nm, 21)
    scan = []
    with torch.no_grad():
        for a in np.arange(0.25, 4.01, 0.25):
            psf.set_mask_phase(zernike_mask(psf.grid, {6: float(a)}))
            scan.append((float(a), float(mean_crlb_nm(psf, z, photons, bg, build_camera(exp)))))
    best = min(c for _, c in scan)
    return next(a for a, c in scan if c <= 1.02 * best), scan


def cmd_arms(args) -> None:
    from deepsmlm.config import experiment_from_dict, load_experiment

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_experiment(args.base).to_dict()
    tetra = Path(base["optics"]["mask"]["path"])
    masks = {arm: {"kind": "file", "path": str((Path(args.designs or out) / folder
                                                / "mask.npy").resolve())}
             for arm, folder in DESIGNS.items() if arm in args.arms}
    missing = [a for a, m in masks.items() if not Path(m["path"]).is_file()]
    if missing:
        raise SystemExit(f"no design for {', '.join(missing)} (run the design step, or leave "
                         "the arm out with --arms)")
    if tetra.is_file():
        masks["tetrapod"] = base["optics"]["mask"]
    else:
        print(f"no Tetrapod file at {tetra}: the CRLB design stands in for it")
        masks["tetrapod"] = {"kind": "file",
                             "path": str((out / "design_crlb" / "mask.npy").resolve())}
    paper = tetra.with_name("mask_learned.mat")  # the paper's learned mask, set-up A
    if "paper" in args.arms:
        if not paper.is_file():
            raise SystemExit(f"no {paper}: leave the paper arm out with --arms")
        masks["paper"] = {"kind": "file", "path": str(paper), "key": "mask_circ_model",
                          "pupil_radius_px": base["optics"]["mask"]["pupil_radius_px"]}
    clear = dict(base, optics=dict(base["optics"], mask={"kind": "clear"}))
    amp, scan = astigmatism_rad(experiment_from_dict(clear))
    masks["astigmatic"] = {"kind": "zernike", "noll": {6: amp}}
    print(f"astigmatism: {amp:.2f} rad RMS (Noll 6); mean CRLB [nm] by amplitude: "
          + ", ".join(f"{a:.2f}→{c:.1f}" for a, c in scan))
    for arm in args.arms:
        d = dict(base, optics=dict(base["optics"], mask=masks[arm]))
        d["training"] = dict(base["training"], seed=args.seed)
        if args.epochs:
            d["training"]["max_epochs"] = args.epochs
        experiment_from_dict(d)  # validate
        (out / f"{arm}.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    (out / "arms.json").write_text(json.dumps({"astigmatism_rad": amp, "scan": scan,
                                               "seed": args.seed,
                                               "masks": masks}, indent=1))


def cmd_train(args) -> None:
    from deepsmlm.api import run_train

    out = Path(args.out)
    for arm in args.arms:
        t0 = time.perf_counter()
        card = run_train(out / f"{arm}.yaml", out / "models" / arm, args.minutes,
                         progress=False)
        print(f"{arm}: {card.training['samples']} samples in "
              f"{(time.perf_counter() - t0) / 60:.1f} min, validation Jaccard "
              f"{card.validation['jaccard']:.1f} %", flush=True)


def suffix(context_px: int) -> str:
    """Folder/file suffix of a geometry: "" (64×64 frames) or "_c20" (field of view)."""
    return f"_c{context_px}" if context_px else ""


def cmd_movies(args) -> None:
    from deepsmlm.api import simulate, write_movie

    out = Path(args.out)
    for arm in args.arms:
        for count in args.counts:
            exp = roi_experiment(count, args.context_px, out / f"{arm}.yaml")
            movie = simulate(exp, args.frames, seed=3000 + COUNTS.index(count))
            write_movie(movie, out / f"movies{suffix(args.context_px)}" / arm / f"n{count}")
        print(f"{arm}: movies at {', '.join(map(str, args.counts))} emitters per 64×64 "
              "region")


def cmd_evaluate(args) -> None:
    from deepsmlm.config import load_experiment
    from deepsmlm.evaluation.metrics import evaluate
    from deepsmlm.training.model_folder import ModelFolder

    out = Path(args.out)
    c, sfx = args.context_px, suffix(args.context_px)
    pixel_nm = load_experiment(out / f"{args.arms[0]}.yaml").optics.pixel_size_nm
    table = {}
    for arm in args.arms:
        rows = []
        for count in args.counts:
            loc, t, q = localize_movie(out / "models" / arm,
                                       out / f"movies{sfx}" / arm / f"n{count}",
                                       out / f"eval{sfx}" / arm / f"n{count}", c, pixel_nm)
            h = evaluate(t["frame"], t["xyz_nm"], q["frame"], q["xyz_nm"], **SPHERE_100NM)
            density = len(t["frame"]) / loc["frames"] / roi_area_um2(pixel_nm)
            rows.append(dict(emitters_per_frame=count, density_per_um2=density,
                             jaccard=h["jaccard"] / 100, rmse_xy_nm=h["rmse_xy_nm"],
                             rmse_z_nm=h["rmse_z_nm"], recall=h["recall"],
                             precision=h["precision"]))
            print(f"{arm:10s} {count:3d}/frame: Jaccard {rows[-1]['jaccard']:.3f}, RMSE xy "
                  f"{h['rmse_xy_nm']:.1f} nm, z {h['rmse_z_nm']:.1f} nm", flush=True)
        card = ModelFolder(out / "models" / arm).read_card()
        table[arm] = {"rows": rows, "training": card.training}
    (out / f"comparison{sfx}.json").write_text(json.dumps(table, indent=1, default=float))
    if args.docs:
        figures(out, Path(args.docs), table, sfx, args.tag)


def cmd_table(args) -> None:
    """Markdown tables of comparison{,_c20}.json in each --out: per density, every arm's
    Jaccard and RMSE xy / z, and the first arm's margin over the Tetrapod."""
    for folder in args.folders:
        for sfx, what in (("_c20", "64×64 regions inside a larger field"),
                          ("", "64×64 frames with emitters up to the edge")):
            path = Path(folder) / f"comparison{sfx}.json"
            if not path.is_file():
                continue
            table = json.loads(path.read_text())
            arms = [a for a in args.arms if a in table]
            print(f"\n*{folder}, {what}:*\n")
            print("| per 64×64 (per µm²) | " + " | ".join(f"{a}: J · xy / z [nm]" for a in arms)
                  + f" | {arms[0]} − tetrapod |")
            print("|---|" + "---:|" * (len(arms) + 1))
            for i, row in enumerate(table[arms[0]]["rows"]):
                cells = []
                for a in arms:
                    r = table[a]["rows"][i]
                    cells.append(f"{r['jaccard']:.3f} · {r['rmse_xy_nm']:.1f} / "
                                 f"{r['rmse_z_nm']:.1f}")
                gap = row["jaccard"] - table["tetrapod"]["rows"][i]["jaccard"]
                print(f"| {row['emitters_per_frame']} ({row['density_per_um2']:.2f}) | "
                      + " | ".join(cells) + f" | {gap:+.3f} |")
            print("\nsamples in training: " + ", ".join(
                f"{a} {table[a]['training'].get('samples')}" for a in arms))


def cmd_shapes(args) -> None:
    """Footprint (radius holding 80 % of the photons) and rotation of every arm's PSF over
    the range, with the mean CRLB, and the paper's learned mask (../shared/data) as a
    reference when present: shapes.json, and <tag>_footprint.png under --docs."""
    from deepsmlm.build import build_camera, build_psf, crlb_operating_point
    from deepsmlm.config import experiment_from_dict, load_experiment
    from deepsmlm.design.fisher import mean_crlb_nm
    from deepsmlm.design.outputs import shape_report
    from deepsmlm.plotting import footprint_plot

    out = Path(args.out)
    exps = {arm: load_experiment(out / f"{arm}.yaml") for arm in args.arms
            if (out / f"{arm}.yaml").is_file()}
    first = next(iter(exps.values()))
    base = first.to_dict()
    tetra = load_experiment(BASE).to_dict()["optics"]["mask"]  # the paper's mask beside it
    paper = Path(tetra.get("path", "")).with_name("mask_learned.mat")
    if "paper" not in exps and tetra.get("kind") == "file" and paper.is_file():
        exps["paper"] = experiment_from_dict(dict(base, optics=dict(
            base["optics"], mask={"kind": "file", "path": str(paper), "key": "mask_circ_model",
                                  "pupil_radius_px": 82.9})))
    phases = {arm: build_psf(e).mask_phase for arm, e in exps.items()}
    report = shape_report(first, phases)
    photons, bg = crlb_operating_point(first)
    z = torch.linspace(*first.emitters.z_range_nm, 21)
    psf = build_psf(first)
    with torch.no_grad():
        for arm, p in phases.items():
            psf.set_mask_phase(p)
            report[arm]["mean_crlb_nm"] = float(mean_crlb_nm(psf, z, photons, bg,
                                                             build_camera(first)))
    (out / "shapes.json").write_text(json.dumps(report, indent=1))
    for arm in phases:
        r = report[arm]
        print(f"{arm:20s} mean 80 % radius {r['mean_radius80_nm']:6.0f} nm, 50 % "
              f"{r['mean_radius50_nm']:5.0f} nm, turn "
              f"{r['turn_deg']:6.0f}°, mean CRLB {r['mean_crlb_nm']:.2f} nm; radius by z "
              + " ".join(f"{v:.0f}" for v in r["radius80_nm"]))
    if args.docs:
        Path(args.docs).mkdir(parents=True, exist_ok=True)
        footprint_plot(report, Path(args.docs) / f"{args.tag}_footprint.png")


def figures(out: Path, docs: Path, table: dict, sfx: str = "", tag: str = "deep_optics"
            ) -> None:
    """Jaccard vs density, the three masks, and the three PSFs across z."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepsmlm.build import build_psf, pupil_grid
    from deepsmlm.config import load_experiment
    from deepsmlm.design.outputs import psf_stacks
    from deepsmlm.plotting import mask_image, psf_rows

    docs.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4.5, 3.3))
    for arm, t in table.items():
        x = [r["emitters_per_frame"] for r in t["rows"]]
        ax.plot(x, [r["jaccard"] for r in t["rows"]], "o-", label=arm)
    ax.set_xlabel("emitters per 64×64 frame" if not sfx else
                  "emitters per 64×64 region (inside a larger field)")
    ax.set_ylabel("Jaccard (100 nm sphere)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(docs / f"{tag}_jaccard{sfx}.png", dpi=120)
    plt.close(fig)
    if sfx:  # the masks and PSFs do not depend on the geometry
        return
    exps = {arm: load_experiment(out / f"{arm}.yaml") for arm in table}
    first = next(iter(exps.values()))
    grid = pupil_grid(first.optics)
    phases = [build_psf(e).mask_phase for e in exps.values()]
    ap = grid.aperture(torch.float64).numpy()
    mask_image([p.double().numpy() for p in phases], ap, tuple(exps),
               docs / f"{tag}_masks.png")
    z, stacks = psf_stacks(first, phases, n_z=9, size_px=41)
    psf_rows(stacks, z, first.optics.pixel_size_nm, tuple(exps), docs / f"{tag}_psfs.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, func in (("design", cmd_design), ("scratch", cmd_scratch), ("arms", cmd_arms),
                       ("train", cmd_train), ("shapes", cmd_shapes),
                       ("movies", cmd_movies), ("evaluate", cmd_evaluate)):
        p = sub.add_parser(name)
        p.add_argument("--out", default="bench_out/optics")
        p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
        p.set_defaults(func=func)
        if name == "scratch":
            p.add_argument("--design-config", type=Path, default=SCRATCH)
            p.add_argument("--from-tetrapod", action="store_true",
                           help="start the same stages at the Tetrapod (--base's mask) instead "
                                "of the Fisher stage: the 'learned' arm, in design_e2e/")
            p.add_argument("--minutes", type=float, default=45.0)
        if name == "design":
            p.add_argument("--init-model", default=None,
                           help="start from the Tetrapod with this model trained on it")
            p.add_argument("--design-config", type=Path, default=DESIGN,
                           help="the design experiment (its design section, and with no "
                                "--init-model its start)")
        if name in ("design", "arms", "scratch"):
            p.add_argument("--base", type=Path, default=BASE,
                           help="the Tetrapod experiment every arm copies")
        if name in ("design", "train"):
            p.add_argument("--minutes", type=float, default=20.0 if name == "design" else 15.0)
        if name == "arms":
            p.add_argument("--epochs", type=int, default=None,
                           help="cap the training epochs of every arm (default: the config's)")
            p.add_argument("--seed", type=int, default=0,
                           help="training seed of every arm (simulation and initialisation)")
            p.add_argument("--designs", default=None,
                           help="folder holding design_scratch/ and design_e2e/ (default: --out)")
        if name == "movies":
            p.add_argument("--frames", type=int, default=100)
        if name in ("movies", "evaluate"):
            p.add_argument("--context-px", type=int, default=0,
                           help="frames of (64 + 2C)² px, scored on the central 64×64")
            p.add_argument("--counts", type=int, nargs="+", default=list(COUNTS),
                           choices=COUNTS, help="emitters per 64×64 region (a subset)")
        if name in ("evaluate", "shapes"):
            p.add_argument("--docs", default=None, help="folder for the figures")
            p.add_argument("--tag", default="deep_optics",
                           help="file-name prefix of the figures (deep_optics16: issue 16)")
    p = sub.add_parser("table", help="markdown tables of the comparisons in FOLDERS")
    p.add_argument("folders", nargs="+")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.set_defaults(func=cmd_table)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
