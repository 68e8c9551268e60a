"""Which emitters are on in which frame, and how bright: counts, blinking, photons.

``emit(structure, n_frames, ...)`` returns an ``EmitterSet`` over frames 0..T−1.
Without blinking every frame is independent (the usual training regime); with blinking a
fixed pool of fluorophores switches on and off as a two-state Markov chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from deepsmlm.emitters import EmitterSet


class Structure(Protocol):
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class PhotonDistribution:
    """Photons per emitter per frame: uniform [lo, hi], lognormal (mean, std),
    exponential (mean) or constant (mean)."""

    kind: str = "uniform"
    lo: float = 1000.0
    hi: float = 5000.0
    mean: float = 2000.0
    std: float = 500.0

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.kind == "uniform":
            return self.lo + (self.hi - self.lo) * torch.rand(n, generator=generator)
        if self.kind == "constant":
            return torch.full((n,), float(self.mean))
        if self.kind == "exponential":
            u = torch.rand(n, generator=generator).clamp_min(1e-12)
            return -self.mean * torch.log(u)
        if self.kind == "lognormal":
            s2 = math.log1p((self.std / self.mean) ** 2)
            mu = math.log(self.mean) - s2 / 2
            return torch.exp(mu + math.sqrt(s2) * torch.randn(n, generator=generator))
        raise ValueError(f"unknown photon distribution {self.kind!r}")


def emit_independent(structure: Structure, n_frames: int, counts: torch.Tensor,
                     photons: PhotonDistribution, generator: torch.Generator | None = None
                     ) -> EmitterSet:
    """Fresh emitters in every frame: ``counts`` (T,) emitters in frame t."""
    total = int(counts.sum())
    frame = torch.repeat_interleave(torch.arange(n_frames), counts.long())
    xyz = structure.sample(total, generator)
    return EmitterSet(xyz.float(), photons.sample(total, generator).float(), frame)


def emit_on_own_structures(new_structure, counts: torch.Tensor, photons: PhotonDistribution,
                           generator: torch.Generator | None = None) -> EmitterSet:
    """Fresh emitters in every frame, each frame on a structure of its own:
    ``new_structure()`` draws one (e.g. random filaments), ``counts`` (T,) emitters in frame
    t. Training samples drawn this way do not share one structure's geometry."""
    counts = counts.long()
    xyz = [new_structure().sample(int(c), generator).float() for c in counts.tolist()]
    frame = torch.repeat_interleave(torch.arange(len(counts)), counts)
    xyz = torch.cat(xyz) if xyz else torch.zeros(0, 3)
    return EmitterSet(xyz, photons.sample(int(counts.sum()), generator).float(), frame)


def draw_counts(n_frames: int, mean: float | None = None, lo_hi: tuple[int, int] | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Emitters per frame: Poisson(mean) or uniform integers in [lo, hi]. Long (T,)."""
    if lo_hi is not None:
        lo, hi = lo_hi
        return torch.randint(lo, hi + 1, (n_frames,), generator=generator)
    return torch.poisson(torch.full((n_frames,), float(mean)), generator=generator).long()


def emit_blinking(structure: Structure, n_frames: int, mean_active: float,
                  mean_on_frames: float, duty_cycle: float, photons: PhotonDistribution,
                  generator: torch.Generator | None = None) -> EmitterSet:
    """A pool of M = mean_active/duty_cycle fluorophores blinking over frames.

    On → off with probability p_off = 1/mean_on_frames per frame; off → on with
    p_on = duty·p_off/(1 − duty), so the stationary on-fraction is ``duty_cycle`` and the
    mean number of active emitters per frame is ``mean_active``. ``id`` is the fluorophore.
    """
    return BlinkingStream(structure, mean_active, mean_on_frames, duty_cycle, photons,
                          generator).take(n_frames)


class IndependentStream:
    """Independent frames drawn a chunk at a time (``take(n)``: the next n frames, numbered
    on; ids go on too). One ``take(T)`` draws exactly what ``emit_independent`` with
    ``draw_counts`` does."""

    def __init__(self, structure: Structure, photons: PhotonDistribution,
                 mean: float | None, lo_hi: tuple[int, int] | None,
                 generator: torch.Generator | None = None):
        self.structure, self.photons, self.generator = structure, photons, generator
        self.mean, self.lo_hi = mean, lo_hi
        self.t = self.n = 0

    def take(self, n_frames: int) -> EmitterSet:
        counts = draw_counts(n_frames, self.mean, self.lo_hi, self.generator)
        em = emit_independent(self.structure, n_frames, counts, self.photons, self.generator)
        em.frame += self.t
        em.id += self.n
        self.t += n_frames
        self.n += len(em)
        return em


class BlinkingStream:
    """The blinking pool of ``emit_blinking``, its Markov chain carried from one
    ``take(n)`` to the next (memory: the pool, not the movie)."""

    def __init__(self, structure: Structure, mean_active: float, mean_on_frames: float,
                 duty_cycle: float, photons: PhotonDistribution,
                 generator: torch.Generator | None = None):
        pool = max(1, round(mean_active / duty_cycle))
        self.p_off = 1.0 / mean_on_frames
        self.p_on = min(1.0, duty_cycle * self.p_off / (1.0 - duty_cycle))
        self.photons, self.generator = photons, generator
        self.xyz = structure.sample(pool, generator).float()
        self.state = torch.rand(pool, generator=generator) < duty_cycle
        self.t = 0

    def take(self, n_frames: int) -> EmitterSet:
        pool = len(self.state)
        frames, ids = [], []
        for t in range(self.t, self.t + n_frames):
            on = self.state.nonzero().squeeze(1)
            frames.append(torch.full((len(on),), t, dtype=torch.long))
            ids.append(on)
            u = torch.rand(pool, generator=self.generator)
            self.state = torch.where(self.state, u >= self.p_off, u < self.p_on)
        self.t += n_frames
        frame = torch.cat(frames)
        idx = torch.cat(ids)
        return EmitterSet(self.xyz[idx], self.photons.sample(len(idx), self.generator).float(),
                          frame, idx)


@dataclass(frozen=True)
class SpeciesMix:
    """Which dye each emitter is: species k with probability ``fractions[k]`` (normalised),
    and photons from ``photons[k]`` when that species has its own distribution (else the
    emitter keeps the photons it was drawn with)."""

    fractions: tuple[float, ...]
    photons: tuple[PhotonDistribution | None, ...]

    def draw(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n species indices, long (n,)."""
        if n == 0:
            return torch.zeros(0, dtype=torch.long)
        p = torch.tensor(self.fractions, dtype=torch.float64)
        return torch.multinomial(p / p.sum(), n, replacement=True, generator=generator)

    def apply(self, em: EmitterSet, species: torch.Tensor,
              generator: torch.Generator | None = None) -> EmitterSet:
        """``em`` with ``species`` set and the photons of species with their own law redrawn."""
        photons = em.photons.clone()
        for k, dist in enumerate(self.photons):
            rows = (species == k).nonzero().squeeze(1)
            if dist is not None and len(rows):
                photons[rows] = dist.sample(len(rows), generator).float()
        return EmitterSet(em.xyz_nm, photons, em.frame, em.id, em.uncertainty_xyz_nm, species)

    def assign(self, em: EmitterSet, generator: torch.Generator | None = None) -> EmitterSet:
        """Every emitter (row) of ``em`` a species of its own."""
        return self.apply(em, self.draw(len(em), generator), generator)


class SpeciesStream:
    """A stream of emitters (``IndependentStream``, ``BlinkingStream``) whose emitters get a
    species, fixed per ``id`` (a blinking fluorophore keeps its dye across frames)."""

    def __init__(self, stream, mix: SpeciesMix, generator: torch.Generator | None = None):
        self.stream, self.mix, self.generator = stream, mix, generator
        self.table = torch.zeros(0, dtype=torch.long)  # species of id 0, 1, …

    def take(self, n_frames: int) -> EmitterSet:
        em = self.stream.take(n_frames)
        need = int(em.id.max()) + 1 if len(em) else 0
        if need > len(self.table):
            self.table = torch.cat([self.table, self.mix.draw(need - len(self.table),
                                                              self.generator)])
        return self.mix.apply(em, self.table[em.id], self.generator)
