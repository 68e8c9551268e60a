"""What a benchmark records about the machine it ran on."""

from __future__ import annotations

import time

import torch


def matmul_gflops(device: str = "cpu", n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matmul rate (GFLOP/s) of an n×n product, after one warm-up."""
    a = torch.randn(n, n, device=device)
    a @ a
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        a @ a
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * repeats / (time.perf_counter() - t) / 1e9
