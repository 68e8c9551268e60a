"""PSF on an accelerator: agreement with the CPU and raw render throughput.

    python benchmarks/psf_device_check.py [--device cuda]

Renders the same emitters through the pupil model of `3d-astigmatic.yaml` on the CPU and
on the device, reports the largest relative difference, then times the render of
`--emitters` emitters per frame over `--frames` frames on the device.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import CONFIGS

from deepsmlm.build import build_psf, field_nm
from deepsmlm.config import load_experiment


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--config", default="3d-astigmatic.yaml")
    ap.add_argument("--emitters", type=int, default=30)
    ap.add_argument("--frames", type=int, default=2000)
    args = ap.parse_args()
    exp = load_experiment(CONFIGS / args.config)
    psf = build_psf(exp)
    gen = torch.Generator().manual_seed(0)
    n = 256
    w_nm, h_nm = field_nm(exp)
    xyz = torch.rand(n, 3, generator=gen) * torch.tensor([w_nm, h_nm, 0.0])
    xyz[:, 2] = torch.empty(n).uniform_(*exp.emitters.z_range_nm, generator=gen)
    photons = torch.full((n,), 1000.0)
    with torch.no_grad():
        ref, _ = psf.patches(xyz, photons)
        psf.to(args.device)
        got, _ = psf.patches(xyz.to(args.device), photons.to(args.device))
    rel = float((got.cpu() - ref).abs().max() / ref.abs().max())
    print(f"{args.config}: max |device - cpu| / max = {rel:.2e}")
    t_frames, n_em = args.frames, args.emitters
    xyz = torch.rand(t_frames * n_em, 3, generator=gen) * torch.tensor([w_nm, h_nm, 0.0])
    frame = torch.arange(t_frames).repeat_interleave(n_em)
    xyz, frame = xyz.to(args.device), frame.to(args.device)
    photons = torch.full((len(frame),), 1000.0, device=args.device)
    with torch.no_grad():
        for _rep in range(2):  # the first run warms up
            if args.device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            psf.render(xyz, photons, frame, (t_frames, exp.frame.height_px, exp.frame.width_px),
                       chunk=8192)
            if args.device == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
    print(f"render {n_em} emitters/frame, {exp.frame.height_px}x{exp.frame.width_px}, "
          f"patch {psf.patch_px} px, "
          f"grid {exp.optics.pupil_grid_px}: {t_frames / dt:.0f} frames/s on {args.device}")


if __name__ == "__main__":
    main()
