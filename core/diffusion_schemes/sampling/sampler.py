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

import math
from array import array
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch

from diffusion_schemes.discretizations import check_num_steps, check_sigmas
from diffusion_schemes.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    NonFiniteSamplesError,
    SamplingError,
)
from diffusion_schemes.sampling.denoiser import Denoiser, bind_condition, check_device
from diffusion_schemes.sampling.guidance import as_guidance
from diffusion_schemes.solvers.base import BaseSolver, check_callback, checked_noise_sampler
from diffusion_schemes.specs.base import SchemeSpec
from diffusion_schemes.specs.discovery import registry
from diffusion_schemes.tensors import cast, compute_dtype

__all__ = ["MAX_NUM_STEPS", "SampleResult", "StepHook", "resolve_discretization", "resolve_solver", "sample"]

#: The most steps :func:`sample` takes: ten million network evaluations or more, a grid of 80 MB.
MAX_NUM_STEPS = 10_000_000
#: "No step yet" in the on-device record of the first non-finite step.
_NEVER = torch.iinfo(torch.int64).max


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
    >>> resolve_solver("heun", {"name": "euler"})
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.InvalidArgumentError: solver_options names the solver 'euler' but solver is 'heun'; ...
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
    if "name" in options and "name" in solver and options["name"] != solver["name"]:
        raise InvalidArgumentError(
            f"solver_options names the solver {options['name']!r} but solver is {solver['name']!r}; "
            "choose the solver with solver= and keep only its fields in solver_options"
        )
    return registry.create("solver", {**solver, **options})


#: Solvers and discretizations ``sample`` built by name or config, by that config: they hold only their spec's
#: fields, so one object serves every call, and validating a config costs about as much as a small network
#: evaluation. (``resolve_solver`` and ``resolve_discretization`` themselves build a new object each time.)
_BUILT: dict[tuple[Any, ...], Any] = {}
_PLAIN = (str, int, float, bool, type(None))


_UNSTATED = object()


def _plain_config(value: Any) -> Any:
    """``value`` (None, a name, a number or a mapping of such) as a hashable key; ``_UNSTATED`` for anything else
    (an object, a spec, a mapping holding one), which only its own code can describe."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, Mapping) and all(isinstance(v, _PLAIN) for v in value.values()):
        return tuple(sorted(value.items()))
    return _UNSTATED


def _built(kind: str, resolve: Any, value: Any, options: Mapping[str, Any] | None = None) -> Any:
    """``resolve(value[, options])``, kept for the next call when ``value`` is None, a name or a config of plain
    values (and so are the options)."""
    args = (value,) if options is None else (value, options)
    config = _plain_config(value)
    if config is _UNSTATED:
        return resolve(*args)
    if not all(isinstance(v, _PLAIN) for v in (options or {}).values()):
        return resolve(*args)
    key = (kind, config, tuple(sorted((options or {}).items())))
    built = _BUILT.get(key)
    if built is None:
        built = resolve(*args)
        if len(_BUILT) >= 256:
            _BUILT.clear()
        _BUILT[key] = built
    return built


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
    key = _grid_key(noise_schedule, discretization, num_steps)
    if key is not None:
        grid = _GRIDS.get(key)
        if grid is not None:
            return grid.clone()  # the caller's own copy: a callback may write to the levels it is given
    grids = _built("discretization", resolve_discretization, discretization)
    if num_steps is None:
        num_steps = getattr(grids, "num_steps", None)  # a grid of a fixed step count (``explicit``) states it
        if num_steps is None:
            raise SamplingError(
                "give num_steps (the grid then comes from the discretization, by default the schedule's own) "
                "or sigmas (an explicit decreasing grid ending at 0)"
            )
    if check_num_steps(num_steps) > MAX_NUM_STEPS:
        raise SamplingError(
            f"num_steps={num_steps} is above the limit of {MAX_NUM_STEPS:,} steps: the grid of num_steps + 1 noise "
            "levels is held in memory and every step evaluates the network at least once; a few tens to a few "
            "hundred steps are usual"
        )
    grid = check_sigmas(grids.sigmas(num_steps, noise_schedule))
    if key is not None and grid.device.type == "cpu":
        if len(_GRIDS) >= 256:
            _GRIDS.clear()
        _GRIDS[key] = grid.clone()
    return grid


#: Checked grids by what they follow from (:func:`_grid_key`): a schedule's grid is a few tens of tensor
#: operations on a handful of numbers, as long as a few evaluations of a small network, and ``ds.sample``
#: asks for the same one call after call.
_GRIDS: dict[tuple[Any, ...], torch.Tensor] = {}


def _grid_key(noise_schedule: Any, discretization: Any, num_steps: Any) -> tuple[Any, ...] | None:
    """What the grid of ``discretization`` (None, a name or a config of plain values) for ``num_steps`` on
    ``noise_schedule`` depends on, hashable; None when it cannot be stated. A schedule built from a spec holds
    nothing its spec does not state (like :func:`~diffusion_schemes.sampling.denoiser.check_pair`'s verdicts,
    the grid is kept by the schedule's type and spec); any other schedule, or an object as the
    discretization, is asked every call."""
    spec = getattr(noise_schedule, "_spec", None)
    if spec is None or not isinstance(num_steps, int) or isinstance(num_steps, bool):
        return None
    config = _plain_config(discretization)
    if config is _UNSTATED:
        return None
    key = (type(noise_schedule), spec, config, num_steps)
    try:
        hash(key)
    except TypeError:
        return None
    return key


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
        watch: FiniteWatch | None = None,
    ) -> None:
        self.callback, self.mask, self.known, self.noise, self.watch = callback, mask, known, noise, watch
        self.last_x: torch.Tensor | None = None

    def __call__(self, info: dict[str, Any]) -> None:
        x = info["x"]
        if self.mask is not None:
            target = self.known + info["sigma_next"].to(x.dtype) * self.noise
            x.copy_(x * (1 - self.mask) + target * self.mask)
        self.last_x = x
        if self.watch is not None:
            self.watch.step(info["i"], x)
        if self.callback is not None:
            self.callback(info)  # the user's own exceptions propagate unchanged


class FiniteWatch:
    """Where sampling stopped being finite, recorded on the latents' device and read once at the end (in a
    replay of a run that ended non-finite, or from the start when the user's noise sampler or callback runs
    in the loop).

    Each value seen (the noise drawn, the denoiser's output, the solver's state after a step) is reduced
    by one ``torch.aminmax``: a single pass, whose minimum and maximum are both finite exactly when every
    element is (NaN reaches both, an infinity one of them, and finite values cannot overflow them). The
    results wait in a list, with where each came from (the step and the source) kept on the host; every
    ``CHUNK`` values they are folded on the device into the position of the first non-finite one. No
    comparison runs per value and nothing is read on the host before :meth:`read`.

    >>> import torch
    >>> watch = FiniteWatch(torch.device("cpu"))
    >>> for i, x in enumerate([torch.ones(2), torch.tensor([1.0, float("nan")]), torch.ones(2)]):
    ...     watch.step(i, x)
    >>> watch.read(torch.ones(2))
    ((1, 'state'), False)
    """

    SOURCES = ("noise", "denoised", "state")
    CHUNK = 256

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.extremes: list[torch.Tensor] = []  # minimum and maximum of each value not yet folded
        self.tags = array("q")  # per value seen: 3 * step + source, on the host
        self.steps = 0  # steps ended so far: the step the next value belongs to
        self.first: torch.Tensor | None = None  # after a fold: the position of the first bad value, or _NEVER
        self.folded = 0

    def see(self, source: int, value: torch.Tensor) -> None:
        """Record ``value`` (from ``SOURCES[source]``) for the step under way: one reduction, on its device."""
        self.extremes.extend(torch.aminmax(value) if value.numel() else _extremes(value))
        self.tags.append(3 * self.steps + source)
        if len(self.extremes) >= 2 * self.CHUNK:
            self._fold()

    def step(self, i: int, x: torch.Tensor) -> None:
        """After step ``i``: its state ``x`` seen; the values seen next belong to step ``i + 1``."""
        self.steps = i
        self.see(2, x)
        self.steps = i + 1

    def _fold(self) -> None:
        pairs = torch.stack(self.extremes).view(-1, 2)
        bad = ~(pairs * 0 == 0).all(dim=1)  # v * 0 is 0 exactly for a finite v
        where = torch.arange(self.folded, self.folded + bad.shape[0], device=self.device)
        first = torch.where(bad, where, _NEVER).amin()
        self.first = first if self.first is None else torch.minimum(self.first, first)
        self.folded += bad.shape[0]
        self.extremes = []

    def read(self, samples: torch.Tensor) -> tuple[tuple[int, str] | None, bool]:
        """``((step, source) of the first value seen that was NaN or inf, or None; whether samples hold NaN or
        inf)``: one host read, of the extremes not folded yet, the samples' and the folded record (exact in
        float64, as positions are below 2^53)."""
        values = torch.stack([*self.extremes, *_extremes(samples)] if not self.extremes else
                             [*self.extremes, *(cast(e, self.extremes[0].dtype) for e in _extremes(samples))])
        if self.first is not None:
            values = torch.cat([values.to(torch.float64), self.first.to(torch.float64).view(1)])
        read = values.tolist()
        first = _NEVER
        if self.first is not None:
            *read, folded = read
            first = int(folded) if folded < 2.0**53 else _NEVER
        if first == _NEVER:  # nothing folded was bad: the first bad value not folded, if any
            first = next((self.folded + k // 2 for k, v in enumerate(read[:-2]) if not math.isfinite(v)), _NEVER)
        where = None if first == _NEVER else divmod(self.tags[first], 3)
        bad = not (math.isfinite(read[-2]) and math.isfinite(read[-1]))
        return (None if where is None else (where[0], self.SOURCES[where[1]])), bad


def _extremes(value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``value``'s minimum and maximum (one pass; both finite exactly when every element is); a tensor with
    no element gives 0 and 0."""
    if not value.numel():
        zero = torch.zeros((), dtype=value.dtype, device=value.device)
        return zero, zero
    low, high = torch.aminmax(value)
    return low, high


class _SolverView:
    """The denoiser as the solver sees it: called on the solver's state (float32 or wider), its output
    in the state's dtype and watched for NaN and inf. The model runs in the latents' dtype: a plain
    :class:`Denoiser` casts only the model's input (``model_dtype``) and is reached through
    :meth:`Denoiser.on_checked_levels` when the solver's levels all follow from the checked grid; any
    other denoiser object is called on the state cast to ``dtype``. ``x0_sigma`` is an attribute (a
    closure made once per call), so an evaluation passes through no method of its own."""

    def __init__(self, denoiser: Any, dtype: torch.dtype | None, watch: FiniteWatch | None, state: torch.Tensor,
                 checked: bool) -> None:
        self.denoiser = denoiser
        if type(denoiser) is Denoiser and dtype is None and checked:
            evaluate = denoiser.on_checked_levels(state)
        else:
            call = denoiser.x0_sigma

            def evaluate(x: torch.Tensor, sigma: Any) -> torch.Tensor:
                return cast(call(x if dtype is None else x.to(dtype), sigma), x.dtype)

        if watch is not None:
            see = watch.see
            plain = evaluate

            def evaluate(x: torch.Tensor, sigma: Any) -> torch.Tensor:
                out = plain(x, sigma)
                see(1, out)
                return out

        self.x0_sigma = evaluate
        self.enter_step = getattr(denoiser, "enter_step", None)  # asked by the loop: found here, not by __getattr__

    def __getattr__(self, name: str) -> Any:
        return getattr(self.denoiser, name)


def _solver_noise(noise_sampler: Any, latents: torch.Tensor, dtype: torch.dtype, watch: FiniteWatch | None) -> Any:
    """The user's ``noise_sampler``, checked against the latents, in the solver's dtype, watched."""
    checked = checked_noise_sampler(noise_sampler, latents)

    def draw(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        noise = checked(sigma, sigma_next).to(dtype)
        if watch is not None:
            watch.see(0, noise)
        return noise

    return draw


def _non_finite(
    first: tuple[int, str] | None, grid: torch.Tensor, guided: Any, dtype: torch.dtype, recurred: bool = True,
) -> tuple[str, int | None, str]:
    """``(message, step, cause)`` for samples that are not finite, from the watch's record (``recurred``: False
    when a watched re-run of the same sampling stayed finite)."""
    def level(i: int) -> str:
        return f"step {i} (noise level {float(grid[i]):.4g} -> {float(grid[i + 1]):.4g})"

    if first is None and not recurred:
        return ("the samples hold NaN or inf, but a watched re-run from the same latents and noise stayed finite, "
                "so the step cannot be named: the model is not deterministic (dropout or batch statistics left on: "
                "call model.eval(); or a model that keeps state between calls)", None, "unknown")
    if first is None:
        return ("the samples hold NaN or inf, but no step reported a non-finite value (the solver called no "
                "callback, or the last values overflowed when cast back)", None, "unknown")
    step, cause = first
    step = min(step, grid.shape[0] - 2)  # a value seen after the last step's callback belongs to the last step
    if cause == "noise":
        text = f"the noise_sampler returned NaN or inf noise at {level(step)}; check the noise sampler"
    elif cause == "denoised":
        scale = getattr(getattr(guided, "guidance", None), "scale", None)
        text = (f"the model's output (the denoised estimate D) was first NaN or inf at {level(step)}, from a "
                "finite input: check the model (a NaN weight, a division by the noise level, an overflow in "
                f"{dtype})")
        if scale is not None and scale != 1:
            text += f", or the guidance scale {scale:g}, which amplifies D_cond - D_null into overflow"
    else:
        text = (f"the solver's state was first NaN or inf at {level(step)} while the model's output and the "
                "noise were finite: the step overflowed; check the grid and the model's scale")
    return text, step, cause


def _finite(*values: torch.Tensor) -> list[bool]:
    """Whether every element of each of ``values`` is finite, in one host read: each is summed (a NaN or an
    infinity in it makes its sum NaN or infinite, in any order of addition), and only a sum that is not finite
    has its extremes read as well, to tell a NaN or an infinity from a sum of finite values that overflowed. A
    sum costs one pass like ``aminmax`` but reads fewer bytes and makes one number (about 6x faster on 196,608
    floats, 2x on 2)."""
    sums = [v.sum(dtype=torch.float32) if v.dtype in (torch.float16, torch.bfloat16) else v.sum() for v in values]
    read = [sums[0].item()] if len(sums) == 1 else torch.stack([cast(s, torch.float64) for s in sums]).tolist()
    return [math.isfinite(total) or all(math.isfinite(e) for e in torch.stack(_extremes(v)).tolist())
            for total, v in zip(read, values)]


def _nothing() -> None:
    """Nothing to put back before a re-run: a deterministic solver draws no noise."""


def _rng_snapshot(generator: Any, device: torch.device) -> Any:
    """A function that puts the random state the noise is drawn from back as it is now, for a re-run that
    draws the same noise; None where that state cannot be kept (the run is then watched from the start).

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> restore = _rng_snapshot([g], torch.device("cpu"))
    >>> first = torch.randn(2, generator=g)
    >>> restore()
    >>> bool(torch.equal(torch.randn(2, generator=g), first))
    True
    """
    if generator is None:  # the device's default generator
        if device.type == "cpu":
            state = torch.get_rng_state()
            return lambda: torch.set_rng_state(state)
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            state = torch.cuda.get_rng_state(index)
            return lambda: torch.cuda.set_rng_state(state, index)
        return None
    generators = [generator] if isinstance(generator, torch.Generator) else generator
    if not isinstance(generators, Sequence) or not all(isinstance(g, torch.Generator) for g in generators):
        return None  # refused with its reason when the solver draws from it
    states = [g.get_state() for g in generators]

    def restore() -> None:
        for g, state in zip(generators, states):
            g.set_state(state)

    return restore


def _solve(
    solver: Any, denoiser: Any, latents: torch.Tensor, grid: torch.Tensor, dtype: torch.dtype,
    model_cast: torch.dtype | None, generator: Any, inpaint: tuple[Any, Any, Any], callback: Any,
    noise_sampler: Any, watch: FiniteWatch | None,
) -> tuple[torch.Tensor, int]:
    """One run of ``solver`` from ``latents`` over the checked ``grid``: ``(samples, nfe)``, the samples in the
    latents' dtype; ``watch`` (when given) sees every value made."""
    mask, known, noise = inpaint
    extra: dict[str, Any] = {}
    hook = None
    if mask is not None or callback is not None or watch is not None:
        hook = extra["callback"] = StepHook(callback, mask, known, noise, watch)
    if noise_sampler is not None:
        extra["noise_sampler"] = _solver_noise(noise_sampler, latents, dtype, watch)
    with torch.no_grad():
        x = latents.to(dtype)
        view = _SolverView(denoiser, model_cast, watch, x, getattr(solver, "levels_from_grid", False))
        samples, nfe = solver.run(view, x, grid, generator=generator, **extra)  # grid checked once, by _grid
        if mask is not None and hook is not None and hook.last_x is not samples:
            samples = samples * (1 - mask) + known * mask  # a solver that returned a copy of its last state
        return samples.to(latents.dtype), nfe


def _refuse_non_finite_inputs(latents: torch.Tensor, known: torch.Tensor | None) -> None:
    """NaN or inf in the latents, or in ``known`` where the mask keeps it: one host read per call."""
    fine_latents, *fine_known = _finite(latents) if known is None else _finite(latents, known)
    if not fine_latents:
        raise SamplingError(
            "the latents hold NaN or inf; draw them with noise_schedule.init_latents(shape) (for img2img, "
            "check x0), or pass check_finite=False to sample them as they are"
        )
    if fine_known and not fine_known[0]:
        raise SamplingError(
            "known holds NaN or inf where mask is above 0 (the region kept from known); NaN is fine where "
            "mask is 0, but the kept values must be finite"
        )


def _inpainting(
    latents: torch.Tensor, mask: Any, known: Any, grid: torch.Tensor, dtype: torch.dtype
) -> tuple[Any, Any, Any]:
    """``(mask, known, noise)`` in ``dtype``, broadcasting to the latents, checked; ``noise`` is what the
    latents carry on ``known``. ``known`` is set to 0 where ``mask`` is 0: its values there are never used,
    and NaN (a common mark of the unknown pixels) must not reach the generated region as ``NaN * 0``."""
    if mask is None and known is None:
        return None, None, None
    if mask is None or known is None:
        missing, given = ("mask", "known") if mask is None else ("known", "mask")
        raise SamplingError(
            f"inpainting needs both mask (1 where the values are known) and known (those values); got {given} "
            f"without {missing}"
        )
    mask = torch.as_tensor(mask, device=latents.device).to(dtype)
    known = torch.as_tensor(known, device=latents.device).to(dtype)
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
    known = torch.where(mask > 0, known, torch.zeros((), dtype=dtype, device=known.device))
    noise = (latents.to(dtype) - known) / grid[0].to(device=latents.device, dtype=dtype)
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
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    solver_options: Mapping[str, Any] | None = None,
    check_finite: bool = True,
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
        generator: for the stochastic solvers' noise: one ``torch.Generator``, or a list of one per
            sample (on the latents' device), which makes each sample's noise its own, whatever batch
            it is sampled in (draw the latents with the same list).
        check_finite: raise :class:`~diffusion_schemes.errors.NonFiniteSamplesError` (a
            :class:`SamplingError`) when the samples hold NaN or inf, naming the first step where the
            noise, the model's output or the solver's state stopped being finite; NaN or inf
            latents are refused before the first step. A run is checked by one reduction of its
            samples, read once at the end; only when they are not finite is it run again from the
            same latents and noise (the generators' states are kept for it) with every value
            watched on the device, to name the step. With a ``noise_sampler`` or a ``callback`` of
            yours, which a second run would call again, every value is watched from the start
            instead. ``False`` returns the raw samples unchecked.

    Half precision: the solver's state and all noise-level arithmetic are kept in float32 (or
    wider), as EDM's reference sampler does; the model is called with the state cast to the
    latents' dtype (float16, bfloat16), its output cast back, and the samples are returned in
    the latents' dtype. A ``callback`` sees that float32 state as ``x``.

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
    check_callback(callback)
    if noise_sampler is not None and not callable(noise_sampler):
        raise ArgumentTypeError(
            f"noise_sampler must be callable as noise_sampler(sigma, sigma_next), got {type(noise_sampler).__name__}"
        )
    grid = _grid(noise_schedule, num_steps, discretization, sigmas)
    solver = _built("solver", resolve_solver, solver, solver_options or {})
    denoiser = bind_condition(denoiser, noise_schedule, condition, latents.shape[0])
    model_cast = None  # a plain Denoiser calls its model in the latents' dtype itself; another gets its input cast
    if type(denoiser) is Denoiser:
        denoiser = denoiser.calling_model_in(latents.dtype)
    else:
        model_cast = latents.dtype
    guidance = as_guidance(guidance)
    per_call = getattr(denoiser, "evaluations_per_call", None)  # ds.Patched: patches per evaluation
    per_call = 1 if per_call is None else per_call(latents.shape)
    if guidance is not None:
        denoiser = guidance.bind(denoiser, latents.shape[0], noise_schedule)
    check_device(denoiser, latents)
    dtype = compute_dtype(latents.dtype)  # the solver's state: float32 or wider
    inpaint = _inpainting(latents, mask, known, grid, dtype)
    replay = None
    if check_finite:
        _refuse_non_finite_inputs(latents, inpaint[1])
        if noise_sampler is None and callback is None:  # nothing of the user's but the model runs in the loop
            replay = _rng_snapshot(generator, latents.device) if getattr(solver, "stochastic", True) else _nothing
    # watched from the start only where a run cannot be replayed: a noise sampler or a callback of the user's
    watch = FiniteWatch(latents.device) if check_finite and replay is None else None
    run = (solver, denoiser, latents, grid, dtype, model_cast, generator, inpaint)
    samples, nfe = _solve(*run, callback, noise_sampler, watch)
    if isinstance(getattr(denoiser, "evaluations", None), int):
        nfe = denoiser.evaluations  # the solver counts calls of D; a guided call may cost two
    if check_finite:
        recurred = True
        if watch is not None:
            first, bad = watch.read(samples)
        else:
            first, bad = None, not _finite(samples)[0]
            if bad and replay is not None:  # the rare failure: the same run again, every value watched
                replay()
                watch = FiniteWatch(latents.device)
                first, recurred = watch.read(_solve(*run, None, None, watch)[0])
        if bad:
            text, step, cause = _non_finite(first, grid, denoiser, latents.dtype, recurred)
            raise NonFiniteSamplesError(
                f"sampling produced NaN or inf: {text}. Pass check_finite=False to get the raw samples "
                "(they are also on this error as .samples).",
                step=step, cause=cause, samples=samples,
            )
    return SampleResult(samples, nfe * per_call)
