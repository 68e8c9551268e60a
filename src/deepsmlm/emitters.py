"""The one currency of the package: a set of emitters (positions in nm, photons, frame).

Frames are 0-based inside the package (file formats convert at the boundary).
Shapes: N emitters; ``xyz_nm`` (N, 3) with x along columns, y along rows, z depth above
the coverslip; ``photons`` (N,) photons at the sample in that frame; ``frame`` (N,) long.
``uncertainty_xyz_nm`` (N, 3), optional: the standard deviation of each localization's
x, y and z estimate in nm, NaN where unknown (z of a 2D method; z of a file that carries
only a lateral value, whose x and y both get that value).
``species`` (N,) long, optional: the emitter's species (dye), an index into the experiment's
``emitters.species`` list (multicolor); −1 where unknown. ``species_probability`` (N,),
optional: a classifier's probability of that species (localizations only).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class EmitterSet:
    xyz_nm: torch.Tensor
    photons: torch.Tensor
    frame: torch.Tensor
    id: torch.Tensor = field(default=None)  # type: ignore[assignment]
    uncertainty_xyz_nm: torch.Tensor | None = None  # σ of x, y, z (N, 3) in nm; NaN = unknown
    species: torch.Tensor | None = None  # (N,) long: index into emitters.species; −1 = unknown
    species_probability: torch.Tensor | None = None  # (N,): the classifier's probability

    def __post_init__(self):
        n = self.xyz_nm.shape[0]
        if self.xyz_nm.ndim != 2 or self.xyz_nm.shape[1] != 3:
            raise ValueError(f"xyz_nm must be (N, 3), got {tuple(self.xyz_nm.shape)}")
        if self.photons.shape != (n,) or self.frame.shape != (n,):
            raise ValueError("photons and frame must be (N,) like xyz_nm")
        if self.id is None:
            self.id = torch.arange(n, dtype=torch.long)
        unc = self.uncertainty_xyz_nm
        if unc is not None and (unc.ndim != 2 or unc.shape != (n, 3)):
            raise ValueError(f"uncertainty_xyz_nm must be (N, 3) = ({n}, 3) (σ of x, y, z in nm, "
                             f"NaN where unknown), got {tuple(unc.shape)}")
        if self.species is not None:
            self.species = self.species.long()
            if self.species.shape != (n,):
                raise ValueError(f"species must be (N,) = ({n},), got {tuple(self.species.shape)}")
        prob = self.species_probability
        if prob is not None:
            if self.species is None:
                raise ValueError("species_probability needs species")
            if prob.shape != (n,):
                raise ValueError(f"species_probability must be (N,) = ({n},), got "
                                 f"{tuple(prob.shape)}")

    def __len__(self) -> int:
        return self.xyz_nm.shape[0]

    @classmethod
    def empty(cls) -> EmitterSet:
        return cls(torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, dtype=torch.long))

    def subset(self, index: torch.Tensor) -> EmitterSet:
        def pick(v):
            return None if v is None else v[index]

        return EmitterSet(self.xyz_nm[index], self.photons[index], self.frame[index],
                          self.id[index], pick(self.uncertainty_xyz_nm), pick(self.species),
                          pick(self.species_probability))

    def in_frame(self, t: int) -> EmitterSet:
        return self.subset(self.frame == t)

    @staticmethod
    def cat(sets: list[EmitterSet]) -> EmitterSet:
        """Concatenate; uncertainties are kept when any set has them (NaN rows for the rest)."""
        if not sets:
            return EmitterSet.empty()
        unc = None
        known = [s.uncertainty_xyz_nm for s in sets if s.uncertainty_xyz_nm is not None]
        if known:
            unc = torch.cat([s.uncertainty_xyz_nm if s.uncertainty_xyz_nm is not None
                             else torch.full((len(s), 3), float("nan"), dtype=known[0].dtype,
                                             device=known[0].device)
                             for s in sets])
        species = prob = None
        if any(s.species is not None for s in sets):
            species = torch.cat([s.species if s.species is not None
                                 else torch.full((len(s),), -1, dtype=torch.long) for s in sets])
        if any(s.species_probability is not None for s in sets):
            prob = torch.cat([s.species_probability if s.species_probability is not None
                              else torch.full((len(s),), float("nan")) for s in sets])
        return EmitterSet(torch.cat([s.xyz_nm for s in sets]), torch.cat([s.photons for s in sets]),
                          torch.cat([s.frame for s in sets]), torch.cat([s.id for s in sets]),
                          unc, species, prob)

    def numpy(self) -> dict[str, np.ndarray]:
        """Columns as numpy arrays (xyz in nm, frame 0-based)."""
        out = {"id": self.id.cpu().numpy(), "frame": self.frame.cpu().numpy(),
               "xyz_nm": self.xyz_nm.detach().cpu().double().numpy(),
               "photons": self.photons.detach().cpu().double().numpy()}
        if self.uncertainty_xyz_nm is not None:
            out["uncertainty_xyz_nm"] = self.uncertainty_xyz_nm.detach().cpu().double().numpy()
        if self.species is not None:
            out["species"] = self.species.cpu().numpy()
        if self.species_probability is not None:
            out["species_probability"] = self.species_probability.detach().cpu().double().numpy()
        return out

    @classmethod
    def from_numpy(cls, xyz_nm, photons, frame, id=None, uncertainty_xyz_nm=None,
                   species=None, species_probability=None) -> EmitterSet:
        """Build from arrays; frame 0-based; ``uncertainty_xyz_nm`` (N, 3), NaN = unknown;
        ``species`` (N,) integer indices, −1 = unknown."""
        t = torch.as_tensor
        return cls(t(np.asarray(xyz_nm, np.float64)).float().reshape(-1, 3),
                   t(np.asarray(photons, np.float64)).float(),
                   t(np.asarray(frame)).long(),
                   None if id is None else t(np.asarray(id)).long(),
                   None if uncertainty_xyz_nm is None
                   else t(np.asarray(uncertainty_xyz_nm, np.float64)).float(),
                   None if species is None else t(np.asarray(species)).long(),
                   None if species_probability is None
                   else t(np.asarray(species_probability, np.float64)).float())
