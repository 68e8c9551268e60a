"""Building blocks of the experiment file's typed sections (pydantic), shared by
``config`` and by the methods, which validate their own training sections.

A section forbids unknown keys; numbers carry their allowed range in the type.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
PosInt = Annotated[int, Field(ge=1)]


class Strict(BaseModel):
    """A section of the experiment file: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check_range(pair: list[float] | tuple[float, float], name: str) -> None:
    """Raise ValueError unless ``pair`` is [lo, hi] with lo <= hi."""
    if pair[0] > pair[1]:
        raise ValueError(f"{name} must be [lo, hi] with lo <= hi, got {list(pair)}")


class CardSettings(BaseModel):
    """A method's ``settings`` in ``model.json`` (written by the method, read back by it):
    types checked strictly (no "32" for 32, no true for 1), keys of later releases kept."""

    model_config = ConfigDict(extra="allow", strict=True)


class ZRangeSettings(CardSettings):
    """Settings that carry the depths a model localizes over."""

    z_range_nm: Annotated[list[FiniteFloat], Field(min_length=2, max_length=2)] | None = None

    @field_validator("z_range_nm")
    @classmethod
    def _ordered(cls, v):
        if v is not None:
            check_range(v, "z_range_nm")
        return v


def check_card_settings(model: type[CardSettings], settings: dict, source) -> None:
    """Raise a UserError naming the first setting of ``settings`` that ``model`` rejects."""
    from deepsmlm.errors import UserError

    try:
        model.model_validate(settings)
    except ValidationError as e:
        err = e.errors()[0]
        where = "".join(f".{k}" for k in err["loc"])
        got = "" if err["type"] == "missing" or not err["loc"] \
            else f", got {err.get('input')!r:.60}"
        raise UserError(f"{source}: settings{where}: {err['msg']}{got}") from None
