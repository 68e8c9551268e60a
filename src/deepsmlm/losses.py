"""Training losses.

Deep-STORM: L = mean((G∗ŷ − s·G∗y)²) + λ·mean(|ŷ|), with y the spike image of the true
positions on the fine grid, G a normalised Gaussian of σ fine pixels (7×7 for σ = 1) and
s the target scale. Published values: s = 100, σ = 1, λ = 1 (Nehme et al. 2018 code).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel(sigma_px: float) -> torch.Tensor:
    """Normalised 2D Gaussian, side 2·ceil(3σ)+1, shape (1, 1, K, K)."""
    r = max(1, math.ceil(3 * sigma_px))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (x / sigma_px) ** 2)
    k = g[:, None] * g[None, :]
    return (k / k.sum())[None, None]


def blur(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return F.conv2d(img, kernel.to(img), padding=kernel.shape[-1] // 2)


def deepstorm_loss(pred: torch.Tensor, spikes: torch.Tensor, scale: float = 100.0,
                   sigma_px: float = 1.0, l1_weight: float = 1.0) -> torch.Tensor:
    """MSE of the blurred prediction against the scaled blurred spikes + L1 sparsity."""
    k = gaussian_kernel(sigma_px)
    mse = torch.mean((blur(pred, k) - scale * blur(spikes, k)) ** 2)
    return mse + l1_weight * pred.abs().mean()


def _gauss_1d(sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (x / max(sigma, 1e-3)) ** 2)
    return g / g.sum()


def blur_3d(vol: torch.Tensor, sigma_px: float, sigma_planes: float) -> torch.Tensor:
    """Separable normalised Gaussian blur of volumes (B, D, H, W), zero padding: two 1D
    convolutions in the plane and a weighted sum of shifted planes along D."""
    b, d, h, w = vol.shape
    g = _gauss_1d(sigma_px).to(vol)
    r = len(g) // 2
    x = vol.reshape(b * d, 1, h, w)
    x = F.conv2d(x, g.view(1, 1, 1, -1), padding=(0, r))
    x = F.conv2d(x, g.view(1, 1, -1, 1), padding=(r, 0)).view(b, d, h, w)
    gz = _gauss_1d(sigma_planes).to(vol)
    rz = len(gz) // 2
    xp = F.pad(x, (0, 0, 0, 0, rz, rz))
    return sum(gz[j] * xp[:, j:j + d] for j in range(len(gz)))


def overlap_loss(pred: torch.Tensor, target: torch.Tensor, scale: float,
                 count_false_positives: bool = True, eps: float = 1.0,
                 squares: bool = False) -> torch.Tensor:
    """Soft Dice on p = pred/scale and the occupancy t.

    With false positives counted (ours): 1 − (2Σpt + ε)/(Σp + Σt + ε), so predicted mass
    where nothing is raises the loss. The published DeepSTORM3D variant,
    1 − (2Σpt + ε)/(Σt + Σpt + ε), ignores it (kept for reproduction).
    ``squares``: 1 − (2Σpt + ε)/(Σp² + Σt² + ε) (the V-Net form), whose minimum is p = t
    for any target (Cauchy–Schwarz). Use it with soft targets such as trilinear voxel grids:
    the Σp + Σt form pulls mass into each emitter's largest target voxel, which biases the
    sub-voxel positions back towards the voxel centres.
    """
    p = pred / scale
    inter = (p * target).sum()
    if squares:
        if not count_false_positives:
            raise ValueError("the squared Dice always counts false positives")
        return 1.0 - (2.0 * inter + eps) / ((p * p).sum() + (target * target).sum() + eps)
    den = (p.sum() if count_false_positives else inter) + target.sum()
    return 1.0 - (2.0 * inter + eps) / (den + eps)


def deepstorm3d_loss(pred: torch.Tensor, target: torch.Tensor, scale: float = 800.0,
                     sigma_px: float = 1.0, sigma_planes: float = 1.0,
                     overlap_weight: float = 1.0, count_false_positives: bool = True,
                     overlap_squares: bool = False) -> torch.Tensor:
    """MSE of 3D-Gaussian-blurred prediction vs scaled blurred occupancy + overlap term.

    pred, target: (B, D, H, W).
    """
    bp = blur_3d(pred, sigma_px, sigma_planes)
    with torch.no_grad():
        bt = blur_3d(target, sigma_px, sigma_planes)
    mse = torch.mean((bp - scale * bt) ** 2)
    return mse + overlap_weight * overlap_loss(pred, target, scale, count_false_positives,
                                               squares=overlap_squares)


def pixel_centres(h: int, w: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """x (column) and y (row) of every pixel centre in px, flattened (H·W,): i + 0.5."""
    rows = torch.arange(h, device=device, dtype=torch.float32) + 0.5
    cols = torch.arange(w, device=device, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(rows, cols, indexing="ij")
    return xx.reshape(-1), yy.reshape(-1)


def mixture_loss(p: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor,
                 truth: torch.Tensor, mask: torch.Tensor,
                 log_class: torch.Tensor | None = None,
                 truth_class: torch.Tensor | None = None) -> torch.Tensor:
    """Localization + count loss of per-pixel predictions, with no matching to the truth.

    The pixels form a Gaussian mixture: weight p_i/Σp, mean ``mu`` (B, P, D) and diagonal
    σ ``sigma`` (B, P, D) of D quantities (x, y in px; z, photons normalised); the true
    emitters ``truth`` (B, K, D) (rows with ``mask`` (B, K) False are padding) are scored by
    −Σ_k log Σ_i (p_i/Σp)·N(t_k; μ_i, σ_i). The count n = Σ mask is scored by the Gaussian
    approximation of the Poisson-binomial law of Σ Bernoulli(p_i): mean Σp, variance
    Σp(1−p). ``p`` is (B, P). Returns the mean over frames of the sum of both terms
    (Speiser et al., Nat. Methods 18, 1082 (2021)).

    Multicolor: each pixel also predicts the species, ``log_class`` (B, P, C) log
    probabilities; a true emitter of species ``truth_class`` (B, K) is scored by the
    component's density times its probability of that species, N(t_k; μ_i, σ_i)·q_i(c_k),
    so the class term, too, needs no matching.
    """
    p_sum = p.sum(1)  # (B,)
    var = (p * (1 - p)).sum(1).clamp_min(1e-6)
    n = mask.sum(1).to(p.dtype)
    count = 0.5 * (n - p_sum) ** 2 / var + 0.5 * torch.log(2 * math.pi * var)
    if truth.shape[1] == 0:
        return count.mean()
    log_w = torch.log(p.clamp_min(1e-8)) - torch.log(p_sum.clamp_min(1e-8))[:, None]  # (B,P)
    diff = (truth[:, :, None, :] - mu[:, None, :, :]) / sigma[:, None, :, :]  # (B, K, P, D)
    log_n = (-0.5 * diff ** 2 - torch.log(sigma[:, None]) - 0.5 * math.log(2 * math.pi)).sum(-1)
    if log_class is not None:  # (B, C, P) gathered at each truth's class → (B, K, P)
        idx = truth_class.long().clamp_min(0)[:, :, None].expand(-1, -1, log_class.shape[1])
        log_n = log_n + log_class.transpose(1, 2).gather(1, idx)
    log_l = torch.logsumexp(log_w[:, None, :] + log_n, dim=2)  # (B, K)
    gmm = -(log_l * mask).sum(1)
    return (gmm + count).mean()
