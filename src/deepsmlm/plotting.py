"""Figures for people: PSF montages and frame previews (matplotlib, Agg backend, no GUI)."""

from __future__ import annotations

import os

import numpy as np

# One colour per species (multicolor renderings and their legends): the Okabe–Ito
# palette, distinct under the common colour-vision deficiencies, ordered so that the first
# pairs differ most; its black replaced by white (species are composited additively on
# black). RGB in [0, 1], (8, 3).
SPECIES_COLOURS = np.array([(230, 159, 0), (86, 180, 233), (0, 158, 115), (204, 121, 167),
                            (240, 228, 66), (0, 114, 178), (213, 94, 0), (255, 255, 255)],
                           np.float32) / 255.0


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike, dpi: int) -> None:
    """Lay out, write as PNG atomically, close."""
    from deepsmlm.io.atomic import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    _plt().close(fig)


def psf_montage(stack: np.ndarray, z_nm: np.ndarray, pixel_size_nm: float,
                path: str | os.PathLike, title: str = "") -> None:
    """Montage of PSF planes (D, H, W), each on its own colour scale, z in the titles,
    with a 1 µm scale bar; written atomically as PNG."""
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
    _save(fig, path, dpi=110)


def frame_preview(frames: np.ndarray, truth_xy_px: list[np.ndarray], path: str | os.PathLike,
                  title: str = "") -> None:
    """First few frames with the ground-truth positions (pixel units) overlaid."""
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
    _save(fig, path, dpi=100)


def image_preview(img: np.ndarray, pixel_nm: float, path: str | os.PathLike, title: str = ""
                  ) -> None:
    """A super-resolution image with a robust colour scale and a 1 µm (or 100 nm) bar."""
    plt = _plt()
    h, w = img.shape
    fig, ax = plt.subplots(figsize=(6, 6 * h / max(w, 1) + 0.3))
    vmax = np.percentile(img[img > 0], 99.5) if np.any(img > 0) else 1.0
    ax.imshow(img, cmap="hot", vmin=0, vmax=vmax, interpolation="nearest")
    bar_nm = 1000.0 if w * pixel_nm > 3000 else 100.0
    bar = bar_nm / pixel_nm
    ax.plot([w - 0.05 * w - bar, w - 0.05 * w], [0.95 * h, 0.95 * h], color="white", lw=3)
    ax.text(w - 0.05 * w - bar / 2, 0.93 * h, f"{bar_nm:g} nm", color="white", ha="center",
            fontsize=8)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    _save(fig, path, dpi=120)


def crlb_plot(res: dict, path: str | os.PathLike, title: str = "") -> None:
    """CRLB of x, y, z against z."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in (("crlb_x", "x"), ("crlb_y", "y"), ("crlb_z", "z")):
        if np.any(np.isfinite(res[key])):
            ax.plot(res["z_nm"], res[key], marker="o", ms=3, label=label)
    ax.set_xlabel("z [nm]")
    ax.set_ylabel("CRLB [nm]")
    ax.legend()
    ax.set_title(title, fontsize=9)
    _save(fig, path, dpi=110)


def frc_plot(res, path: str | os.PathLike) -> None:
    """FRC curve with the 1/7 threshold and the resolution."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(res.q_per_nm * 1000, res.frc_raw, color="0.7", lw=0.8, label="FRC")
    ax.plot(res.q_per_nm * 1000, res.frc, color="tab:blue", label="smoothed")
    ax.axhline(1 / 7, color="tab:red", ls="--", lw=1, label="1/7")
    ax.set_xlabel("spatial frequency [1/µm]")
    ax.set_ylabel("FRC")
    ax.set_ylim(-0.2, 1.05)
    ax.set_title(f"FRC resolution {res.resolution_nm:.1f} nm", fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, path, dpi=110)


def training_curves(history: list[dict], path: str | os.PathLike) -> None:
    """Training and validation loss per epoch (log scale)."""
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ep, [h["train_loss"] for h in history], label="train")
    ax.plot(ep, [h["val_loss"] for h in history], label="validation")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    _save(fig, path, dpi=110)


def widefield_vs_sr(widefield: np.ndarray, sr: np.ndarray, pixel_nm: float, fine_nm: float,
                    path: str | os.PathLike, title: str = "",
                    method: str = "Deep-STORM") -> None:
    """The widefield sum beside ``method``'s super-resolved reconstruction, 1 µm scale
    bars."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.3))
    for ax, img, px, name in ((axes[0], widefield, pixel_nm, "widefield (sum of frames)"),
                              (axes[1], sr, fine_nm, f"{method} reconstruction")):
        pos = img[img > 0]
        vmax = np.percentile(pos, 99.5) if pos.size else 1.0
        ax.imshow(img, cmap="hot" if ax is axes[1] else "gray", vmin=0 if ax is axes[1]
                  else None, vmax=vmax if ax is axes[1] else None, interpolation="nearest")
        h, w = img.shape
        bar = 1000.0 / px
        ax.plot([w * 0.95 - bar, w * 0.95], [h * 0.95, h * 0.95], color="white", lw=3)
        ax.set_title(f"{name}  (bar 1 µm)", fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path, dpi=110)


def _species_legend(ax, names: list[str]) -> None:
    """A legend of coloured squares, one per species name (``SPECIES_COLOURS`` order)."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=SPECIES_COLOURS[k], edgecolor="none", label=name)
               for k, name in enumerate(names[:len(SPECIES_COLOURS)])]
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.6,
                  facecolor="black", labelcolor="white", edgecolor="none")


def _scale_bar(ax, shape: tuple[int, ...], pixel_nm: float, label: bool = False) -> None:
    """A white bar of 1 µm (or 100 nm when the image is under 3 µm wide), bottom right."""
    h, w = shape[:2]
    bar_nm = 1000.0 if w * pixel_nm > 3000 else 100.0
    bar = bar_nm / pixel_nm
    ax.plot([w * 0.95 - bar, w * 0.95], [h * 0.95, h * 0.95], color="white", lw=3)
    if label:
        ax.text(w * 0.95 - bar / 2, h * 0.93, f"{bar_nm:g} nm", color="white", ha="center",
                fontsize=8)


def species_preview(rgb: np.ndarray, names: list[str], pixel_nm: float,
                    path: str | os.PathLike, title: str = "") -> None:
    """A multicolor super-resolution image (rows, cols, 3) in [0, 1], one colour per
    species (``render.species_rgb``), with a legend of the species names and a scale bar."""
    plt = _plt()
    h, w = rgb.shape[:2]
    fig, ax = plt.subplots(figsize=(6, 6 * h / max(w, 1) + 0.3))
    ax.imshow(np.clip(rgb, 0, 1), interpolation="nearest")
    _scale_bar(ax, rgb.shape, pixel_nm, label=True)
    _species_legend(ax, names)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    _save(fig, path, dpi=120)


def widefield_vs_sr_species(widefield: np.ndarray, rgb: np.ndarray, names: list[str],
                            pixel_nm: float, fine_nm: float, path: str | os.PathLike,
                            title: str = "") -> None:
    """The widefield sum (grey) beside the multicolor reconstruction ``rgb`` (rows, cols,
    3) in [0, 1], one colour per species (``render.species_rgb``: species k in
    ``SPECIES_COLOURS[k]``), with a legend of the species ``names`` and 1 µm bars."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.3))
    axes[0].imshow(widefield, cmap="gray", interpolation="nearest")
    axes[0].set_title("widefield (sum of frames)  (bar 1 µm)", fontsize=9)
    axes[1].imshow(np.clip(rgb, 0, 1), interpolation="nearest")
    axes[1].set_title("reconstruction, one colour per species  (bar 1 µm)", fontsize=9)
    for ax, img, px in ((axes[0], widefield, pixel_nm), (axes[1], rgb, fine_nm)):
        h, w = img.shape[:2]
        bar = 1000.0 / px
        ax.plot([w * 0.95 - bar, w * 0.95], [h * 0.95, h * 0.95], color="white", lw=3)
        ax.set_axis_off()
    _species_legend(axes[1], names)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path, dpi=110)


def widefield_vs_z(widefield: np.ndarray, xyz_nm: np.ndarray, pixel_nm: float,
                   path: str | os.PathLike, title: str = "") -> None:
    """The widefield sum beside the 3D localizations, coloured by z (nm), 1 µm scale bars."""
    plt = _plt()
    h, w = widefield.shape
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.3))
    axes[0].imshow(widefield, cmap="gray", interpolation="nearest")
    axes[0].set_title("widefield (sum of frames)  (bar 1 µm)", fontsize=9)
    bar = 1000.0 / pixel_nm
    axes[0].plot([w * 0.95 - bar, w * 0.95], [h * 0.95, h * 0.95], color="white", lw=3)
    ax = axes[1]
    ax.set_facecolor("black")
    sc = ax.scatter(xyz_nm[:, 0] / 1000, xyz_nm[:, 1] / 1000, c=xyz_nm[:, 2], s=2, lw=0,
                    cmap="turbo")
    ax.set_xlim(0, w * pixel_nm / 1000)
    ax.set_ylim(h * pixel_nm / 1000, 0)
    ax.set_aspect("equal")
    ax.set_xlabel("x [µm]")
    ax.set_ylabel("y [µm]")
    ax.set_title("localizations coloured by z", fontsize=9)
    fig.colorbar(sc, ax=ax, label="z [nm]", shrink=0.8)
    for a in axes[:1]:
        a.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path, dpi=110)


def mask_image(phases: list[np.ndarray], aperture: np.ndarray, labels: tuple[str, ...],
               path: str | os.PathLike, columns: int | None = None) -> None:
    """Phase masks wrapped to [0, 2π) side by side (cyclic colour map), grey outside;
    ``columns`` per row (all in one row by default)."""
    plt = _plt()
    cols = len(phases) if columns is None else max(1, min(columns, len(phases)))
    rows = -(-len(phases) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(phases):]:
        ax.set_axis_off()
    for ax, phase, label in zip(axes.flat, phases, labels):
        wrapped = np.ma.masked_where(aperture == 0, np.mod(phase, 2 * np.pi))
        im = ax.imshow(wrapped, cmap="twilight", vmin=0, vmax=2 * np.pi, interpolation="nearest")
        ax.set_title(f"{label}\nmask (rad, wrapped)", fontsize=8)
        ax.set_axis_off()
    fig.colorbar(im, ax=list(axes.flat), shrink=0.8, ticks=[0, np.pi, 2 * np.pi])
    from deepsmlm.io.atomic import atomic_path

    with atomic_path(path) as tmp:  # colorbar over several axes: no tight_layout
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def psf_rows(stacks: list[np.ndarray], z_nm: np.ndarray, pixel_size_nm: float,
             labels: tuple[str, ...], path: str | os.PathLike) -> None:
    """One row per PSF (D, H, W) across the same depths, each plane on its own scale."""
    plt = _plt()
    rows, cols = len(stacks), len(z_nm)
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.5 * rows + 0.3), squeeze=False)
    bar_px = 1000.0 / pixel_size_nm
    for r, (stack, label) in enumerate(zip(stacks, labels)):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(stack[c], cmap="magma", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"z = {z_nm[c]:.0f} nm", fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
            h, w = stack[c].shape
            if c == cols - 1 and bar_px < 0.8 * w:
                ax.plot([w - 2 - bar_px, w - 2], [h - 3, h - 3], color="white", lw=2)
    fig.suptitle("PSF across z (bar: 1 µm)", fontsize=9)
    _save(fig, path, dpi=110)


def footprint_plot(report: dict, path: str | os.PathLike) -> None:
    """Radius holding 80 % of the photons, and the principal axis's angle, against z: one
    line per mask of a ``design.outputs.shape_report``."""
    plt = _plt()
    z = np.asarray(report["z_nm"]) / 1000.0
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.4, 3.2))
    for name, r in report.items():
        if name == "z_nm":
            continue
        a.plot(z, r["radius80_nm"], ".-", label=f"{name} (mean {r['mean_radius80_nm']:.0f})")
        b.plot(z, r["angle_deg"], ".-", label=f"{name} (turn {r['turn_deg']:.0f}°)")
    a.set_xlabel("z [µm]")
    a.set_ylabel("radius holding 80 % of photons [nm]")
    b.set_xlabel("z [µm]")
    b.set_ylabel("principal axis [deg]")
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path, dpi=110)


def calibration_planes(measured: np.ndarray, model: np.ndarray, z_nm: np.ndarray,
                       pixel_size_nm: float, path: str | os.PathLike, title: str = "",
                       n_show: int = 9) -> None:
    """Measured (T, P, P) and model planes side by side for ``n_show`` planes across the
    stack, each pair on the measured plane's colour scale, with their residual."""
    plt = _plt()
    idx = np.unique(np.linspace(0, len(measured) - 1, n_show).round().astype(int))
    fig, axes = plt.subplots(3, len(idx), figsize=(1.5 * len(idx), 4.9), squeeze=False)
    for col, t in enumerate(idx):
        lo, hi = float(measured[t].min()), float(measured[t].max())
        span = max(hi - lo, 1e-9)
        for row, (img, label) in enumerate(((measured[t], "measured"), (model[t], "model"),
                                            (measured[t] - model[t], "residual"))):
            ax = axes[row, col]
            if row < 2:
                ax.imshow(img, cmap="magma", vmin=lo, vmax=hi)
            else:
                ax.imshow(img, cmap="coolwarm", vmin=-0.3 * span, vmax=0.3 * span)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(label)
        axes[0, col].set_title(f"plane {t}\nz {z_nm[t]:.0f} nm", fontsize=8)
    if title:
        fig.suptitle(title + f"  (residual on ±30 % of each plane's range; "
                     f"{pixel_size_nm:.0f} nm px)", fontsize=9)
    _save(fig, path, 110)


def calibration_agreement(z_nm: np.ndarray, correlation: np.ndarray, residual: np.ndarray,
                          path: str | os.PathLike) -> None:
    """Per-plane correlation and relative residual of model vs measured, per bead (B, T)."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    for i in range(len(correlation)):
        a.plot(z_nm[i], correlation[i], ".-", label=f"bead {i + 1}")
        b.plot(z_nm[i], residual[i], ".-")
    a.axhline(0.95, color="grey", lw=0.8, ls="--")
    a.set_xlabel("bead z above the focal plane [nm]")
    a.set_ylabel("correlation model vs measured")
    b.set_xlabel("bead z above the focal plane [nm]")
    b.set_ylabel("RMS residual / RMS signal")
    a.legend(fontsize=7)
    _save(fig, path, 110)
