"""Image comparison: a super-resolved image against the ground truth (DESIGN §6)."""

from __future__ import annotations

import numpy as np


def sr_correlation(sr_sum: np.ndarray, truth_xy_nm: np.ndarray, fine_pixel_nm: float) -> float:
    """Pearson r of the summed SR image and the ground truth rendered on the same grid,
    both blurred by a Gaussian of σ = 1 fine pixel."""
    import torch

    from deepsmlm.render import pearson, render_gaussian
    from deepsmlm.simulation.simulator import gaussian_blur

    h, w = sr_sum.shape
    gt = render_gaussian(truth_xy_nm, fine_pixel_nm, (w * fine_pixel_nm, h * fine_pixel_nm),
                         fine_pixel_nm)
    blurred = gaussian_blur(torch.from_numpy(sr_sum.astype(np.float32))[None], 1.0)[0].numpy()
    return pearson(blurred, gt)
