"""The one currency of the package: a set of emitters (positions in nm, photons, frame).

Frames are 0-based inside the package (file formats convert at the boundary).
Shapes: N emitters; ``xyz_nm`` (N, 3) with x along columns, y along rows, z depth above
the coverslip; ``photons`` (N,) photons at the sample in that frame; ``frame`` (N,) long.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class EmitterSet:
    xyz_nm: torch.Tensor
    photons: torch.Tensor
    frame: torch.Tensor
    id: torch.Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        n = self.xyz_nm.shape[0]
        if self.xyz_nm.ndim != 2 or self.xyz_nm.shape[1] != 3:
            raise ValueError(f"xyz_nm must be (N, 3), got {tuple(self.xyz_nm.shape)}")
        if self.photons.shape != (n,) or self.frame.shape != (n,):
            raise ValueError("photons and frame must be (N,) like xyz_nm")
        if self.id is None:
            self.id = torch.arange(n, dtype=torch.long)

    def __len__(self) -> int:
        return self.xyz_nm.shape[0]

    @classmethod
    def empty(cls) -> EmitterSet:
        return cls(torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, dtype=torch.long))

    def subset(self, index: torch.Tensor) -> EmitterSet:
        return EmitterSet(self.xyz_nm[index], self.photons[index], self.frame[index],
                          self.id[index])

    def in_frame(self, t: int) -> EmitterSet:
        return self.subset(self.frame == t)

    @staticmethod
    def cat(sets: list[EmitterSet]) -> EmitterSet:
        if not sets:
            return EmitterSet.empty()
        return EmitterSet(torch.cat([s.xyz_nm for s in sets]), torch.cat([s.photons for s in sets]),
                          torch.cat([s.frame for s in sets]), torch.cat([s.id for s in sets]))
