"""Figures for people: PSF montages and frame previews (matplotlib, Agg backend, no GUI)."""

from __future__ import annotations

import os

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def psf_montage(stack: np.ndarray, z_nm: np.ndarray, pixel_size_nm: float,
                path: str | os.PathLike, title: str = "") -> None:
    """Montage of PSF planes (D, H, W), each on its own colour scale, z in the titles,
    with a 1 µm scale bar; written atomically as PNG."""
    from deepsmlm.io.atomic import atomic_path

    plt = _plt()
    d = len(stack)
    cols = min(d, 8)
    rows = int(np.ceil(d / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows + 0.4), squeeze=False)
    bar_px = 1000.0 / pixel_size_nm
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= d:
            continue
        ax.imshow(stack[i], cmap="magma", interpolation="nearest")
        ax.set_title(f"z = {z_nm[i]:.0f} nm", fontsize=7)
        h, w = stack[i].shape
        if bar_px < 0.8 * w:
            ax.plot([w - 2 - bar_px, w - 2], [h - 3, h - 3], color="white", lw=2)
    if title:
        fig.suptitle(f"{title}   (bar: 1 µm)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def frame_preview(frames: np.ndarray, truth_xy_px: list[np.ndarray], path: str | os.PathLike,
                  title: str = "") -> None:
    """First few frames with the ground-truth positions (pixel units) overlaid."""
    from deepsmlm.io.atomic import atomic_path

    plt = _plt()
    n = min(len(frames), 4)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    for i in range(n):
        ax = axes[0, i]
        ax.imshow(frames[i], cmap="gray", interpolation="nearest")
        xy = truth_xy_px[i]
        # pixel centres are at integer + 0.5 in our convention, at integers for imshow
        ax.scatter(xy[:, 0] - 0.5, xy[:, 1] - 0.5, s=4, c="tab:red", lw=0)
        ax.set_title(f"frame {i}: {len(xy)} emitters", fontsize=8)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
