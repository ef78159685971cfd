"""BayesFlow's time ``t`` in ``[0, 1]`` as a schedule's native time, one map per mode.

BayesFlow reads ``t = 0`` as clean data and ``t = 1`` as pure noise, in both modes:

- training (:class:`TrainingMap`): ``t`` is a uniform draw pushed through the schedule's
  inverse CDF of training times, ``time_from_uniform(t)``; ``t ~ U(0, 1)`` then gives the
  schedule's own training distribution. Its inverse is the CDF, found by bisection.
- sampling (:class:`GridMap`): ``t`` runs along the schedule's sampling grid, or along a
  discretization's continuous map ``sigma_at(u, schedule)`` when one is given. A schedule
  states its grid as ``timesteps(N)``, the grid formula sampled at ``u_i = i / (N - 1)`` from
  the noisiest end (``u = 0``); BayesFlow's ``t`` is ``1 - u``. The map joins the points of
  ``timesteps(2**16 + 1)`` linearly, so it is exact for grids linear in native time (VP,
  cosine, flow matching) and within about 1e-8 relative of a smooth one (EDM's rho ramp: the
  interpolation error is ``h^2 / 8 * f'' / f`` with ``h = 2**-16``). A grid that repeats
  values (a table rounded to its nearest entry, as iDDPM's) is joined through its entries,
  taken from ``timesteps(N)`` with N its number of distinct entries (one step per entry: for
  iDDPM, ``u_j`` at ``u = (j - j0) / (M - 1 - j0)``), i.e. by its continuous index. ``d time / d t`` comes from second-order
  differences at the points, joined linearly.

Both maps are increasing in ``t``; native time increases with noise, so ``lambda`` decreases.

>>> import torch
>>> import diffusion_schemes as ds
>>> vp = ds.create("noise_schedule", "vp")
>>> grid = GridMap(vp)                      # t = 1: native time 1; t = 0: epsilon_s = 1e-3
>>> grid.time(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
tensor([0.0010, 0.5005, 1.0000], dtype=torch.float64)
>>> TrainingMap(vp).time(torch.tensor([0.0, 1.0], dtype=torch.float64))   # U(epsilon_t, 1)
tensor([1.0000e-05, 1.0000e+00], dtype=torch.float64)
"""

from __future__ import annotations

from typing import Any

import torch

from diffusion_schemes.errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["GridMap", "TrainingMap"]

#: Points of the sampling grid that :class:`GridMap` joins.
GRID_POINTS = 2**16 + 1


class TrainingMap:
    """``t`` -> ``schedule.time_from_uniform(t)``: the inverse CDF of the training times."""

    #: Bisection steps of the inverse (the CDF): 2**-60 in ``t``, below float64's resolution near 1.
    BISECTION_STEPS = 60

    def __init__(self, schedule: Any) -> None:
        has_icdf = getattr(schedule, "has_inverse_cdf", None)
        if has_icdf is not None and not has_icdf():
            raise ArgumentTypeError(
                f"the noise schedule {schedule.name!r} states no inverse CDF of its training times, which "
                "BayesFlow's training=True needs (t ~ U(0, 1) pushed through it); implement "
                "time_from_uniform(u) on the schedule"
            )
        self.schedule = schedule

    def time(self, t: torch.Tensor) -> torch.Tensor:
        """Native training time at ``t`` (float64)."""
        return torch.as_tensor(self.schedule.time_from_uniform(t.to(torch.float64)), dtype=torch.float64)

    def dtime_dt(self, t: torch.Tensor) -> torch.Tensor:
        """``d time / d t`` (``1 / density``) by autograd of :meth:`time`."""
        with torch.enable_grad():
            tt = t.detach().to(torch.float64).requires_grad_(True)
            time = self.time(tt)
            if not time.requires_grad:  # the inverse CDF left torch: a central difference instead
                h = 1e-6
                lo, hi = (tt.detach() - h).clamp(0, 1), (tt.detach() + h).clamp(0, 1)
                return (self.time(hi) - self.time(lo)) / (hi - lo)
            (grad,) = torch.autograd.grad(time.sum(), tt)
        return grad

    def t(self, time: torch.Tensor) -> torch.Tensor:
        """The ``t`` whose training time is ``time`` (the CDF), by bisection; clipped to ``[0, 1]``.

        Where the training distribution is discrete (a table of times, as iDDPM's), the inverse CDF
        is flat at each table entry; the middle of that flat stretch is returned, so that
        ``time(t(time)) == time`` there.
        """
        time = time.to(torch.float64)
        band = self.SAME * time.abs()
        return (self._bisect(time - band) + self._bisect(time + band)) / 2

    #: Relative difference below which two times count as one table entry (a log-SNR round trip's rounding).
    SAME = 1e-12

    def _bisect(self, time: torch.Tensor) -> torch.Tensor:
        """The boundary of ``{t: time(t) < time}``."""
        lo, hi = torch.zeros_like(time), torch.ones_like(time)
        for _ in range(self.BISECTION_STEPS):
            mid = (lo + hi) / 2
            below = self.time(mid) < time
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return (lo + hi) / 2


class GridMap:
    """``t`` -> native time along the sampling grid, ``timesteps`` joined linearly (see the module)."""

    def __init__(self, schedule: Any, discretization: Any = None, points: int = GRID_POINTS) -> None:
        if discretization is None:
            self.nodes_t, self.nodes_time = self._nodes(schedule, points)
        else:
            self.nodes_t, self.nodes_time = self._discretization_nodes(schedule, discretization, points)
        self.nodes_slope = self._central_differences(self.nodes_t, self.nodes_time)
        self._on: dict[Any, tuple[torch.Tensor, ...]] = {}

    @staticmethod
    def _grid(schedule: Any, points: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``points`` grid steps as (increasing t, non-decreasing native time)."""
        steps = schedule.timesteps(points)[:-1].detach().to("cpu", torch.float64)
        t = 1 - torch.arange(points, dtype=torch.float64) / max(points - 1, 1)
        return t.flip(0), steps.flip(0)

    @staticmethod
    def _discretization_nodes(schedule: Any, discretization: Any, points: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Nodes from a discretization's continuous map ``sigma_at(u, schedule)`` (noise levels, ``u = 0`` the highest)."""
        u = torch.arange(points, dtype=torch.float64) / (points - 1)
        sigma = torch.as_tensor(discretization.sigma_at(u, schedule), dtype=torch.float64).cpu()
        if not bool((sigma > 0).all()) or not bool((sigma[1:] < sigma[:-1]).all()):
            raise InvalidArgumentError(
                f"{discretization!r}.sigma_at(u, schedule) must give positive noise levels decreasing in u; "
                "BayesFlow's t needs a monotone map onto native time"
            )
        time = schedule.get_t_from_log_snr(-2 * sigma.log(), False).to(torch.float64)
        return (1 - u).flip(0), time.flip(0)

    @classmethod
    def _nodes(cls, schedule: Any, points: int) -> tuple[torch.Tensor, torch.Tensor]:
        t, steps = cls._grid(schedule, points)
        if not bool((steps[1:] >= steps[:-1]).all()) or not bool(steps[-1] > steps[0]):
            raise InvalidArgumentError(
                f"the sampling grid of {schedule.name!r} does not decrease from its first to its last step; "
                "BayesFlow's t needs a monotone map onto native time"
            )
        new_run = torch.cat([torch.tensor([True]), steps[1:] > steps[:-1]])
        if bool(new_run.all()):
            return t, steps
        # A table: with as many steps as it has entries, each entry sits at its own index i / (N - 1).
        entries = int(new_run.sum())
        t_table, table = cls._grid(schedule, entries)
        if bool((table[1:] > table[:-1]).all()):
            return t_table, table
        run = torch.cumsum(new_run.long(), 0) - 1  # otherwise: through the middle of each run
        counts = torch.zeros(entries, dtype=torch.float64).index_add_(0, run, torch.ones_like(t))
        nodes_t = torch.zeros(entries, dtype=torch.float64).index_add_(0, run, t) / counts
        nodes_t[0], nodes_t[-1] = 0.0, 1.0  # the grid's first and last steps stay at the ends
        return nodes_t, steps[new_run]

    @staticmethod
    def _central_differences(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``dy/dx`` at each point: the derivative of the parabola through it and its neighbours
        (second order on uneven spacing too; the end points use their two inner neighbours)."""
        if x.numel() < 3:
            return ((y[-1] - y[0]) / (x[-1] - x[0])).expand_as(y).clone()
        i = torch.arange(x.numel())
        j = i.clamp(1, x.numel() - 2)  # the middle of the three points used at i
        x0, x1, x2, y0, y1, y2 = x[j - 1], x[j], x[j + 1], y[j - 1], y[j], y[j + 1]
        xi = x[i]
        return (
            y0 * (2 * xi - x1 - x2) / ((x0 - x1) * (x0 - x2))
            + y1 * (2 * xi - x0 - x2) / ((x1 - x0) * (x1 - x2))
            + y2 * (2 * xi - x0 - x1) / ((x2 - x0) * (x2 - x1))
        )

    def _tables(self, device: Any) -> tuple[torch.Tensor, ...]:
        if device not in self._on:
            self._on[device] = tuple(v.to(device) for v in (self.nodes_t, self.nodes_time, self.nodes_slope))
        return self._on[device]

    @staticmethod
    def _interp(x: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        i = (torch.searchsorted(xs, x.contiguous()) - 1).clamp(0, xs.numel() - 2)
        w = (x - xs[i]) / (xs[i + 1] - xs[i])
        return ys[i] + w * (ys[i + 1] - ys[i])

    def time(self, t: torch.Tensor) -> torch.Tensor:
        """Native sampling time at ``t`` (float64)."""
        t = t.to(torch.float64)
        nodes_t, nodes_time, _ = self._tables(t.device)
        return self._interp(t, nodes_t, nodes_time)

    def dtime_dt(self, t: torch.Tensor) -> torch.Tensor:
        """``d time / d t`` of the grid formula (second-order central differences, joined linearly)."""
        t = t.to(torch.float64)
        nodes_t, _, slope = self._tables(t.device)
        return self._interp(t, nodes_t, slope)

    def t(self, time: torch.Tensor) -> torch.Tensor:
        """The ``t`` whose sampling time is ``time`` (inverse of :meth:`time`), clipped to ``[0, 1]``."""
        time = time.to(torch.float64)
        nodes_t, nodes_time, _ = self._tables(time.device)
        return self._interp(time, nodes_time, nodes_t).clamp(0, 1)

