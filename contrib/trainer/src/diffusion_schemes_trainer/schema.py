"""The base of every table of the trainer's config: unknown fields are errors, and types are what they say.

pydantic's lax mode reads ``true`` as ``1`` for an ``int`` field and ``1.0`` for a ``float`` one, so
``lr = true`` would train at a learning rate of 1. :func:`no_bools` refuses a boolean (alone or
inside a list) wherever the field's type has no ``bool`` in it; :class:`Section` applies it to
every field, and the top-level ``TrainConfig`` does the same.

>>> from pydantic import Field
>>> from diffusion_schemes_trainer.schema import Section
>>> class Example(Section):
...     lr: float = Field(1e-3, gt=0)
>>> Example(lr=2).lr
2.0
>>> Example(lr=True)
Traceback (most recent call last):
  ...
pydantic_core._pydantic_core.ValidationError: 1 validation error for Example
  Value error, lr = True: a boolean is not a number; write a number ...
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["Section", "no_bools"]


def _allows_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    return any(_allows_bool(arg) for arg in typing.get_args(annotation) if not isinstance(arg, (str, int, float)))


def _has_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    return isinstance(value, (list, tuple)) and any(_has_bool(v) for v in value)


def no_bools(model: type[BaseModel], data: Any) -> Any:
    """Refuse a boolean in a field whose type holds no ``bool`` (the body of a model's ``before`` validator)."""
    if isinstance(data, dict):
        for name, value in data.items():
            field = model.model_fields.get(name) if isinstance(name, str) else None
            if field is not None and _has_bool(value) and not _allows_bool(field.annotation):
                raise ValueError(f"{name} = {value!r}: a boolean is not a number; write a number")
    return data


class Section(BaseModel):
    """A table of the config: frozen, no unknown fields, no NaN or inf, no boolean where a number is meant."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bools(cls, data: Any) -> Any:
        return no_bools(cls, data)
