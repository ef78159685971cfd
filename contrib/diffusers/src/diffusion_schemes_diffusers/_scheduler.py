"""Any schedule, solver and grid of diffusion-schemes as a diffusers scheduler.

A diffusers pipeline owns the loop: it calls the network at each of ``scheduler.timesteps`` and hands
the output to ``scheduler.step``. The core's solvers own theirs: a step calls the denoiser as often as
its method needs. :class:`DiffusionSchemesScheduler` joins the two without touching the solvers' maths:

- ``set_timesteps`` runs the solver once on a dummy latent with a recording denoiser, which gives
  every noise level at which it will evaluate the network (a two-evaluation solver such as ``heun``
  evaluates at ``sigma_{i+1}`` inside step ``i``); ``timesteps`` are the preconditioner's ``c_noise``
  there, so they repeat where diffusers' Heun scheduler repeats them, and ``order`` is the number of
  evaluations per step, as diffusers means it.
- ``step`` turns the network output into the preconditioner's x0-prediction
  ``c_skip x + c_out F`` and replays the solver's step with the estimates gathered so far; a step
  still needing an evaluation stops at it, and the latent it asked for becomes ``prev_sample``, the
  next input of the network. The last evaluation of a step completes it.

The pipeline's latent is the schedule's scaled latent ``z = alpha(sigma) x`` (``alpha = 1`` for a
variance-exploding schedule), so ``init_noise_sigma = alpha sigma_0`` and ``scale_model_input``
multiplies by ``c_in / alpha``: for a DDPM-style network both are (nearly) 1, the convention of
``DDPMPipeline``, which calls neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

import diffusion_schemes as ds

from . import DiffusersBridgeError


@dataclass
class DiffusionSchemesSchedulerOutput(BaseOutput):
    """What :meth:`DiffusionSchemesScheduler.step` returns.

    Args:
        prev_sample: the latent the network sees next (after the step's last evaluation, the latent at
            the next noise level of the grid; the clean sample after the last step).
        pred_original_sample: the x0-prediction made from this evaluation.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class _Pending(Exception):
    """Raised inside a replayed solver step at the first evaluation that has no network output yet."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x = x


class _Replay:
    """A denoiser that hands out the estimates gathered for this step, in order, then stops the step."""

    def __init__(self, outputs: list[torch.Tensor]) -> None:
        self.outputs = outputs
        self.calls = 0

    def x0_sigma(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        if self.calls == len(self.outputs):
            raise _Pending(x)
        self.calls += 1
        return self.outputs[self.calls - 1]


class _Recorder:
    """A denoiser that answers 0 and records the noise levels it is asked at."""

    def __init__(self) -> None:
        self.sigmas: list[float] = []

    def x0_sigma(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        self.sigmas.append(float(torch.as_tensor(sigma).reshape(-1)[0]))
        return torch.zeros_like(x)


def _spec_config(kind: str, value: Any) -> dict[str, Any]:
    """A scheme given by name, config, spec or object, as its JSON config (with ``name``)."""
    if isinstance(value, (str, dict, ds.SchemeSpec)):
        return ds.parse_spec(kind, value).model_dump(mode="json")
    try:
        spec = value.spec
    except (AttributeError, NotImplementedError):
        spec = None
    if not isinstance(spec, ds.SchemeSpec):
        raise DiffusersBridgeError(
            f"the {kind} {value!r} has no spec, so a diffusers scheduler cannot be configured (or saved) with it; "
            "pass a registered scheme by name or config"
        )
    return spec.model_dump(mode="json")


def _default_preconditioner(schedule: dict[str, Any]) -> dict[str, Any]:
    """The same-named preconditioner, with the fields it shares with the schedule (the table of 'discrete')."""
    try:
        spec_cls = type(ds.parse_spec("preconditioner", schedule["name"]))
    except ds.UnknownSchemeError:
        raise DiffusersBridgeError(
            f"no preconditioner is named {schedule['name']!r} like the schedule; pass preconditioner= (the one "
            "the network was trained with: it gives the network's input scaling and timesteps)"
        ) from None
    shared = {k: v for k, v in schedule.items() if k in spec_cls.model_fields and k != "weighting"}
    return ds.parse_spec("preconditioner", shared).model_dump(mode="json")


class DiffusionSchemesScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler running a diffusion-schemes solver on a schedule, grid and preconditioner.

    Built by :func:`as_diffusers_scheduler`; its config holds the four schemes as configs, so
    ``save_pretrained`` / ``from_pretrained`` rebuild it. See the module for how the solver runs
    inside the pipeline's loop.

    Args:
        schedule: the noise schedule (a config): the pipeline's latent scaling and the grid's defaults.
        solver: the solver (a config); ``dpm_adaptive``, which picks its steps from the network's
            outputs, is refused.
        discretization: the grid of noise levels (a config); default the schedule's own.
        preconditioner: the preconditioner the network was trained with (a config): its ``c_in``
            scales the network's input, its ``c_noise`` are the timesteps, its ``c_skip``, ``c_out``
            make the x0-prediction. Default: the one named like the schedule.
    """

    order = 1

    @register_to_config
    def __init__(
        self, schedule: Any = "discrete", solver: Any = "euler", discretization: Any = "schedule",
        preconditioner: Any = None,
    ) -> None:
        self.noise_schedule = ds.create("noise_schedule", schedule)
        self.solver = ds.create("solver", solver)
        if self.solver.adaptive:
            raise DiffusersBridgeError(
                f"the {self.solver.spec.name!r} solver picks its own steps from the network's outputs as it goes, so "
                "it cannot give a diffusers pipeline its timesteps in advance; sample with it through "
                "diffusion_schemes.sample, or use a solver with fixed steps (dpmpp_2m, heun, unipc, ...)"
            )
        self.discretization = ds.create("discretization", discretization)
        precond = _default_preconditioner(_spec_config("noise_schedule", schedule)) if preconditioner is None else preconditioner
        self.preconditioner = ds.parse_spec("preconditioner", precond).build(model=None)
        self.order = self.solver.evaluations
        self.timesteps: torch.Tensor | None = None
        self.sigmas: torch.Tensor | None = None
        self.num_inference_steps: int | None = None
        self._begin_index: int | None = None
        self._reset()

    # ------------------------------------------------------------------ the grid
    def _reset(self) -> None:
        self._step_index: int | None = None
        self._state: Any = None
        self._started = False
        self._x: torch.Tensor | None = None
        self._noise: torch.Tensor | None = None
        self._outputs: list[torch.Tensor] = []
        self._grids: dict[tuple[Any, Any], torch.Tensor] = {}

    def _alpha(self, sigma: torch.Tensor) -> torch.Tensor:
        """The schedule's ``alpha`` at noise level ``sigma`` (1 at noise level 0): the latent's scaling."""
        alpha, _ = self.noise_schedule.get_alpha_sigma(-2 * sigma.log())
        return torch.where(sigma == 0, torch.ones_like(alpha), alpha)

    def set_timesteps(
        self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
        sigmas: Any = None, timesteps: Any = None,
    ) -> None:
        """Make the grid: from ``num_inference_steps`` (the discretization), explicit ``sigmas`` or ``timesteps``.

        ``sigmas`` are noise levels of the unscaled latent, decreasing, with or without the final 0;
        ``timesteps`` are the network's (decreasing) timesteps, mapped to noise levels by the
        preconditioner's ``sigma_at_timestep`` (the ``discrete`` one has it). Exactly one is given.
        """
        given = [name for name, v in (("num_inference_steps", num_inference_steps), ("sigmas", sigmas),
                                      ("timesteps", timesteps)) if v is not None]
        if len(given) != 1:
            raise DiffusersBridgeError(f"set_timesteps takes exactly one of num_inference_steps, sigmas, timesteps; got {given or 'none'}")
        if timesteps is not None:
            if not hasattr(self.preconditioner, "sigma_at_timestep"):
                raise DiffusersBridgeError(
                    f"the {self.preconditioner.spec.name!r} preconditioner has no timestep table to map timesteps= "
                    "to noise levels; pass sigmas= instead"
                )
            steps = torch.as_tensor(timesteps, dtype=torch.float64).reshape(-1).cpu()
            grid = torch.cat([self.preconditioner.sigma_at_timestep(steps), torch.zeros(1, dtype=torch.float64)])
        elif sigmas is not None:
            grid = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1).cpu()
            if grid.numel() and float(grid[-1]) != 0:
                grid = torch.cat([grid, grid.new_zeros(1)])
        else:
            grid = self.discretization.sigmas(num_inference_steps, self.noise_schedule).to(torch.float64).cpu()
        if grid.numel() < 2 or not bool((grid[:-1] > 0).all() and (grid[1:] < grid[:-1]).all()):
            raise DiffusersBridgeError(
                f"the noise levels {grid.tolist()[:8]}... do not decrease strictly from positive values to 0; "
                "pass decreasing sigmas= (or timesteps=)"
            )
        self._grid = grid
        self._plan, levels = self._evaluations(grid)
        # a step whose first evaluation is not at its own grid level (EDM's churn: noise added first, the
        # network evaluated at sigma_hat) is begun at the end of the step before it, where its input is known
        firsts = [levels[e] for e, (_, k) in enumerate(self._plan) if k == 0]
        self._moved = [first != float(level) for first, level in zip(firsts, grid[:-1].tolist())]
        if self._moved[0]:
            raise DiffusersBridgeError(
                f"the {self.solver.spec.name!r} solver evaluates its first step at noise level {firsts[0]:.6g}, not at "
                f"the grid's first level {float(grid[0]):.6g} where the pipeline's initial latent is (EDM churn at "
                "sigma_0): set S_max below sigma_0, or sample with diffusion_schemes.sample"
            )
        levels = torch.tensor(levels, dtype=torch.float64)
        c_in, c_noise, c_out, c_skip = self.preconditioner.coefficients(levels, ndim=1)
        alpha = self._alpha(levels)
        # per evaluation: the input scaling c_in / alpha, the x0 coefficients on the scaled latent, and the
        # scaling of the latent the next evaluation asks for (within a step it is the next one's level)
        self._in_scale = (c_in / alpha).tolist()
        self._skip = (c_skip / alpha).tolist()
        self._out = c_out.tolist()
        self._alphas = alpha.tolist() + [1.0]
        self._grid_alphas = self._alpha(grid).tolist()
        self.timesteps = c_noise.to(device=device, dtype=torch.float32)
        self.sigmas = torch.cat([levels, levels.new_zeros(1)]).to(device=device, dtype=torch.float32)
        self.num_inference_steps = grid.shape[0] - 1
        self._begin_index = None
        self._reset()

    def _evaluations(self, grid: torch.Tensor) -> tuple[list[tuple[int, int]], list[float]]:
        """``(step, evaluation in step)`` and the noise level of every network evaluation, by a dry run."""
        recorder, plan, levels = _Recorder(), [], []
        x, state, n = torch.ones(1, dtype=torch.float64), self.solver.start(grid), grid.shape[0] - 1
        for i in range(n):
            last = i == n - 1
            noise = torch.zeros_like(x) if self.solver.adds_noise(last) else None
            recorder.sigmas = []
            x, _, state = self.solver.step(recorder, x, grid[i], grid[i + 1], state, noise, last)
            plan += [(i, k) for k in range(len(recorder.sigmas))]
            levels += recorder.sigmas
        return plan, levels

    # ------------------------------------------------------------------ diffusers' interface
    @property
    def init_noise_sigma(self) -> float:
        """Standard deviation of the pipeline's initial latent: ``alpha(sigma_0) sigma_0``."""
        if self.timesteps is None:
            top = torch.tensor([ds.discretizations.sampling_sigma_range(self.noise_schedule)[1]], dtype=torch.float64)
        else:
            top = self._grid[:1]
        return float(self._alpha(top)[0] * top[0])

    @property
    def step_index(self) -> int | None:
        """The index of the next evaluation in ``timesteps`` (None before the first ``step``)."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """The first index, set by the pipeline with :meth:`set_begin_index` (img2img)."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start at ``timesteps[begin_index]``, which must be the first evaluation of a step."""
        self._begin_index = begin_index

    def _init_step_index(self, timestep: Any) -> None:
        if self.timesteps is None:
            raise DiffusersBridgeError("call set_timesteps(num_inference_steps) before scale_model_input or step")
        if self._begin_index is not None:
            index = self._begin_index
        else:
            t = torch.as_tensor(timestep, device=self.timesteps.device, dtype=self.timesteps.dtype)
            starts = [m for m in (self.timesteps == t).nonzero().flatten().tolist() if self._plan[m][1] == 0]
            if not starts:
                raise DiffusersBridgeError(f"timestep {float(t)} is not the start of a step in scheduler.timesteps")
            index = starts[0]
        if 0 <= index < len(self._plan) and self._moved[self._plan[index][0]]:
            raise DiffusersBridgeError(
                f"timesteps[{index}] begins a step whose first evaluation is not at its grid level (EDM churn), so "
                "the pipeline's latent there is not the network's input; start at another step"
            )
        if not 0 <= index < len(self._plan) or self._plan[index][1] != 0:
            raise DiffusersBridgeError(
                f"begin_index {index} is not the first evaluation of a solver step (the steps start at "
                f"{[e for e, (_, k) in enumerate(self._plan) if k == 0][:8]}...)"
            )
        self._step_index = index

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """The network's input: ``c_in / alpha`` times the pipeline's latent."""
        if self._step_index is None:
            self._init_step_index(timestep)
        return sample * self._in_scale[self._step_index]

    def _grid_on(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in self._grids:
            self._grids[key] = self._grid.to(device=like.device, dtype=_compute_dtype(like.dtype))
        return self._grids[key]

    def step(
        self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor,
        generator: torch.Generator | None = None, return_dict: bool = True,
    ) -> DiffusionSchemesSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """Take the network's output at ``timesteps[step_index]``; return the latent it sees next.

        ``generator`` draws the noise of a stochastic solver (once per solver step, standard normal
        like ``sample``, as :func:`diffusion_schemes.sample` draws it).
        """
        if self._step_index is None:
            self._init_step_index(timestep)
        e = self._step_index
        if e >= len(self._plan):
            raise DiffusersBridgeError(
                f"step called {e + 1} times but the grid has {len(self._plan)} evaluations; call set_timesteps again"
            )
        i, k = self._plan[e]
        n = self.num_inference_steps
        grid = self._grid_on(sample)
        denoised = self._skip[e] * sample + self._out[e] * model_output.to(sample.dtype)
        if not self._started:
            self._state, self._started = self.solver.start(grid), True
        if k == 0 and not self._moved[i]:  # the pipeline's latent is this step's start (as it may have edited it)
            self._begin(i, sample / self._alphas[e], generator)
        self._outputs.append(denoised)
        try:
            x, _, state = self.solver.step(
                _Replay(self._outputs), self._x, grid[i], grid[i + 1], self._state, self._noise, i == n - 1
            )
        except _Pending as pending:
            prev = pending.x * self._alphas[e + 1]
        else:
            self._state = state
            prev = x * self._grid_alphas[i + 1]
            if i + 1 < n and self._moved[i + 1]:
                self._begin(i + 1, x, generator)
                prev = self._first_input(grid, i + 1) * self._alphas[e + 1]
        self._step_index = e + 1
        prev = prev.to(sample.dtype)
        if not return_dict:
            return prev, denoised
        return DiffusionSchemesSchedulerOutput(prev_sample=prev, pred_original_sample=denoised)

    def _begin(self, i: int, x: torch.Tensor, generator: torch.Generator | None) -> None:
        """Start solver step ``i`` from the unscaled latent ``x``: no estimates yet, its noise drawn."""
        self._x, self._outputs, self._noise = x, [], None
        if self.solver.adds_noise(i == self.num_inference_steps - 1):
            self._noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    def _first_input(self, grid: torch.Tensor, i: int) -> torch.Tensor:
        """The unscaled latent at which step ``i`` (just begun) first evaluates the network."""
        try:
            self.solver.step(_Replay([]), self._x, grid[i], grid[i + 1], self._state, self._noise,
                             i == self.num_inference_steps - 1)
        except _Pending as pending:
            return pending.x
        raise DiffusersBridgeError(f"the {self.solver.spec.name!r} solver made a step without evaluating the network")

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``alpha(sigma) (x0 + sigma noise)`` at the noise levels of ``timesteps`` (one per sample, or one).

        Timesteps map to noise levels through the preconditioner's ``sigma_at_timestep`` where it has
        one (any timestep of its table), else they must be entries of ``self.timesteps``.
        """
        t = torch.as_tensor(timesteps, device=original_samples.device).reshape(-1)
        if hasattr(self.preconditioner, "sigma_at_timestep"):
            sigma = self.preconditioner.sigma_at_timestep(t.to(torch.float64))
        elif self.timesteps is not None:
            index = (self.timesteps.to(t.device)[None, :] == t[:, None].to(self.timesteps.dtype)).to(torch.int64).argmax(1)
            sigma = self.sigmas.to(device=t.device, dtype=torch.float64)[index]
        else:
            raise DiffusersBridgeError("call set_timesteps first: add_noise takes timesteps from scheduler.timesteps")
        sigma = sigma.reshape(-1, *([1] * (original_samples.ndim - 1)))
        noisy = self._alpha(sigma) * (original_samples.to(sigma.dtype) + sigma * noise.to(sigma.dtype))
        return noisy.to(original_samples.dtype)

    def __len__(self) -> int:
        """The table size of a ``discrete`` preconditioner (as diffusers' schedulers), else the evaluations."""
        table = getattr(self.preconditioner, "num_train_timesteps", None)
        return int(table) if table is not None else (0 if self.timesteps is None else len(self.timesteps))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 or wider, as the core's solvers compute their noise levels."""
    return torch.promote_types(dtype, torch.float32) if dtype.is_floating_point else torch.float32


def as_diffusers_scheduler(
    schedule: Any = "discrete", solver: Any = "euler", discretization: Any = "schedule", preconditioner: Any = None,
) -> DiffusionSchemesScheduler:
    """A diffusers scheduler that runs ``solver`` on ``schedule`` and ``discretization``.

    Each argument is a name, a config, a spec or an object built from one (the preconditioner from
    :func:`~diffusion_schemes_diffusers.from_diffusers` works: only its config is kept). Drop it into a
    pipeline with ``pipe.scheduler = as_diffusers_scheduler(...)``.

    >>> from diffusion_schemes_diffusers import as_diffusers_scheduler
    >>> scheduler = as_diffusers_scheduler("discrete", solver="heun", discretization="linspace")
    >>> scheduler.set_timesteps(3)
    >>> scheduler.order, scheduler.timesteps.tolist()          # repeated like diffusers' Heun scheduler
    (2, [999.0, 499.5, 499.5, 0.0, 0.0])
    >>> as_diffusers_scheduler("discrete", solver="dpm_adaptive")
    Traceback (most recent call last):
      ...
    diffusion_schemes_diffusers.DiffusersBridgeError: the 'dpm_adaptive' solver picks its own steps ...
    """
    return DiffusionSchemesScheduler(
        schedule=_spec_config("noise_schedule", schedule),
        solver=_spec_config("solver", solver),
        discretization=_spec_config("discretization", discretization),
        preconditioner=None if preconditioner is None else _spec_config("preconditioner", preconditioner),
    )
