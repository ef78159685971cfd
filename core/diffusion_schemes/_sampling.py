"""``sample``: run a solver, picked by name, over a schedule's noise levels.

The schedule supplies the discretisation (``sigmas = noise_schedule.sigmas(num_steps)``),
the solver integrates ``dx/dsigma = (x - D(x; sigma)) / sigma`` over it, so ``heun`` on the
EDM schedule is Karras et al. 2022's Algorithm 1 and any schedule works the same way. The
denoiser may come from another scheme than the schedule: both meet at the noise level.

>>> import torch
>>> import diffusion_schemes as ds
>>> schedule = ds.create("noise_schedule", "edm")
>>> x0_predictor = lambda x, t: torch.full_like(x, 0.25)    # a dataset holding one point
>>> g = torch.Generator().manual_seed(0)
>>> latents = schedule.init_latents((4, 2), generator=g)
>>> result = ds.sample(x0_predictor, latents, schedule, num_steps=18)
>>> result.nfe, round(float((result.samples - 0.25).abs().max()), 6)
(35, 0.0)
>>> ds.sample(x0_predictor, latents, schedule, 4, solver="edm_stochastic_heun",
...           solver_options={"S_churn": 0.0}).nfe
7
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

from ._conditioning import check_condition
from ._denoiser import Denoiser, make_denoiser
from ._errors import ConditionError
from ._guidance import GuidedDenoiser, as_guidance
from ._registry import registry
from ._solvers import BaseSolver
from ._specs import SchemeSpec

__all__ = ["SampleResult", "resolve_solver", "sample"]


class SampleResult(NamedTuple):
    """What :func:`sample` returns: the samples and the number of network evaluations spent.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> schedule = ds.create("noise_schedule", "edm")
    >>> latents = schedule.init_latents((2, 2), generator=torch.Generator().manual_seed(0))
    >>> result = ds.sample(lambda x, t: torch.zeros_like(x), latents, schedule, num_steps=3, solver="euler")
    >>> result.samples                                          # every path ends at the one data point, 0
    tensor([[0., 0.],
            [0., 0.]])
    >>> result.nfe                                              # Euler: one evaluation a step
    3
    >>> samples, nfe = result                                   # a named tuple
    """

    samples: torch.Tensor
    nfe: int


def resolve_solver(solver: Any, options: Mapping[str, Any] | None = None) -> BaseSolver:
    """A solver object from a name, a config mapping, a spec or an object (options override fields).

    >>> resolve_solver({"name": "edm_stochastic_euler", "S_churn": 0})
    EDMStochasticEuler(S_churn=0.0, S_min=0.05, S_max=50.0, S_noise=1.003)
    >>> resolve_solver("heun", {"S_churn": 1.0})
    Traceback (most recent call last):
      ...
    diffusion_schemes.SchemeConfigError: invalid config for solver 'heun' (HeunSpec):
    ...
    """
    options = dict(options or {})
    if isinstance(solver, BaseSolver) or (callable(solver) and not isinstance(solver, (str, Mapping, SchemeSpec))):
        if options:
            raise ValueError(
                f"solver_options {sorted(options)} cannot be applied to the solver object {solver!r}; "
                "pass the solver by name or config to set options"
            )
        return solver
    if isinstance(solver, SchemeSpec):
        solver = solver.model_dump()
    if isinstance(solver, str):
        solver = {"name": solver}
    if not isinstance(solver, Mapping):
        raise TypeError(
            f"solver must be a name, a config mapping, a SolverSpec or a solver object, got {type(solver).__name__}"
        )
    return registry.create("solver", {**solver, **options})


def _check_device(denoiser: Denoiser, latents: torch.Tensor) -> None:
    guide = getattr(denoiser, "guide", None)
    for param in (denoiser.parameter(), None if guide is None else guide.parameter()):
        if param is not None and param.device != latents.device:
            raise ValueError(
                f"the latents are on {latents.device} but the model's parameters are on {param.device}; "
                f"move one of them, e.g. latents.to({str(param.device)!r}) or model.to({str(latents.device)!r})"
            )


def sample(
    denoiser: Any,
    latents: torch.Tensor,
    noise_schedule: Any,
    num_steps: int,
    solver: Any = "heun",
    *,
    condition: Any = None,
    guidance: Any = None,
    generator: torch.Generator | None = None,
    solver_options: Mapping[str, Any] | None = None,
) -> SampleResult:
    """Integrate from ``latents`` (unscaled, at the first sampling time) down to noise level 0.

    Args:
        denoiser: a :class:`Denoiser` (``noise_schedule.get_denoiser(...)``), or a
            preconditioner / any x0-predictor ``f(x, t)``, wrapped as ``x0_predictor``.
        latents: ``noise_schedule.init_latents(shape, generator=g)``.
        noise_schedule: gives the noise levels ``sigmas(num_steps)``.
        num_steps: the number of steps N (an int >= 1), passed to every solver.
        solver: a name (``"heun"``, ``"dpmpp_2m"``, ...), a config mapping, a spec or a
            solver object; ``solver_options`` are fields merged into a name or config and
            validated by the registry.
        condition: a Tensor or TensorDict with one entry per sample, passed to the model at
            every evaluation (through the noise-level path of a preconditioner, like an
            unconditioned one).
        guidance: ``None``, a weight ``w``, a mapping of :class:`Guidance` fields or a
            :class:`Guidance`: ``D = D_null + w (D_cond - D_null)`` at each evaluation.
        generator: for the stochastic solvers' noise.

    The solvers call only ``denoiser.x0_sigma``; whether the path is deterministic or
    stochastic is the solver's choice (``euler_maruyama`` and the ``edm_stochastic_*`` solvers
    add noise), not the denoiser's ``denoising_type``. A denoiser built on another schedule
    than ``noise_schedule`` works: both meet at the noise level.

    Runs without gradient tracking. Returns ``SampleResult(samples, nfe)``, where ``nfe``
    counts network evaluations per sample: a guided evaluation costs two, batched or not.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> schedule = ds.create("noise_schedule", "ve")
    >>> latents = schedule.init_latents((2, 2), generator=torch.Generator().manual_seed(0))
    >>> x0_predictor = lambda x, t: torch.full_like(x, 0.5)     # a dataset holding one point
    >>> result = ds.sample(x0_predictor, latents, schedule, num_steps=4)
    >>> result.samples, result.nfe                               # heun: 2 evaluations a step, 1 on the last
    (tensor([[0.5000, 0.5000],
            [0.5000, 0.5000]]), 7)
    >>> ds.sample(x0_predictor, latents, schedule, num_steps=0)
    Traceback (most recent call last):
      ...
    ValueError: num_steps must be >= 1 (the number of solver steps), got 0
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise TypeError(f"num_steps must be an int >= 1 (the number of solver steps), got {num_steps!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1 (the number of solver steps), got {num_steps}")
    if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
        raise TypeError("latents must be a floating-point tensor; draw them with noise_schedule.init_latents(shape)")
    solver = resolve_solver(solver, solver_options)
    if not isinstance(denoiser, Denoiser):
        denoiser = make_denoiser(noise_schedule, x0_predictor=denoiser)
    if condition is not None:
        if denoiser.condition is not None:
            raise ConditionError(
                "the denoiser already carries a condition (get_denoiser(..., condition=...)) and sample got "
                "condition= too; give it in one place"
            )
        denoiser = denoiser.with_condition(condition)
    check_condition(denoiser.condition, latents.shape[0])
    guidance = as_guidance(guidance)
    if guidance is not None:
        denoiser = guidance.bind(denoiser, latents.shape[0], noise_schedule)
    _check_device(denoiser, latents)
    sigmas = noise_schedule.sigmas(num_steps)
    with torch.no_grad():
        samples, nfe = solver(denoiser, latents, sigmas, generator=generator)
    if isinstance(denoiser, GuidedDenoiser):
        nfe = denoiser.evaluations  # the solver counts calls of D; a guided call may cost two
    return SampleResult(samples, nfe)
