"""The ``explicit`` discretization: a grid held as its noise levels, so a config can carry it.

A calibrated grid (:func:`diffusion_schemes.calibrate_sigmas`) or any hand-picked one is saved as
``{"name": "explicit", "sigmas": [s_0, ..., s_{N-1}, 0.0]}``: validated like any spec (strictly
decreasing, positive, finite, ending in 0), shown by ``diffusion-schemes show discretization
explicit``, and built into a discretization whose ``sigmas(N, schedule)`` is that grid. Its number
of steps is fixed, ``len(sigmas) - 1``; asking for another is an error. JSON keeps the values
exactly (a float64 prints as the shortest decimal that reads back as itself).

>>> import json
>>> import diffusion_schemes as ds
>>> spec = ds.parse_spec("discretization", {"name": "explicit", "sigmas": [80.0, 2.5, 0.1, 0.002, 0.0]})
>>> grid = spec.build()
>>> grid.sigmas(4, None)
tensor([8.0000e+01, 2.5000e+00, 1.0000e-01, 2.0000e-03, 0.0000e+00], dtype=torch.float64)
>>> ds.parse_spec("discretization", json.loads(spec.model_dump_json())) == spec
True
>>> grid.sigmas(10, None)
Traceback (most recent call last):
  ...
diffusion_schemes.errors.InvalidArgumentError: this explicit grid has 4 steps (5 noise levels ending in 0), ...
"""

import math
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from diffusion_schemes.discretizations.grids import BaseDiscretization
from diffusion_schemes.errors import InvalidArgumentError
from diffusion_schemes.specs.base import DiscretizationSpec

__all__ = ["ExplicitDiscretization", "ExplicitSpec"]


class ExplicitSpec(DiscretizationSpec):
    """A grid given as its noise levels: strictly decreasing, positive, finite, then a final 0.

    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("discretization", {"name": "explicit", "sigmas": [1.0, 0.5, 0.0]})
    ExplicitSpec(name='explicit', sigmas=(1.0, 0.5, 0.0))
    >>> ds.parse_spec("discretization", {"name": "explicit", "sigmas": [1.0, 2.0, 0.0]})
    Traceback (most recent call last):
      ...
    diffusion_schemes.SchemeConfigError: invalid config for discretization 'explicit' (ExplicitSpec):
      - sigmas: Value error, sigmas must decrease strictly: 1 then 2 at index 0...
    ...
    """

    builds = "ExplicitDiscretization"
    name: Literal["explicit"] = "explicit"
    sigmas: tuple[float, ...] = Field(
        ..., description="The grid: N strictly decreasing positive noise levels, then 0 (N steps)."
    )

    @field_validator("sigmas")
    @classmethod
    def _check_grid(cls, sigmas: tuple[float, ...]) -> tuple[float, ...]:
        if len(sigmas) < 2:
            raise ValueError(f"sigmas needs at least one noise level and the final 0, got {list(sigmas)}")
        bad = [(i, s) for i, s in enumerate(sigmas) if not math.isfinite(s)]
        if bad:
            raise ValueError(f"sigmas must be finite, got {bad[0][1]} at index {bad[0][0]}")
        if sigmas[-1] != 0.0:
            raise ValueError(f"sigmas must end at noise level 0 (the clean sample), got {sigmas[-1]} last; append 0.0")
        for i, (a, b) in enumerate(zip(sigmas[:-1], sigmas[1:])):
            if not a > b:
                raise ValueError(
                    f"sigmas must decrease strictly: {a:g} then {b:g} at index {i}; sort them in decreasing "
                    "order and drop repeated values"
                )
        return sigmas


class ExplicitDiscretization(BaseDiscretization):
    """The grid of its ``sigmas`` field; ``sigma_at`` joins its levels linearly in ``log sigma``.

    ``sigmas(N, schedule)`` returns the stored grid (float64) for ``N = len(sigmas) - 1`` and
    raises for any other N; the schedule is not consulted. ``sigma_at(u)`` passes through the
    stored level ``i`` at ``u = i / (N - 1)`` and is geometric in between, so the grid is a
    sampling of it like every discretization's.

    >>> import torch
    >>> grid = ExplicitDiscretization(sigmas=[100.0, 10.0, 1.0, 0.0])
    >>> grid.num_steps, grid.sigma_at(torch.tensor([0.0, 0.25, 1.0]), None)
    (3, tensor([100.0000,  31.6228,   1.0000], dtype=torch.float64))
    """

    spec_class = ExplicitSpec
    map_rtol = 1e-12

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the spec binds each field as an attribute; this one would hide the method sigmas()
        self._grid = torch.tensor(self.__dict__.pop("sigmas"), dtype=torch.float64)

    @property
    def num_steps(self) -> int:
        """The number of solver steps of the grid: ``len(sigmas) - 1``."""
        return self._grid.shape[0] - 1

    def _levels(self) -> torch.Tensor:
        return self._grid.clone()

    def sigmas(self, num_steps: int | None = None, schedule: Any = None) -> torch.Tensor:
        """The stored grid; ``num_steps``, when given, must be its number of steps."""
        if num_steps is not None and num_steps != self.num_steps:
            raise InvalidArgumentError(
                f"this explicit grid has {self.num_steps} steps ({self.num_steps + 1} noise levels ending in 0), "
                f"but {num_steps!r} steps were asked for; pass num_steps={self.num_steps} or leave it out "
                "(ds.sample(..., sigmas=grid.sigmas()))"
            )
        return self._levels()

    def sigma_at(self, u: Any, schedule: Any) -> torch.Tensor:
        log_s = self._levels()[:-1].log()
        n = log_s.shape[0]
        if n == 1:
            return torch.full_like(torch.as_tensor(u, dtype=torch.float64), float(log_s[0].exp()))
        pos = torch.as_tensor(u, dtype=torch.float64).clamp(0, 1) * (n - 1)
        left = pos.floor().clamp(max=n - 2).long()
        w = pos - left
        return torch.exp((1 - w) * log_s[left] + w * log_s[left + 1])
