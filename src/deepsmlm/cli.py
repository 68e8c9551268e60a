"""The ``deepsmlm`` command: parse, call one function, write files.

Expected errors (bad files, bad values) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from deepsmlm.errors import UserError


def _z_range(text: str) -> tuple[float, float, float]:
    """'a:b:step' in nm → (a, b, step); b is included when it lies on the grid."""
    try:
        a, b, step = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--z-nm must be a:b:step in nm, got {text!r}") from None
    if step <= 0 or b < a:
        raise argparse.ArgumentTypeError(f"--z-nm needs a <= b and step > 0, got {text!r}")
    if (b - a) / step > 10000:
        raise argparse.ArgumentTypeError(f"--z-nm gives more than 10000 planes: {text!r}")
    return a, b, step


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


# ------------------------------------------------------------------ commands
def cmd_simulate(args) -> None:
    from deepsmlm.workflows import run_simulate

    t0 = time.perf_counter()
    movie = run_simulate(args.experiment, args.frames, args.out, args.seed)
    dt = time.perf_counter() - t0
    print(f"wrote {args.out}/frames.tif ({args.frames} frames), truth.csv "
          f"({len(movie.emitters)} emitters), experiment.yaml in {dt:.1f} s")


def cmd_psf(args) -> None:
    from deepsmlm.workflows import run_psf

    z = run_psf(args.experiment, args.out, args.z_nm, args.size_px)
    print(f"wrote {args.out}/psf.tif ({len(z)} planes, z {z[0]:.0f}..{z[-1]:.0f} nm), "
          f"psf_z.csv, psf.png")


def cmd_demo(args) -> None:
    from deepsmlm.workflows import run_demo

    run_demo(args.out, args.frames, args.seed)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deepsmlm",
                                description="Deep-learning SMLM at high emitter density.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="simulate a movie and its ground truth")
    s.add_argument("experiment", type=Path, help="experiment YAML")
    s.add_argument("--frames", type=_positive_int, required=True, help="number of frames")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("psf", help="PSF z-stack of the experiment (one photon)")
    s.add_argument("experiment", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--z-nm", type=_z_range, default=None,
                   help="a:b:step in nm (default: the experiment's z range, or focus ± 1 µm)")
    s.add_argument("--size-px", type=_positive_int, default=None,
                   help="side of each plane in pixels (default: the model's patch)")
    s.set_defaults(func=cmd_psf)

    s = sub.add_parser("demo", help="the main job on built-in data")
    s.add_argument("--out", type=Path, default=Path("demo_out"))
    s.add_argument("--frames", type=_positive_int, default=200)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_demo)
    return p


def _version() -> str:
    from deepsmlm import __version__

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
    args = build_parser().parse_args(_join_negative_values(list(argv)))
    try:
        args.func(args)
    except UserError as err:
        print(f"deepsmlm: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepsmlm: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
