"""Discretizations: the noise levels a sampler visits, a scheme kind of its own.

A third party writes one as a :class:`BaseDiscretization` (``from diffusion_schemes.discretizations.grids
import BaseDiscretization``) with a spec derived from :class:`diffusion_schemes.DiscretizationSpec`.

A discretization maps ``u`` in ``[0, 1]`` to a noise level, ``sigma_at(u, schedule)``, from
the highest (``u = 0``) down to the lowest (``u = 1``); ``sigmas(N, schedule)`` samples that map
at ``u_i = i / (N - 1)`` and appends the final 0, giving the N + 1 decreasing values a solver
steps through. Where the built-in grids need a range of noise levels and none is given, they
take the schedule's sampling domain: ``noise_level(t)`` at both ends of ``schedule.domain()``.

>>> import torch
>>> import diffusion_schemes as ds
>>> edm = ds.create("noise_schedule", "edm")
>>> ds.create("discretization", "karras").sigmas(4, edm)              # the rho = 7 ramp from 80 to 0.002
tensor([8.0000e+01, 9.7232e+00, 4.6998e-01, 2.0000e-03, 0.0000e+00],
       dtype=torch.float64)
>>> ds.create("discretization", "log_snr_uniform").sigmas(3, edm)   # geometric: uniform in lambda
tensor([8.0000e+01, 4.0000e-01, 2.0000e-03, 0.0000e+00], dtype=torch.float64)
>>> bool(torch.equal(ds.create("discretization", "schedule").sigmas(18, edm), edm.sigmas(18)))
True
"""

import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from diffusion_schemes.errors import ArgumentTypeError, InvalidArgumentError, SamplingError
from diffusion_schemes.specs.base import DiscretizationSpec, SpecBacked

__all__ = [
    "BaseDiscretization",
    "check_num_steps",
    "check_sigmas",
    "KarrasDiscretization",
    "KarrasSpec",
    "LinearTimeDiscretization",
    "LinearTimeSpec",
    "LogSNRUniformDiscretization",
    "LogSNRUniformSpec",
    "PolyexponentialDiscretization",
    "PolyexponentialSpec",
    "ScheduleDiscretization",
    "ScheduleSpec",
    "sampling_sigma_range",
]


def check_num_steps(num_steps: Any) -> int:
    """A step count N: an int >= 1. The one check of ``num_steps``, wherever a grid is made.

    >>> check_num_steps(18)
    18
    >>> check_num_steps(0)
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.InvalidArgumentError: num_steps must be an int >= 1 (the number of solver steps), got 0
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise ArgumentTypeError(f"num_steps must be an int >= 1 (the number of solver steps), got {num_steps!r}")
    if num_steps < 1:
        raise InvalidArgumentError(f"num_steps must be an int >= 1 (the number of solver steps), got {num_steps}")
    return num_steps


def check_sigmas(sigmas: Any) -> torch.Tensor:
    """A grid as a float tensor: 1-D, N >= 1 strictly decreasing positive noise levels, then 0.

    The one check of a grid: every solver runs it once per call (``BaseSolver.__call__``), and so
    every ``ds.sample``. A grid on an accelerator is checked for its shape only: reading its values
    would synchronise the device.

    >>> check_sigmas([2.0, 1.0, 0.0])
    tensor([2., 1., 0.], dtype=torch.float64)
    >>> check_sigmas([2.0, 1.0])
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.SamplingError: sigmas must end at noise level 0 (the clean sample), got [2.0, 1.0]; append a 0
    """
    if isinstance(sigmas, torch.Tensor):
        grid = sigmas if sigmas.is_floating_point() else sigmas.to(torch.float64)
    else:
        try:
            grid = torch.as_tensor(sigmas, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise SamplingError(f"sigmas must be a 1-D sequence of noise levels ending in 0, got {sigmas!r} ({exc})") from None
    if grid.ndim != 1 or grid.shape[0] < 2:
        raise SamplingError(
            f"sigmas must be 1-D with N >= 1 decreasing noise levels then 0, got shape {tuple(grid.shape)}"
        )
    if grid.device.type == "cpu":
        values = grid.detach()
        # one read of the (short) grid and the test in Python: a few microseconds where tensor operations on a
        # handful of numbers would cost a few each (every ds.sample runs it); the details only on failure
        host = values.tolist()
        if host[0] < math.inf and host[-1] == 0 and host[-2] > 0 and all(a > b for a, b in zip(host, host[1:-1])):
            return grid
        shown = values.tolist() if values.numel() <= 12 else [*values[:5].tolist(), "...", *values[-5:].tolist()]
        if not bool(torch.isfinite(values).all()):
            raise SamplingError(f"sigmas must be finite, got {shown}")
        if float(values[-1]) != 0.0:
            raise SamplingError(f"sigmas must end at noise level 0 (the clean sample), got {shown}; append a 0")
        if not (bool((values[:-1] > 0).all()) and bool((values[1:] < values[:-1]).all())):
            raise SamplingError(
                f"sigmas must decrease strictly from positive noise levels to a final 0, got {shown}; "
                "sort them in decreasing order and drop repeated values"
            )
    return grid


# ---------------------------------------------------------------------- specs (they build the classes below)


def _range_field(which: str) -> Any:
    return Field(
        None, gt=0, description=f"{which} noise level of the grid; None: the schedule's sampling domain gives it."
    )


class _RangeSpec(DiscretizationSpec):
    ordered = (("sigma_min", "sigma_max"),)
    sigma_min: float | None = _range_field("Lowest")
    sigma_max: float | None = _range_field("Highest")


class ScheduleSpec(DiscretizationSpec):
    """The noise schedule's own sampling steps, schedule.sigmas(N) (the default).

    >>> import diffusion_schemes as ds
    >>> ds.create("discretization", "schedule").sigmas(2, ds.create("noise_schedule", "ve"))
    tensor([1.0000e+02, 2.0000e-02, 0.0000e+00], dtype=torch.float64)
    """

    builds = "ScheduleDiscretization"
    name: Literal["schedule"] = "schedule"


class KarrasSpec(_RangeSpec):
    """The rho ramp of Karras et al. 2022 (eq. 5) between sigma_max and sigma_min.

    >>> import diffusion_schemes as ds
    >>> ds.create("discretization", {"name": "karras", "sigma_min": 0.1, "sigma_max": 10, "rho": 1}).sigmas(3, None)
    tensor([10.0000,  5.0500,  0.1000,  0.0000], dtype=torch.float64)
    """

    builds = "KarrasDiscretization"
    name: Literal["karras"] = "karras"
    rho: float = Field(7.0, gt=0, description="Exponent of the ramp; larger puts more steps at low noise.")


class LogSNRUniformSpec(_RangeSpec):
    """Geometric noise levels, uniform in the log-SNR (k-diffusion's exponential grid).

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> grid = ds.create("discretization", {"name": "log_snr_uniform", "sigma_min": 1, "sigma_max": 100})
    >>> levels = grid.sigmas(3, None)
    >>> levels, (-2 * levels[:-1].log()).diff()                 # lambda = -2 log sigma: even steps
    (tensor([100.,  10.,   1.,   0.], dtype=torch.float64), tensor([4.6052, 4.6052], dtype=torch.float64))
    """

    builds = "LogSNRUniformDiscretization"
    name: Literal["log_snr_uniform"] = "log_snr_uniform"


class PolyexponentialSpec(_RangeSpec):
    """log sigma falls like (1 - u)^rho between its ends (k-diffusion's polyexponential grid).

    With ``rho = 1`` it is the ``log_snr_uniform`` grid; ``rho > 1`` spends more steps at low noise:

    >>> import diffusion_schemes as ds
    >>> vp = ds.create("noise_schedule", "vp")
    >>> bent = {"name": "polyexponential", "sigma_min": 1, "sigma_max": 100, "rho": 2}
    >>> ds.create("discretization", bent).sigmas(3, vp)
    tensor([100.0000,   3.1623,   1.0000,   0.0000], dtype=torch.float64)
    >>> import torch
    >>> torch.allclose(ds.create("discretization", "polyexponential").sigmas(9, vp),
    ...                ds.create("discretization", "log_snr_uniform").sigmas(9, vp), rtol=1e-12, atol=0)
    True
    """

    builds = "PolyexponentialDiscretization"
    name: Literal["polyexponential"] = "polyexponential"
    rho: float = Field(1.0, gt=0, description="Exponent of the ramp in log sigma; 1 is uniform in the log-SNR.")


class LinearTimeSpec(DiscretizationSpec):
    """Steps uniform in the schedule's own diffusion time over its sampling domain.

    >>> import diffusion_schemes as ds
    >>> ds.create("discretization", "linear_time").sigmas(3, ds.create("noise_schedule", "ve"))   # t = sigma
    tensor([100.0000,  50.0100,   0.0200,   0.0000], dtype=torch.float64)
    """

    builds = "LinearTimeDiscretization"
    name: Literal["linear_time"] = "linear_time"


def sampling_sigma_range(schedule: Any) -> tuple[float, float]:
    """``(sigma_min, sigma_max)``: the schedule's noise levels at the ends of its sampling domain.

    >>> import diffusion_schemes as ds
    >>> sampling_sigma_range(ds.create("noise_schedule", "ve"))
    (0.02, 100.0)
    """
    lo, hi = schedule.domain()
    levels = schedule.noise_level(torch.tensor([float(lo), float(hi)], dtype=torch.float64))
    a, b = float(levels[0]), float(levels[1])
    return min(a, b), max(a, b)


class BaseDiscretization(SpecBacked):
    """Base of the discretizations: implement :meth:`sigma_at`; :meth:`sigmas` samples it.

    ``sigma_at(u, schedule)`` takes ``u`` in ``[0, 1]`` (a float64 tensor) and returns the
    noise levels there, non-increasing in ``u``, ``u = 0`` the highest. A discretization whose
    grid is not a sampling of one map (a table, say) overrides :meth:`sigmas` too, and keeps
    ``sigma_at`` as the continuous map the grid follows.

    >>> import torch
    >>> from diffusion_schemes.discretizations import BaseDiscretization
    >>> class Halving(BaseDiscretization):
    ...     '''Halve the noise level from 8 down to 1.'''
    ...     def sigma_at(self, u, schedule):
    ...         return 8.0 * 0.125 ** torch.as_tensor(u, dtype=torch.float64)
    >>> Halving().sigmas(4, schedule=None)
    tensor([8., 4., 2., 1., 0.], dtype=torch.float64)
    """

    #: How closely (relative) ``sigmas(N)`` follows ``sigma_at(i / (N - 1))``; the conformance kit holds
    #: the grid to it. Exact maps keep the default; a map joined from a table states its error.
    map_rtol: ClassVar[float] = 1e-6

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if self._built_from_spec(args, kwargs):  # the arguments are the spec's fields
            self._bind_spec(args, kwargs)
        elif args or kwargs:
            raise ArgumentTypeError(f"{type(self).__qualname__} takes no arguments (it has no spec_class)")

    def sigma_at(self, u: Any, schedule: Any) -> torch.Tensor:
        """The noise level at ``u`` in ``[0, 1]`` (``u = 0``: the highest), as a float64 tensor."""
        raise NotImplementedError(f"{type(self).__name__} does not implement sigma_at(u, schedule)")

    def sigmas(self, num_steps: int, schedule: Any) -> torch.Tensor:
        """``num_steps`` decreasing noise levels, ``sigma_at(i / (num_steps - 1))``, then 0 (float64)."""
        n = check_num_steps(num_steps)
        u = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
        levels = torch.as_tensor(self.sigma_at(u, schedule), dtype=torch.float64)
        return torch.cat([levels, levels.new_zeros(1)])


class _RangeDiscretization(BaseDiscretization):
    """A grid between ``sigma_min`` and ``sigma_max``, each taken from the schedule when None."""

    sigma_min: float | None
    sigma_max: float | None

    def sigma_range(self, schedule: Any) -> tuple[float, float]:
        """``(sigma_min, sigma_max)``: the fields, or the schedule's sampling range where they are None."""
        if self.sigma_min is None or self.sigma_max is None:
            if schedule is None:
                raise InvalidArgumentError(
                    f"{type(self).__name__} takes sigma_min and sigma_max from the noise schedule; "
                    "pass the schedule, or set both fields"
                )
            lo, hi = sampling_sigma_range(schedule)
        lo = self.sigma_min if self.sigma_min is not None else lo
        hi = self.sigma_max if self.sigma_max is not None else hi
        if not 0 < lo < hi:
            raise InvalidArgumentError(
                f"{type(self).__name__} needs 0 < sigma_min < sigma_max, got sigma_min={lo:g}, sigma_max={hi:g} "
                "(a field left unset comes from the schedule's sampling domain)"
            )
        return lo, hi


def _u(u: Any) -> torch.Tensor:
    return torch.as_tensor(u, dtype=torch.float64)


class KarrasDiscretization(_RangeDiscretization):
    """``(sigma_max^(1/rho) + u (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``: Karras et al. 2022, eq. 5."""

    spec_class = KarrasSpec

    rho: float

    def sigma_at(self, u: Any, schedule: Any) -> torch.Tensor:
        lo, hi = self.sigma_range(schedule)
        a, b = hi ** (1 / self.rho), lo ** (1 / self.rho)
        return (a + _u(u) * (b - a)) ** self.rho


class LogSNRUniformDiscretization(_RangeDiscretization):
    """``sigma_max (sigma_min / sigma_max)^u``: uniform in ``log sigma``, so uniform in the log-SNR."""

    spec_class = LogSNRUniformSpec

    def sigma_at(self, u: Any, schedule: Any) -> torch.Tensor:
        lo, hi = self.sigma_range(schedule)
        return torch.exp(math.log(hi) + _u(u) * (math.log(lo) - math.log(hi)))


class PolyexponentialDiscretization(_RangeDiscretization):
    """``exp(log sigma_min + (1 - u)^rho (log sigma_max - log sigma_min))``; ``rho = 1`` is log-SNR uniform."""

    spec_class = PolyexponentialSpec

    rho: float

    def sigma_at(self, u: Any, schedule: Any) -> torch.Tensor:
        lo, hi = self.sigma_range(schedule)
        return torch.exp(math.log(lo) + (1 - _u(u)) ** self.rho * (math.log(hi) - math.log(lo)))


class LinearTimeDiscretization(BaseDiscretization):
    """``noise_level(t_max + u (t_min - t_max))``: uniform in the schedule's own diffusion time."""

    spec_class = LinearTimeSpec

    def sigma_at(self, u: Any, schedule: Any) -> torch.Tensor:
        t_min, t_max = (float(v) for v in schedule.domain())
        return schedule.noise_level(t_max + _u(u) * (t_min - t_max)).to(torch.float64)


class ScheduleDiscretization(BaseDiscretization):
    """The schedule's own grid, ``schedule.sigmas(N)``; its map joins ``RESOLUTION`` grid points geometrically.

    A schedule states its grid for each N, not a map of ``u``, so ``sigma_at`` interpolates
    ``log sigma`` linearly between the points of ``schedule.sigmas(RESOLUTION)``: exact where the
    schedule is geometric (VE), within 1e-4 relative of smooth grids (measured at 2 to 100 steps:
    EDM 6e-7, VP 4e-5, cosine 6e-5) and within a table step for iDDPM, whose grid rounds to
    entries of its table (0.3%).
    """

    spec_class = ScheduleSpec

    #: Grid points of the schedule that the continuous map joins.
    RESOLUTION = 4097
    map_rtol = 1e-2

    def sigmas(self, num_steps: int, schedule: Any) -> torch.Tensor:
        return schedule.sigmas(num_steps).to(torch.float64)  # the schedule checks num_steps

    def sigma_at(self, u: Any, schedule: Any) -> torch.Tensor:
        log_s = schedule.sigmas(self.RESOLUTION)[:-1].to(torch.float64).cpu().log()
        pos = _u(u).clamp(0, 1) * (self.RESOLUTION - 1)
        left = pos.floor().clamp(max=self.RESOLUTION - 2).long()
        w = pos - left
        return torch.exp((1 - w) * log_s[left] + w * log_s[left + 1])
