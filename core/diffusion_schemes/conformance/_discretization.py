"""Invariants of a discretization: a grid a solver can follow, and a continuous map that agrees with it.

Each runs on the paired schedule (the ``schedule=`` option of ``check``; by default the kit's
reference schedule, noise level = time on ``[1e-3, 1e3]``) for several step counts: the grid has
N + 1 values, decreases strictly from positive noise levels to a final 0, stays inside the
schedule's sampling range, and equals ``sigma_at(i / (N - 1))`` within the ``map_rtol`` the
discretization declares (1e-6 unless its map is joined from a table); the map is finite, positive
and non-increasing on ``[0, 1]``.
"""

from __future__ import annotations

from typing import Any

import torch

from diffusion_schemes.discretizations import sampling_sigma_range
from ._context import compare, fmt
from ._report import invariant

__all__: list[str] = []

STEP_COUNTS = (1, 2, 5, 18, 64)
#: The loosest agreement of the map with the grid a discretization may declare (``map_rtol``).
MAX_MAP_RTOL = 0.05
#: Relative slack at the ends of the schedule's sampling range.
RANGE_RTOL = 1e-6


def _grids(ctx: Any) -> dict[int, torch.Tensor]:
    if "_grids" not in ctx.options:
        ctx.options["_grids"] = {n: ctx.obj.sigmas(n, ctx.schedule) for n in STEP_COUNTS}
    return ctx.options["_grids"]


@invariant("discretization")
def grid_shape(ctx: Any) -> str | None:
    """``sigmas(N, schedule)`` is a 1-D floating-point tensor of N + 1 finite values."""
    for n, s in _grids(ctx).items():
        if not isinstance(s, torch.Tensor) or not s.is_floating_point() or s.ndim != 1:
            return f"sigmas({n}) returned {type(s).__name__} {getattr(s, 'dtype', '')} of shape {tuple(getattr(s, 'shape', ()))}"
        if s.shape[0] != n + 1:
            return f"sigmas({n}) has {s.shape[0]} values; expected N + 1 = {n + 1} (N noise levels, then 0)"
        if not bool(torch.isfinite(s).all()):
            return f"sigmas({n}) is not finite: {fmt(s)}"
    return None


@invariant("discretization")
def decreasing(ctx: Any) -> str | None:
    """The grid decreases strictly, and every value before the last is positive."""
    for n, s in _grids(ctx).items():
        s = s.to(torch.float64)
        if not bool((s[:-1] > 0).all()):
            return f"sigmas({n}) = {fmt(s)} has a noise level <= 0 before the end"
        if not bool((s[1:] < s[:-1]).all()):
            i = int((s[1:] >= s[:-1]).nonzero()[0])
            return f"sigmas({n}) does not decrease at index {i}: {float(s[i]):.6g} then {float(s[i + 1]):.6g}"
    return None


@invariant("discretization")
def ends_at_zero(ctx: Any) -> str | None:
    """The last value of the grid is exactly 0 (the clean sample)."""
    for n, s in _grids(ctx).items():
        if float(s[-1]) != 0.0:
            return f"sigmas({n}) ends at {float(s[-1]):.6g}; a grid ends at noise level 0"
    return None


@invariant("discretization")
def within_domain(ctx: Any) -> str | None:
    """The noise levels lie in the schedule's sampling range, ``noise_level`` at the ends of ``domain()``."""
    lo, hi = sampling_sigma_range(ctx.schedule)
    for n, s in _grids(ctx).items():
        levels = s[:-1].to(torch.float64)
        out = (levels < lo * (1 - RANGE_RTOL)) | (levels > hi * (1 + RANGE_RTOL))
        if bool(out.any()):
            return f"sigmas({n}) has {fmt(levels[out])} outside the schedule's sampling range [{lo:.6g}, {hi:.6g}]"
    return None


@invariant("discretization")
def map_agrees_with_grid(ctx: Any) -> str | None:
    """``sigmas(N)[i]`` equals ``sigma_at(i / (N - 1))`` within the declared ``map_rtol`` (default 1e-6)."""
    rtol = getattr(ctx.obj, "map_rtol", 1e-6)
    if not isinstance(rtol, float) or not 0 <= rtol <= MAX_MAP_RTOL:
        return f"map_rtol is {rtol!r}; declare how closely the grid follows sigma_at, a float in [0, {MAX_MAP_RTOL}]"
    for n, s in _grids(ctx).items():
        u = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
        got = ctx.obj.sigma_at(u, ctx.schedule)
        msg = compare(s[:-1], got, "u", u, rtol=rtol)
        if msg:
            return f"with {n} steps the grid and sigma_at disagree, {msg} (got: the grid; expected: the map)"
    return None


@invariant("discretization")
def map_monotone(ctx: Any) -> str | None:
    """``sigma_at(u)`` is finite, positive and non-increasing on ``[0, 1]``."""
    u = torch.linspace(0, 1, 1001, dtype=torch.float64)
    s = torch.as_tensor(ctx.obj.sigma_at(u, ctx.schedule)).to(torch.float64)
    if tuple(s.shape) != tuple(u.shape):
        return f"sigma_at of {tuple(u.shape)} values returned shape {tuple(s.shape)}"
    bad = ~torch.isfinite(s) | (s <= 0)
    if bool(bad.any()):
        return f"sigma_at(u) = {fmt(s[bad])} at u = {fmt(u[bad])}; noise levels are finite and positive"
    rising = s[1:] > s[:-1]
    if bool(rising.any()):
        i = int(rising.nonzero()[0])
        return f"sigma_at rises from {float(s[i]):.6g} at u={float(u[i]):.4g} to {float(s[i + 1]):.6g} at u={float(u[i + 1]):.4g}"
    return None
