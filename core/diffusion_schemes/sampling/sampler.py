"""``sample``: run a solver, picked by name, over a grid of noise levels.

A discretization supplies the grid (by default the schedule's own, ``noise_schedule.sigmas(num_steps)``;
or one by name such as ``"karras"``; or an explicit ``sigmas=`` tensor), the solver integrates
``dx/dsigma = (x - D(x; sigma)) / sigma`` over it, so ``heun`` on the EDM schedule is Karras et
al. 2022's Algorithm 1 and any schedule works the same way. The denoiser may come from another
scheme than the schedule: both meet at the noise level. A :class:`StepHook` passed to the
solver as its ``callback`` keeps the known region of an inpainting and calls the user's callback.

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

from diffusion_schemes.discretizations import check_num_steps, check_sigmas
from diffusion_schemes.sampling.denoiser import bind_condition, check_device
from diffusion_schemes.errors import ArgumentTypeError, InvalidArgumentError, SamplingError
from diffusion_schemes.sampling.guidance import as_guidance
from diffusion_schemes.specs.discovery import registry
from diffusion_schemes.solvers.base import BaseSolver
from diffusion_schemes.specs.base import SchemeSpec

__all__ = ["SampleResult", "StepHook", "resolve_discretization", "resolve_solver", "sample"]


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
            raise InvalidArgumentError(
                f"solver_options {sorted(options)} cannot be applied to the solver object {solver!r}; "
                "pass the solver by name or config to set options"
            )
        return solver
    if isinstance(solver, SchemeSpec):
        solver = solver.model_dump()
    if isinstance(solver, str):
        solver = {"name": solver}
    if not isinstance(solver, Mapping):
        raise ArgumentTypeError(
            f"solver must be a name, a config mapping, a SolverSpec or a solver object, got {type(solver).__name__}"
        )
    return registry.create("solver", {**solver, **options})


def resolve_discretization(discretization: Any) -> Any:
    """A discretization object from None (the schedule's own grid), a name, a config mapping, a spec or an object.

    >>> resolve_discretization(None)
    ScheduleDiscretization()
    >>> resolve_discretization({"name": "karras", "rho": 5})
    KarrasDiscretization(sigma_min=None, sigma_max=None, rho=5.0)
    """
    if discretization is None:
        discretization = "schedule"
    if isinstance(discretization, (str, Mapping, SchemeSpec)):
        return registry.create("discretization", discretization)
    if not callable(getattr(discretization, "sigmas", None)):
        raise ArgumentTypeError(
            "discretization must be a name, a config mapping, a DiscretizationSpec or an object with "
            f"sigmas(num_steps, schedule); got {type(discretization).__name__}"
        )
    return discretization


def _grid(noise_schedule: Any, num_steps: Any, discretization: Any, sigmas: Any) -> torch.Tensor:
    """The grid from exactly one of ``sigmas`` and (``num_steps``, ``discretization``)."""
    if sigmas is not None:
        if discretization is not None:
            raise SamplingError(
                "give either sigmas (an explicit grid) or discretization (a grid by name), not both"
            )
        grid = check_sigmas(sigmas)
        if num_steps is not None:
            if check_num_steps(num_steps) != grid.shape[0] - 1:
                raise SamplingError(
                    f"num_steps={num_steps} disagrees with sigmas, which holds {grid.shape[0] - 1} noise levels "
                    "before the final 0; omit num_steps when you pass sigmas"
                )
        return grid
    grids = resolve_discretization(discretization)
    if num_steps is None:
        num_steps = getattr(grids, "num_steps", None)  # a grid of a fixed step count (``explicit``) states it
        if num_steps is None:
            raise SamplingError(
                "give num_steps (the grid then comes from the discretization, by default the schedule's own) "
                "or sigmas (an explicit decreasing grid ending at 0)"
            )
    return check_sigmas(grids.sigmas(num_steps, noise_schedule))


class StepHook:
    """What a solver calls after each step: inpainting's replacement of the known region, then ``callback``.

    The solver passes ``{"i", "sigma", "sigma_next", "x", "denoised"}``; ``x`` is its current
    state, which the hook updates in place: where ``mask`` is 1 it becomes
    ``known + sigma_next * noise`` (``known`` itself at the last step), where ``mask`` is 0 it
    is left alone, and in between the two are mixed, ``x (1 - mask) + (known + sigma_next noise) mask``.

    >>> import torch
    >>> hook = StepHook(mask=torch.tensor([1.0, 0.0]), known=torch.tensor([5.0, 5.0]), noise=torch.ones(2))
    >>> x = torch.zeros(2)
    >>> hook({"i": 0, "sigma": torch.tensor(2.0), "sigma_next": torch.tensor(0.5), "x": x, "denoised": x})
    >>> x
    tensor([5.5000, 0.0000])
    """

    def __init__(
        self,
        callback: Any = None,
        mask: torch.Tensor | None = None,
        known: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> None:
        self.callback, self.mask, self.known, self.noise = callback, mask, known, noise
        self.last_x: torch.Tensor | None = None

    def __call__(self, info: dict[str, Any]) -> None:
        x = info["x"]
        if self.mask is not None:
            target = self.known + info["sigma_next"].to(x.dtype) * self.noise
            x.copy_(x * (1 - self.mask) + target * self.mask)
        self.last_x = x
        if self.callback is not None:
            self.callback(info)


def _inpainting(latents: torch.Tensor, mask: Any, known: Any, sigma_0: torch.Tensor) -> tuple[Any, Any, Any]:
    """``(mask, known, noise)`` shaped like the latents, checked; ``noise`` is what the latents carry on ``known``."""
    if mask is None and known is None:
        return None, None, None
    if mask is None or known is None:
        missing, given = ("mask", "known") if mask is None else ("known", "mask")
        raise SamplingError(
            f"inpainting needs both mask (1 where the values are known) and known (those values); got {given} "
            f"without {missing}"
        )
    mask = torch.as_tensor(mask, device=latents.device).to(latents.dtype)
    known = torch.as_tensor(known, device=latents.device).to(latents.dtype)
    for label, value in (("mask", mask), ("known", known)):
        try:
            shape = torch.broadcast_shapes(value.shape, latents.shape)
        except RuntimeError:
            shape = None
        if shape != latents.shape:
            raise SamplingError(
                f"{label} of shape {tuple(value.shape)} does not broadcast to the latents' shape {tuple(latents.shape)}"
            )
    if mask.device.type == "cpu" and not bool(((mask >= 0) & (mask <= 1)).all()):
        raise SamplingError("mask must hold values in [0, 1]: 1 where known holds, 0 where the model generates")
    noise = (latents - known) / sigma_0.to(device=latents.device, dtype=latents.dtype)
    return mask, known, noise


def sample(
    denoiser: Any,
    latents: torch.Tensor,
    noise_schedule: Any,
    num_steps: int | None = None,
    solver: Any = "heun",
    *,
    condition: Any = None,
    guidance: Any = None,
    discretization: Any = None,
    sigmas: Any = None,
    mask: Any = None,
    known: Any = None,
    callback: Any = None,
    noise_sampler: Any = None,
    generator: torch.Generator | None = None,
    solver_options: Mapping[str, Any] | None = None,
) -> SampleResult:
    """Integrate from ``latents`` (unscaled, at the grid's first noise level) down to noise level 0.

    Args:
        denoiser: a :class:`Denoiser` (``noise_schedule.get_denoiser(...)``), or a
            preconditioner / any x0-predictor ``f(x, t)``, wrapped as ``x0_predictor``.
        latents: ``noise_schedule.init_latents(shape, generator=g)``; for img2img
            ``init_latents(shape, x0=image, sigma=grid[0])``.
        noise_schedule: the schedule of the diffusion time the denoiser is called with; it
            also gives the grid's defaults.
        num_steps: the number of steps N (an int >= 1); may be omitted when ``sigmas`` is given.
        solver: a name (``"heun"``, ``"dpmpp_2m"``, ...), a config mapping, a spec or a
            solver object; ``solver_options`` are fields merged into a name or config and
            validated by the registry.
        condition: a Tensor or TensorDict with one entry per sample, passed to the model at
            every evaluation (through the noise-level path of a preconditioner, like an
            unconditioned one).
        guidance: ``None``, a weight ``w``, a mapping of :class:`Guidance` fields or a
            :class:`Guidance`: ``D = D_null + w (D_cond - D_null)`` at each evaluation; a
            :class:`Posterior` (a measurement to condition on); or a sequence of them applied in
            order, e.g. ``(ds.Guidance(3.0), ds.Posterior(...))``.
        discretization: the grid ``sigmas(num_steps, noise_schedule)`` by name (``"karras"``,
            ``"log_snr_uniform"``, ...), config, spec or object; default ``"schedule"``, the
            schedule's own steps.
        sigmas: an explicit grid instead: N noise levels, strictly decreasing, then 0.
        mask, known: inpainting. ``mask`` is 1 where ``known`` holds (both broadcast to the
            latents); after every step that region becomes ``known + sigma_next * noise``, with
            ``noise = (latents - known) / sigmas[0]`` (the noise the latents carry there), so the
            samples equal ``known`` exactly where ``mask`` is 1.
        callback: called after every step with a dict: ``i`` (the step), ``sigma``,
            ``sigma_next``, ``x`` (after the step and the inpainting) and ``denoised`` (the
            step's estimate of the clean sample).
        noise_sampler: ``noise_sampler(sigma, sigma_next)`` returns standard normal noise
            shaped like ``x``, called where a stochastic solver adds noise (default: drawn from
            ``generator``); see :mod:`diffusion_schemes.solvers.noise_samplers`.
        generator: for the stochastic solvers' noise.

    The solvers call only ``denoiser.x0_sigma``; whether the path is deterministic or
    stochastic is the solver's choice. A denoiser built on another schedule than
    ``noise_schedule`` works: both meet at the noise level. Runs without gradient tracking.
    Returns ``SampleResult(samples, nfe)``, where ``nfe`` counts network evaluations per
    sample: a guided evaluation costs two, batched or not; a backward pass through the network
    (a :class:`Posterior`'s gradient) counts as one more; a :class:`Patched` denoiser counts
    each patch.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> schedule = ds.create("noise_schedule", "ve")
    >>> latents = schedule.init_latents((2, 2), generator=torch.Generator().manual_seed(0))
    >>> x0_predictor = lambda x, t: torch.full_like(x, 0.5)     # a dataset holding one point
    >>> result = ds.sample(x0_predictor, latents, schedule, num_steps=4)
    >>> result.samples, result.nfe                               # heun: 2 evaluations a step, 1 on the last
    (tensor([[0.5000, 0.5000],
            [0.5000, 0.5000]]), 7)
    >>> ds.sample(x0_predictor, latents, schedule, num_steps=4, discretization="karras").nfe
    7
    >>> ds.sample(x0_predictor, latents, schedule, sigmas=[100.0, 1.0, 0.0], solver="euler").nfe
    2
    >>> ds.sample(x0_predictor, latents, schedule, num_steps=0)
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.InvalidArgumentError: num_steps must be an int >= 1 (the number of solver steps), got 0
    """
    if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
        raise ArgumentTypeError("latents must be a floating-point tensor; draw them with noise_schedule.init_latents(shape)")
    grid = _grid(noise_schedule, num_steps, discretization, sigmas)
    solver = resolve_solver(solver, solver_options)
    denoiser = bind_condition(denoiser, noise_schedule, condition, latents.shape[0])
    guidance = as_guidance(guidance)
    per_call = getattr(denoiser, "evaluations_per_call", None)  # ds.Patched: patches per evaluation
    per_call = 1 if per_call is None else per_call(latents.shape)
    if guidance is not None:
        denoiser = guidance.bind(denoiser, latents.shape[0], noise_schedule)
    check_device(denoiser, latents)
    mask, known, noise = _inpainting(latents, mask, known, grid[0])
    extra: dict[str, Any] = {}
    hook = None
    if mask is not None or callback is not None:
        hook = extra["callback"] = StepHook(callback, mask, known, noise)
    if noise_sampler is not None:
        extra["noise_sampler"] = noise_sampler
    with torch.no_grad():
        samples, nfe = solver.run(denoiser, latents, grid, generator=generator, **extra)  # grid checked once, above
        if mask is not None and hook is not None and hook.last_x is not samples:
            samples = samples * (1 - mask) + known * mask  # a solver that returned a copy of its last state
    if isinstance(getattr(denoiser, "evaluations", None), int):
        nfe = denoiser.evaluations  # the solver counts calls of D; a guided call may cost two
    return SampleResult(samples, nfe * per_call)
