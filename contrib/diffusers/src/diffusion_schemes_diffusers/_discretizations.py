"""diffusers' timestep spacings as discretizations: ``linspace``, ``leading``, ``trailing``.

Each makes ``N`` decreasing timesteps of a ``T``-entry table (Lin et al. 2024, Table 2, names the
three spacings) and takes the noise levels there through the schedule's
:meth:`~diffusion_schemes_diffusers.DiscreteNoiseSchedule.sigma_at_timestep`:

- ``linspace``: ``N`` timesteps evenly from ``T - 1`` to 0; ``round=True`` rounds them half to even
  (DDIM, DDPM, the DPM-Solvers), ``round=False`` keeps them fractional (Euler, Heun);
- ``leading``: ``k * (T // N) + steps_offset`` for ``k = N - 1 .. 0``;
- ``trailing``: ``round(T - k T / N) - 1`` for ``k = 0 .. N - 1``.

With ``extra_point=True`` (``linspace``, ``leading``) ``N + 1`` timesteps are spaced and the
smallest dropped, as ``DPMSolverMultistepScheduler`` and its kin do. The schedule must carry a
timestep table (the ``discrete`` schedule, or any with ``num_train_timesteps`` and
``sigma_at_timestep``).

The grid depends on ``N`` through ``T // N`` and the rounding, so it is not a sampling of one map of
``u``; ``sigma_at(u)`` is the map all three approach as ``N`` grows, ``sigma_at_timestep((1 - u)(T - 1))``,
which ``linspace`` without rounding follows exactly from two steps on. One ``linspace`` step is timestep
0, as ``numpy.linspace(0, T - 1, 1)`` gives it (diffusers' one-step Euler starts at the lowest noise
level).
"""

from __future__ import annotations

from typing import Any

import torch

from diffusion_schemes.discretizations import BaseDiscretization

from . import DiffusersBridgeError, LeadingSpec, LinspaceSpec, TrailingSpec


def _table_of(schedule: Any) -> int:
    num = getattr(schedule, "num_train_timesteps", None)
    if num is None or not hasattr(schedule, "sigma_at_timestep"):
        name = getattr(schedule, "name", type(schedule).__name__)
        raise DiffusersBridgeError(
            f"diffusers' timestep spacings need a schedule with a timestep table, and {name!r} has none; use the "
            "'discrete' noise schedule (from_diffusers gives it), or a grid by noise level such as 'karras'"
        )
    return int(num)


class _TimestepSpacing(BaseDiscretization):
    """A grid made of timesteps: subclasses implement :meth:`_spacing`; :meth:`timesteps` checks it."""

    def _spacing(self, num_steps: int, num_train: int) -> torch.Tensor:
        raise NotImplementedError

    def timesteps(self, num_steps: int, schedule: Any) -> torch.Tensor:
        """The ``num_steps`` decreasing timesteps of the grid (float64), as the diffusers scheduler makes them."""
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise DiffusersBridgeError(f"num_steps must be an int >= 1, got {num_steps!r}")
        num_train = _table_of(schedule)
        steps = self._spacing(num_steps, num_train).to(torch.float64)
        if not bool((steps[1:] < steps[:-1]).all()) or float(steps[-1]) < 0 or float(steps[0]) > num_train - 1:
            raise DiffusersBridgeError(
                f"the {self.spec.name!r} spacing of {num_steps} steps on a table of {num_train} gives timesteps "
                f"{steps.tolist()[:8]}...: not strictly decreasing inside [0, {num_train - 1}]; use fewer steps "
                "(at most the table size) or a smaller steps_offset"
            )
        return steps

    def sigmas(self, num_steps: int, schedule: Any) -> torch.Tensor:
        steps = self.timesteps(num_steps, schedule)
        levels = schedule.sigma_at_timestep(steps).to(torch.float64)
        return torch.cat([levels, levels.new_zeros(1)])

    def sigma_at(self, u: Any, schedule: Any) -> torch.Tensor:
        u = torch.as_tensor(u, dtype=torch.float64)
        return schedule.sigma_at_timestep((_table_of(schedule) - 1) * (1 - u)).to(torch.float64)


def _count(num_steps: int, extra_point: bool) -> int:
    return num_steps + 1 if extra_point else num_steps


class LinspaceDiscretization(_TimestepSpacing):
    """``N`` timesteps evenly from ``T - 1`` to 0 (rounded half to even with ``round=True``)."""

    spec_class = LinspaceSpec

    def _spacing(self, num_steps, num_train):
        count = _count(num_steps, self.extra_point)
        # i * (T - 1) / (count - 1) from 0 up, the last exactly T - 1 (numpy.linspace's arithmetic, so the
        # ties that round=True breaks fall as in diffusers), then from the top down
        steps = torch.arange(count, dtype=torch.float64) * ((num_train - 1) / max(count - 1, 1))
        steps[-1] = num_train - 1 if count > 1 else 0
        steps = steps.flip(0)
        return (steps.round() if self.round else steps)[:num_steps]


class LeadingDiscretization(_TimestepSpacing):
    """``k * (T // N) + steps_offset`` for ``k = N - 1, ..., 0`` (``N + 1`` points, the last dropped, with ``extra_point``)."""

    spec_class = LeadingSpec

    def _spacing(self, num_steps, num_train):
        count = _count(num_steps, self.extra_point)
        ratio = num_train // count
        return (torch.arange(count - 1, -1, -1, dtype=torch.float64) * ratio)[:num_steps] + self.steps_offset


class TrailingDiscretization(_TimestepSpacing):
    """``round(T + k delta) - 1`` with ``delta = (T - T / N) - T``, for ``k = 0, ..., N - 1``.

    ``delta`` is the spacing ``-T / N`` as ``numpy.arange`` rounds it (its first step, taken from
    the start), so the timesteps equal diffusers' own, ties broken the same way. numpy makes
    ``N + 1`` timesteps for some ``N`` (61 of a 1000-entry table: a last one of -1); this grid
    keeps ``N``.
    """

    spec_class = TrailingSpec

    def _spacing(self, num_steps, num_train):
        delta = (num_train - num_train / num_steps) - num_train
        return torch.round(num_train + torch.arange(num_steps, dtype=torch.float64) * delta) - 1
