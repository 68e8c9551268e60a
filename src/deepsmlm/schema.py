"""Building blocks of the experiment file's typed sections (pydantic), shared by
``config`` and by the methods, which validate their own training sections.

A section forbids unknown keys; numbers carry their allowed range in the type.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class Strict(BaseModel):
    """A section of the experiment file: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check_range(pair: list[float] | tuple[float, float], name: str) -> None:
    """Raise ValueError unless ``pair`` is [lo, hi] with lo <= hi."""
    if pair[0] > pair[1]:
        raise ValueError(f"{name} must be [lo, hi] with lo <= hi, got {list(pair)}")
