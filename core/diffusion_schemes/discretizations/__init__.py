"""Discretizations: the single owner of sampling grids.

A discretization turns a step count and a schedule into the decreasing noise levels a solver
walks (``sigmas(num_steps, schedule)``, ending in 0) and gives the continuous map behind it
(``sigma_at(u, schedule)``). ``num_steps`` is checked here and nowhere else; ``check_sigmas`` is
the one check of an explicit grid. The built-in grids (``schedule``, the schedule's own;
``karras``, ``log_snr_uniform``, ``polyexponential``, ``linear_time``, and ``explicit``, a grid of noise levels
stated outright, such as one from ``calibrate_sigmas``) are registered through this
package's ``register_schemes`` hook.
"""

from __future__ import annotations

from diffusion_schemes.discretizations import explicit as _explicit
from diffusion_schemes.discretizations import grids as _grids
from diffusion_schemes.discretizations.explicit import *  # noqa: F403 - an explicit grid of noise levels
from diffusion_schemes.discretizations.grids import *  # noqa: F403 - the grids that follow a map of u
from diffusion_schemes.specs.hooks import hookimpl

__all__ = [*_grids.__all__, *_explicit.__all__]


@hookimpl
def register_schemes():
    return [ScheduleSpec, KarrasSpec, LogSNRUniformSpec, PolyexponentialSpec, LinearTimeSpec, ExplicitSpec]  # noqa: F405
