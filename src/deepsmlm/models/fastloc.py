"""A localization network at camera resolution (in the family of DECODE, Speiser et al.,
Nat. Methods 18, 1082 (2021)): frames → per-pixel maps of an emitter's presence,
position, brightness, their uncertainties, and the background.

A U-Net of L levels (default 3: widths c, 2c, 4c, …; two conv3×3–BN–ReLU blocks per level,
2×2 max-pooling down, nearest ×2 up with skip connections) followed by a conv3×3 trunk and a
1×1 output. Its receptive field is 46 px across at L = 3 and 98 px at L = 4
(``receptive_field_px``). Even for the Tetrapod (lobes up to ~20 px from the emitter) L = 3
did better than L = 4 in the same CPU training time (docs/benchmarks.md). Input (B, F, H,
W): F frames (the frame itself, or with its neighbours as channels: ``data.context``);
output (B, C, H, W) raw values, whose channels ``channels(localize_z)`` names:

    p       detection logit
    dx, dy  sub-pixel offset of the emitter from the pixel centre (tanh: ±1 px)
    z       depth, normalised to [−1, 1] over the z range (3D only; tanh)
    n       photons / photon scale (sigmoid)
    s_*     the σ of each of the above estimates (softplus), in the same units
    bg      background / background scale (sigmoid)
    c0…     multicolor (``n_species`` ≥ 2): the species' logits (raw; softmax over them)

H and W must be multiples of 2^(L−1) (``multiple``); ``pad_to_multiple`` pads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deepsmlm.models.blocks import conv_bn_relu


def channels(localize_z: bool, n_species: int = 0) -> tuple[str, ...]:
    """Names of the output channels, in order."""
    est = ("dx", "dy", "z", "n") if localize_z else ("dx", "dy", "n")
    return ("p", *est, *(f"s_{e}" for e in est), "bg", *(f"c{k}" for k in range(n_species)))


def _double(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(c_in, c_out), conv_bn_relu(c_out, c_out))


class FastLoc(nn.Module):
    def __init__(self, width: int = 32, localize_z: bool = False, in_frames: int = 1,
                 n_species: int = 0, levels: int = 3):
        super().__init__()
        c, levels = int(width), int(levels)
        if not 2 <= levels <= 6:
            raise ValueError(f"levels must be within 2–6, got {levels}")
        self.width, self.localize_z, self.in_frames = c, bool(localize_z), int(in_frames)
        self.levels = levels
        self.names = channels(localize_z, n_species)
        widths = [c * 2 ** i for i in range(levels)]
        # attribute names enc1…encL, dec(L−1)…dec1 (those of the first, three-level design,
        # so its weight files still load)
        for i, w in enumerate(widths, 1):
            setattr(self, f"enc{i}", _double(in_frames if i == 1 else widths[i - 2], w))
        for i in range(levels - 1, 0, -1):
            setattr(self, f"dec{i}", _double(widths[i] + widths[i - 1], widths[i - 1]))
        self.trunk = conv_bn_relu(c, c)
        self.out = nn.Conv2d(c, len(self.names), 1)
        with torch.no_grad():  # start with few detections: p ≈ 0.01 everywhere
            self.out.bias.zero_()
            self.out.bias[0] = -4.6
        self.to(memory_format=torch.channels_last)  # ≈ 20 % faster convolutions on a CPU

    @property
    def multiple(self) -> int:
        """Frame sides must be multiples of this (one halving per level below the first)."""
        return 2 ** (self.levels - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"frame {tuple(x.shape[-2:])} is not a multiple of {m}; pad it "
                             "(pad_to_multiple)")
        skips = [self.enc1(x.contiguous(memory_format=torch.channels_last))]
        for i in range(2, self.levels + 1):
            skips.append(getattr(self, f"enc{i}")(F.max_pool2d(skips[-1], 2)))
        d = skips.pop()
        for i in range(self.levels - 1, 0, -1):
            up = F.interpolate(d, scale_factor=2, mode="nearest")
            d = getattr(self, f"dec{i}")(torch.cat([up, skips.pop()], 1))
        return self.out(self.trunk(d))


def receptive_field_px(levels: int) -> int:
    """Side of the network's (theoretical) receptive field in camera pixels: each 3×3
    convolution at a level of stride s widens it by 2s, each 2×2 pooling by s."""
    rf, stride = 1, 1
    for level in range(levels):  # encoder: two convolutions, then (but last) a pooling
        rf += 2 * 2 * stride
        if level < levels - 1:
            rf += stride
            stride *= 2
    for _ in range(levels - 1):  # decoder: up ×2, two convolutions
        stride //= 2
        rf += 2 * 2 * stride
    return rf + 2  # the trunk's 3×3


def activate(raw: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Raw output (B, C, H, W) → named maps (B, H, W) in their units: probability in
    [0, 1]; offsets in px (±1); z and photons normalised; σ > 0; background normalised."""
    out = {}
    for i, name in enumerate(names):
        r = raw[:, i]
        if name == "p":
            out[name] = torch.sigmoid(r)
        elif name in ("dx", "dy", "z"):
            out[name] = torch.tanh(r)
        elif name in ("n", "bg"):
            out[name] = torch.sigmoid(r)
        elif name[0] == "c":  # species logits: kept raw, softmax over them by the user
            out[name] = r
        else:  # σ of an estimate
            out[name] = F.softplus(r) + 1e-3
    return out
