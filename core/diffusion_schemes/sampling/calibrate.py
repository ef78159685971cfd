"""``calibrate_sigmas``: a grid of noise levels fitted to one model, one solver and one step count.

At 10 to 20 evaluations most of a solver's error comes from where it steps, not from how. The
calibration keeps the two ends of the schedule's own grid (``noise_schedule.sigmas(N)``: the first
noise level, where the latents are drawn, and the last positive one, whose denoised estimate is the
sample) and moves the ``N - 2`` levels in between to minimise the sampling error on a batch of
calibration latents: the mean distance of the solver's samples to a fine-step reference solution
of the same probability-flow ODE from the same latents (Heun over ``reference_steps`` steps even
in ``log sigma`` between the same two ends).

The positions are parametrised so that every grid the optimiser visits is valid: the ``N - 1`` gaps
in ``log sigma`` are ``(log sigma_0 - log sigma_{N-1}) softmax(z)``, positive and summing to the
whole range. The error is differentiated through the solver (the model's own derivatives with
respect to its input and noise level, by autograd) and minimised by ``torch.optim.LBFGS`` with a
strong-Wolfe line search; the optimiser starts from the better of the schedule's grid and the grid
even in ``log sigma`` (the one a solver in ``log sigma`` favours). The model's parameters are not
touched (no gradient is accumulated in them).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from diffusion_schemes.discretizations import ExplicitSpec, check_sigmas
from diffusion_schemes.errors import InvalidArgumentError
from diffusion_schemes.sampling.sampler import resolve_solver, sample
from diffusion_schemes.solvers import BaseSolver, default_noise_sampler
from diffusion_schemes.tensors import compute_dtype

__all__ = ["CalibratedGrid", "calibrate_sigmas"]

#: Steps of the Heun reference when ``reference_steps`` is None (see docs/sampling.md for its error).
DEFAULT_REFERENCE_STEPS = 512
#: Iterations of L-BFGS (each one or more solver runs with their gradient).
MAX_ITERATIONS = 40


@dataclass(frozen=True)
class CalibratedGrid:
    """What :func:`calibrate_sigmas` returns: the grid, and what finding it cost and gained.

    ``sigmas`` is the calibrated grid (float64, N levels then 0): pass it as
    ``ds.sample(..., sigmas=result.sigmas)``, or store ``result.discretization`` (an ``explicit``
    discretization config) in a config. ``error_before`` is the calibration error on the
    schedule's own grid, ``error_after`` on the calibrated one (mean distance of the samples to the
    reference, on the calibration latents); ``model_evaluations`` counts the network evaluations
    per sample spent in all (the reference, the optimisation's forward passes and the two
    measurements; a guided evaluation counts two), ``backward_passes`` the solver runs that were
    differentiated (each back-propagates through the model once per evaluation of that run).

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> levels = torch.tensor([10.0, 1.0, 0.1, 0.0], dtype=torch.float64)
    >>> grid = CalibratedGrid(levels, ds.create("solver", "dpmpp_2m"), 0.5, 0.1, 100, 10, 1.5, 8, levels)
    >>> grid.num_steps, grid.discretization
    (3, {'name': 'explicit', 'sigmas': [10.0, 1.0, 0.1, 0.0]})
    >>> print(grid)
    DPMpp2M(lower_order_final=False), 3 steps: error 0.5 -> 0.1 (5x lower) for 100 model evaluations,
    10 backward passes, 1.5 s
    """

    sigmas: torch.Tensor
    solver: Any
    error_before: float
    error_after: float
    model_evaluations: int
    backward_passes: int
    seconds: float
    reference_steps: int
    initial_sigmas: torch.Tensor = field(repr=False)

    @property
    def num_steps(self) -> int:
        """The number of solver steps of the grid (its length - 1)."""
        return self.sigmas.shape[0] - 1

    @property
    def discretization(self) -> dict[str, Any]:
        """The grid as an ``explicit`` discretization config (JSON-ready, exact floats)."""
        return ExplicitSpec(sigmas=self.sigmas.tolist()).model_dump(mode="json")

    def __str__(self) -> str:
        gain = self.error_before / self.error_after if self.error_after > 0 else math.inf
        return (
            f"{self.solver!r}, {self.num_steps} steps: error {self.error_before:.4g} -> {self.error_after:.4g} "
            f"({gain:.3g}x lower) for {self.model_evaluations} model evaluations, "
            f"{self.backward_passes} backward passes, {self.seconds:.3g} s"
        )


class _BindOnly(BaseSolver):
    """Keeps the denoiser that ``ds.sample`` hands its solver (condition, guidance and device checked)."""

    denoiser: Any = None

    def solve(self, denoiser, x, sigmas, noise_sampler, callback=None):
        self.denoiser = denoiser
        return x, 0


def _calibratable(solver: BaseSolver) -> None:
    if solver.adaptive:
        raise InvalidArgumentError(
            f"{solver!r} picks its own steps, so no grid can be calibrated for it; "
            "use a solver that follows its grid, e.g. 'dpmpp_2m', 'unipc' or 'heun'"
        )
    if solver.stochastic and (solver.adds_noise(False) or solver.adds_noise(True)):
        raise InvalidArgumentError(
            f"{solver!r} adds noise; calibrate_sigmas handles deterministic solvers only (their error against "
            "the ODE solution is a function of the grid): use an ODE solver such as 'dpmpp_2m' or 'unipc', "
            "or switch the noise off (eta=0 for dpmpp_2m_sde and dpmpp_3m_sde, S_churn=0 for edm_stochastic_*)"
        )


def _error(samples: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the Euclidean distance of each sample to its reference (float64)."""
    diff = (samples - reference).to(torch.float64).flatten(1)
    return torch.linalg.vector_norm(diff, dim=1).mean()  # its gradient is 0, not NaN, where a sample is exact


def _grid_from(z: torch.Tensor, log_hi: float, log_lo: float, ends: torch.Tensor) -> torch.Tensor:
    """The grid whose gaps in ``log sigma`` are ``(log_hi - log_lo) softmax(z)``, ends kept exactly."""
    inner = log_hi - (log_hi - log_lo) * torch.cumsum(torch.softmax(z, 0), 0)[:-1]
    return torch.cat([ends[:1], inner.exp(), ends[1:], ends.new_zeros(1)])


def _logits_of(grid: torch.Tensor) -> torch.Tensor:
    """``z`` with ``_grid_from(z) == grid`` (up to rounding): the log of the gaps in ``log sigma``."""
    gaps = -torch.diff(grid[:-1].log())
    return gaps.log() - gaps.log().mean()


def calibrate_sigmas(
    denoiser: Any,
    latents: torch.Tensor,
    noise_schedule: Any,
    num_steps: int,
    solver: Any = "dpmpp_2m",
    *,
    condition: Any = None,
    guidance: Any = None,
    reference_steps: int | None = None,
    generator: torch.Generator | None = None,
) -> CalibratedGrid:
    """The grid of ``num_steps`` steps on which ``solver`` samples ``denoiser`` with the least error.

    Args:
        denoiser, latents, noise_schedule, condition, guidance: as for :func:`diffusion_schemes.sample`;
            ``latents`` are the calibration batch (``noise_schedule.init_latents(shape)``, drawn at
            the grid's first noise level). Use latents that you do not evaluate on.
        num_steps: the number of solver steps N of the grid (an int >= 1). With N <= 2 there is no
            level between the kept ends, and the schedule's grid is returned as it is.
        solver: a deterministic solver that follows its grid (name, config, spec or object);
            one that adds noise or picks its own steps raises an error.
        reference_steps: steps of the Heun reference solution (even in ``log sigma`` between
            the grid's two ends), an int >= 2; default 512 (``2 * 512 - 1`` evaluations, made once).
        generator: handed to the solver like ``ds.sample`` does; the deterministic solvers draw
            nothing from it.

    Returns a :class:`CalibratedGrid`: ``.sigmas`` (N levels then 0, float64, on the CPU), the
    calibration error before (the schedule's grid) and after, and the cost. Raises the errors
    ``ds.sample`` raises for bad arguments, and an ``InvalidArgumentError`` (a
    ``DiffusionSchemesError``) for a solver that cannot be calibrated or a bad ``reference_steps``.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> schedule = ds.create("noise_schedule", "edm")
    >>> two_points = lambda x, t: torch.tanh(x / (1 + t[:, None] ** 2) ** 0.5 * 4)   # data at -1 and 1
    >>> latents = schedule.init_latents((64, 1), generator=torch.Generator().manual_seed(0))
    >>> result = ds.calibrate_sigmas(two_points, latents, schedule, 5, reference_steps=64)
    >>> result.sigmas.shape, result.error_after < result.error_before
    (torch.Size([6]), True)
    >>> fresh = schedule.init_latents((64, 1), generator=torch.Generator().manual_seed(1))
    >>> ds.sample(two_points, fresh, schedule, sigmas=result.sigmas, solver="dpmpp_2m").nfe
    5
    >>> ds.calibrate_sigmas(two_points, latents, schedule, 5, solver="euler_ancestral")
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.InvalidArgumentError: EulerAncestral(eta=1.0, s_noise=1.0) adds noise; ...
    """
    start = time.perf_counter()
    if reference_steps is None:
        reference_steps = DEFAULT_REFERENCE_STEPS
    if isinstance(reference_steps, bool) or not isinstance(reference_steps, int) or reference_steps < 2:
        raise InvalidArgumentError(
            f"reference_steps must be an int >= 2 (the steps of the fine reference solution), got {reference_steps!r}"
        )
    solver_obj = resolve_solver(solver)
    _calibratable(solver_obj)
    binder = _BindOnly()
    sample(denoiser, latents, noise_schedule, num_steps, binder, condition=condition, guidance=guidance,
           check_finite=False)
    bound = binder.denoiser  # bound and checked as for sampling; the binder integrated nothing
    initial = check_sigmas(noise_schedule.sigmas(num_steps).to(torch.float64).cpu())
    spent = [0]

    def run(grid: torch.Tensor, how: BaseSolver = solver_obj) -> torch.Tensor:
        # solve(): the loop without the host-side check of the grid, which every grid here passes by construction
        grid = grid.to(device=latents.device, dtype=compute_dtype(latents.dtype))
        out, nfe = how.solve(bound, latents, grid, default_noise_sampler(latents, generator))
        spent[0] += nfe
        return out

    hi, lo = float(initial[0]), float(initial[-2])

    def even(n: int) -> torch.Tensor:
        """``n`` levels even in log sigma from the first to the last positive level (kept exactly), then 0."""
        levels = torch.exp(torch.linspace(math.log(hi), math.log(lo), n, dtype=torch.float64))
        return torch.cat([initial[:1], levels[1:-1], initial[-2:]])

    with torch.no_grad():
        reference = run(even(reference_steps), resolve_solver("heun"))
        error_before = float(_error(run(initial), reference))
    best, error_after, backward = initial, error_before, 0
    if num_steps > 2:
        uniform = even(num_steps)
        with torch.no_grad():
            error_uniform = float(_error(run(uniform), reference))
        best, error_after = (uniform, error_uniform) if error_uniform < error_before else (initial, error_before)
        ends = initial[[0, -2]]
        z = _logits_of(best).clone().requires_grad_(True)
        optimiser = torch.optim.LBFGS([z], lr=1.0, max_iter=MAX_ITERATIONS, line_search_fn="strong_wolfe",
                                      tolerance_grad=1e-9, tolerance_change=1e-12, history_size=20)
        visited: list[tuple[float, torch.Tensor]] = []

        def closure() -> torch.Tensor:
            nonlocal backward
            optimiser.zero_grad()
            with torch.enable_grad():
                grid = _grid_from(z, math.log(hi), math.log(lo), ends)
                loss = _error(run(grid), reference)
                (z.grad,) = torch.autograd.grad(loss, [z])
            backward += 1
            visited.append((float(loss.detach()), grid.detach()))
            return loss.detach()

        optimiser.step(closure)
        value, grid = min(visited, key=lambda item: item[0])
        if value < error_after:
            best, error_after = grid, value
    return CalibratedGrid(
        sigmas=best.detach().clone(),
        solver=solver_obj,
        error_before=error_before,
        error_after=error_after,
        model_evaluations=guided if isinstance(guided := getattr(bound, "evaluations", None), int) else spent[0],
        backward_passes=backward,
        seconds=time.perf_counter() - start,
        reference_steps=reference_steps,
        initial_sigmas=initial,
    )
