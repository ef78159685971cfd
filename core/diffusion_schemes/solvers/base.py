"""Solvers: integrate ``dx/dsigma = (x - D(x; sigma)) / sigma`` from ``sigmas[0]`` down to 0.

A solver is called as ``solver(denoiser, x, sigmas, generator=None, *, noise_sampler=None,
callback=None) -> (x, nfe)`` where ``sigmas`` holds N decreasing noise levels then 0
(``schedule.sigmas(N)``) and ``x`` is the unscaled latent at ``sigmas[0]``; ``nfe`` is the
number of network evaluations spent. No solver evaluates the model at noise level 0.

:class:`BaseSolver` runs the loop and counts the evaluations: a solver declares how many it
makes per step (``evaluations``, and ``final_evaluations`` on the step to 0) and implements
:meth:`BaseSolver.step`, which takes only tensors (and flags fixed for the run), so it compiles
with ``torch.compile(fullgraph=True)``. Random numbers come from a ``noise_sampler(sigma,
sigma_next)`` that returns a standard normal tensor like ``x``, called once per step where the
solver adds noise (k-diffusion's convention), outside the step.

>>> import torch
>>> import diffusion_schemes as ds
>>> schedule = ds.create("noise_schedule", "edm")
>>> denoiser = schedule.get_denoiser(x0_predictor=lambda x, t: torch.zeros_like(x))
>>> x, nfe = ds.create("solver", "heun")(denoiser, torch.ones(2, 3), schedule.sigmas(18))
>>> nfe, float(x.abs().max())
(35, 0.0)
"""

import math
import struct
from collections.abc import Callable
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from pydantic import Field

from diffusion_schemes.errors import ArgumentTypeError, DomainError, InvalidArgumentError, SamplingError
from diffusion_schemes.discretizations import check_sigmas
from diffusion_schemes.tensors import GeneratorArg, cast, check_generator, compute_dtype, normal_noise
from diffusion_schemes.specs.base import SolverSpec, SpecBacked

__all__ = [
    "BaseSolver",
    "EDMStochastic",
    "EDMStochasticEuler",
    "EDMStochasticHeun",
    "Euler",
    "EulerMaruyama",
    "Heun",
    "StepLevels",
    "ancestral_step",
    "checked_noise_sampler",
    "default_noise_sampler",
    "to_d",
]

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict[str, Any]], Any]


def default_noise_sampler(x: torch.Tensor, generator: GeneratorArg = None) -> NoiseSampler:
    """``noise_sampler(sigma, sigma_next)`` drawing standard normal noise like ``x`` from ``generator``.

    ``generator`` is None (torch's global generator), one ``torch.Generator``, or a list or tuple
    of one generator per sample of ``x`` (each on ``x``'s device): then each sample's noise comes
    from its own generator (:func:`~diffusion_schemes.solvers.noise_samplers.normal_noise`), so a
    sample's value does not depend on the batch it is solved in. The generators are checked here,
    once a run (:class:`ArgumentTypeError`), never at a step.

    >>> import torch
    >>> sampler = default_noise_sampler(torch.zeros(2, 3), torch.Generator().manual_seed(0))
    >>> sampler(torch.tensor(2.0), torch.tensor(1.0)).shape
    torch.Size([2, 3])
    >>> default_noise_sampler(torch.zeros(2, 3), [torch.Generator()])
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.ArgumentTypeError: 1 generators were given for a batch of 2 samples; ...
    """
    shape, device, dtype = tuple(x.shape), x.device, x.dtype
    generator = check_generator(generator, shape, device)

    def noise_sampler(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return normal_noise(shape, generator, device=device, dtype=dtype)

    return noise_sampler


def checked_noise_sampler(noise_sampler: Any, x: torch.Tensor) -> NoiseSampler:
    """``noise_sampler`` whose every draw is checked against ``x``: a tensor of its shape, dtype and device.

    Noise shaped ``(1, d)`` or ``(B, 1)`` would broadcast (every sample sharing it), ``None`` would add
    nothing and float64 noise would turn float32 samples into float64: each raises a
    :class:`SamplingError` naming what was expected. The check reads no device value.

    >>> import torch
    >>> sampler = checked_noise_sampler(lambda s, s_next: torch.zeros(1, 3), torch.zeros(4, 3))
    >>> sampler(torch.tensor(2.0), torch.tensor(1.0))
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.SamplingError: the noise_sampler returned a tensor of shape (1, 3), torch.float32 on cpu, but ...
    """
    if not callable(noise_sampler):
        raise ArgumentTypeError(
            f"noise_sampler must be callable as noise_sampler(sigma, sigma_next), got {type(noise_sampler).__name__}"
        )
    shape, dtype, device = x.shape, x.dtype, x.device

    def checked(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        noise = noise_sampler(sigma, sigma_next)
        if not (isinstance(noise, torch.Tensor) and noise.shape == shape and noise.dtype == dtype
                and noise.device == device):
            got = (f"a tensor of shape {tuple(noise.shape)}, {noise.dtype} on {noise.device}"
                   if isinstance(noise, torch.Tensor) else type(noise).__name__)
            raise SamplingError(
                f"the noise_sampler returned {got}, but it must return standard normal noise shaped like the "
                f"latents: shape {tuple(shape)}, {dtype} on {device} (noise that broadcasts would be shared by "
                "the samples)"
            )
        return noise

    return checked


def check_callback(callback: Any) -> None:
    """Raise :class:`ArgumentTypeError` unless ``callback`` is None or callable."""
    if callback is not None and not callable(callback):
        raise ArgumentTypeError(
            f"callback must be callable as callback(info) with info a dict of i, sigma, sigma_next, x and "
            f"denoised; got {type(callback).__name__} {callback!r}"
        )


class StepLevels(NamedTuple):
    """The noise levels at which a step will call ``denoiser.x0_sigma``, as the host knows them without reading the device.

    A solver loop hands it to a denoiser that asks for it (an ``enter_step`` attribute that is not None,
    such as a guidance interval's) before each step, and None when it leaves the loop. ``known`` pairs
    level tensors the step passes to ``x0_sigma`` as they are (the grid's entries) with their exact
    values; every other level of the step lies within ``bounds`` (low, high; up to the rounding of the
    ``dtype`` the device computes them in), or anywhere when ``bounds`` is None.

    >>> import torch
    >>> grid = torch.tensor([2.0, 1.0, 0.0])
    >>> levels = StepLevels(((grid[0], 2.0), (grid[1], 1.0)), (1.0, 2.0), grid.dtype)
    >>> levels.bounds
    (1.0, 2.0)
    """

    known: tuple[tuple[torch.Tensor, float], ...]
    bounds: tuple[float, float] | None
    dtype: torch.dtype


def as_stored(value: float, dtype: torch.dtype) -> float:
    """``value`` as a tensor of ``dtype`` (float32 or float64) holds it: rounded to nearest, as a fill does.

    >>> import torch
    >>> as_stored(0.1, torch.float32) == float(torch.tensor(0.1, dtype=torch.float32)), as_stored(0.1, torch.float64)
    (True, 0.1)
    """
    if dtype == torch.float32:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    if dtype != torch.float64:
        raise InvalidArgumentError(f"as_stored rounds to float32 or float64, got {dtype}")
    return value


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow slope ``dx/dsigma = (x - D) / sigma`` (Karras et al. 2022, eq. 4)."""
    return (x - denoised) / cast(sigma, x.dtype)


def ancestral_step(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma_down, sigma_up)`` of an ancestral step from ``sigma`` to ``sigma_next``.

    The DDPM posterior from ``sigma`` to ``sigma_next`` has variance
    ``sigma_up^2 = sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2`` (Ho et al. 2020, eq. 7, in the
    unscaled latent); ``eta`` scales its standard deviation (Song et al. 2021a, eq. 16; capped at
    ``sigma_next``), and the deterministic part steps to ``sigma_down = sqrt(sigma_next^2 - sigma_up^2)``.

    >>> import torch
    >>> down, up = ancestral_step(torch.tensor(2.0), torch.tensor(1.0), eta=1.0)
    >>> round(float(down**2 + up**2), 6), round(float(up), 4)     # the variance at sigma_next is kept
    (1.0, 0.866)
    """
    if not eta:
        return sigma_next, torch.zeros_like(sigma_next)
    up = torch.minimum(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    return (sigma_next**2 - up**2) ** 0.5, up


def _euler(denoiser: Any, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, ratio: float | None = None):
    """One Euler step of the ODE; returns ``(x_next, denoised)``, ``x_next`` a new tensor (the step's own).

    ``x + (sigma_next - sigma) (x - D) / sigma`` is ``D + (sigma_next / sigma) (x - D)``: one ``lerp``
    on the latent instead of four operations (same formula; the rounding differs at float eps). ``ratio``:
    ``sigma_next / sigma`` as a number, where the caller has the levels in host memory.
    """
    denoised = denoiser.x0_sigma(x, sigma)
    return torch.lerp(denoised, x, cast(sigma_next / sigma, x.dtype) if ratio is None else ratio), denoised


def _heun(denoiser: Any, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
          coefficients: tuple[float, float, float] | None = None):
    """Heun's step (Karras et al. 2022, Algorithm 1, lines 5-8); returns ``(x_next, denoised)``, ``x_next`` new.

    With ``h = sigma_next - sigma``, ``u = x - D(x; sigma)``, the Euler point ``x' = x + (h / sigma) u`` and
    ``v = x' - D(x'; sigma_next)``: ``x_next = x + h (u / sigma + v / sigma_next) / 2``, the same formula as
    ``x + h (d + d') / 2`` with the slopes' divisions folded into scalar coefficients (five operations on the
    latent instead of ten). ``coefficients``: ``(h / sigma, h / (2 sigma), h / (2 sigma_next))`` as numbers,
    where the caller has the levels in host memory (:meth:`Heun.solve`); else they are computed on the device.
    """
    denoised = denoiser.x0_sigma(x, sigma)
    u = x - denoised
    if coefficients is not None:
        a, b, c = coefficients
        x_euler = torch.add(x, u, alpha=a)
        v = x_euler - denoiser.x0_sigma(x_euler, sigma_next)
        return torch.add(x, u, alpha=b).add_(v, alpha=c), denoised
    step = sigma_next - sigma
    x_euler = torch.addcmul(x, u, cast(step / sigma, x.dtype))
    v = x_euler - denoiser.x0_sigma(x_euler, sigma_next)
    x_next = torch.addcmul(x, u, cast(step / (2 * sigma), x.dtype))
    return x_next.addcmul_(v, cast(step / (2 * sigma_next), x.dtype)), denoised


class BaseSolver(SpecBacked):
    """Base of the solvers: checks ``sigmas`` (once a call), runs the steps, counts the evaluations.

    A solver sets ``spec_class`` (its fields become constructor arguments, validated by the
    spec, and attributes), ``order`` (of the deterministic error), ``stochastic``, the
    evaluations it makes per step (``evaluations``; ``final_evaluations`` on the last step, to
    noise level 0) and implements :meth:`step`. :meth:`start` gives the state carried from step
    to step (the previous estimates of a multistep method); :meth:`adds_noise` says on which
    steps the loop calls ``noise_sampler(sigma, sigma_next)``. ``callback`` is called after
    every step with ``{"i", "sigma", "sigma_next", "x", "denoised"}`` (``x`` after the step,
    ``denoised`` the estimate made at ``sigma``).

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> class OneJump(ds.BaseSolver):
    ...     '''Jump from each noise level straight to the denoiser's guess.'''
    ...     def step(self, denoiser, x, sigma, sigma_next, state=None, noise=None, last=False):
    ...         denoised = denoiser.x0_sigma(x, sigma)
    ...         return denoised, denoised, state
    >>> schedule = ds.create("noise_schedule", "edm")
    >>> denoiser = schedule.get_denoiser(x0_predictor=lambda x, t: torch.full_like(x, 0.5))
    >>> seen = []
    >>> OneJump()(denoiser, torch.zeros(1, 2), schedule.sigmas(2), callback=lambda info: seen.append(info["i"]))
    (tensor([[0.5000, 0.5000]]), 2)
    >>> seen
    [0, 1]
    >>> OneJump()(denoiser, torch.zeros(1, 2), torch.tensor([1.0, 2.0, 0.0]))
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.SamplingError: sigmas must decrease strictly from positive noise levels to a final 0, ...
    """

    order: ClassVar[int] = 1
    stochastic: ClassVar[bool] = False
    evaluations: ClassVar[int] = 1
    final_evaluations: ClassVar[int] = 1
    #: True when the solver picks its own steps (then only ``sigmas[0]`` and ``sigmas[-2]`` matter).
    adaptive: ClassVar[bool] = False
    #: True when every noise level the solver evaluates ``D`` at follows from the checked grid by formulas
    #: that keep it finite and positive (the grid's own values, their geometric means, ``sigma (1 + gamma)``,
    #: points between two of them): ``ds.sample`` then calls a preconditioner without its per-evaluation
    #: domain check. False (the default, for a solver of a plugin): every evaluation is checked.
    levels_from_grid: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if self._built_from_spec(args, kwargs):
            self._bind_spec(args, kwargs)
        elif args or kwargs:
            raise ArgumentTypeError(f"{type(self).__qualname__} takes no arguments (it has no spec_class)")

    def __call__(
        self,
        denoiser: Any,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        noise_sampler: NoiseSampler | None = None,
        callback: Callback | None = None,
    ) -> tuple[torch.Tensor, int]:
        return self.run(denoiser, x, check_sigmas(sigmas), generator, noise_sampler=noise_sampler, callback=callback)

    def run(
        self,
        denoiser: Any,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        noise_sampler: NoiseSampler | None = None,
        callback: Callback | None = None,
    ) -> tuple[torch.Tensor, int]:
        """:meth:`__call__` on a grid already checked by ``discretizations.check_sigmas`` (``ds.sample``'s path).

        A ``noise_sampler`` given is checked at every draw (shape, dtype, device: no device read).
        """
        check_callback(callback)
        sigmas = sigmas.to(device=x.device, dtype=compute_dtype(x.dtype))
        if noise_sampler is None:
            noise_sampler = default_noise_sampler(x, generator)
        else:
            noise_sampler = checked_noise_sampler(noise_sampler, x)
        enter = getattr(denoiser, "enter_step", None)
        try:
            return self.solve(denoiser, x, sigmas, noise_sampler, callback)
        finally:
            if enter is not None:
                enter(None)  # out of the loop: what was said about its steps no longer holds

    def solve(
        self, denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, noise_sampler: NoiseSampler,
        callback: Callback | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Run every step over the checked ``sigmas`` (already on ``x``'s device); returns ``(x, nfe)``.

        A denoiser with an ``enter_step`` hook (not None) gets the step's :class:`StepLevels` before each
        step: the grid is read on the host for it once per call, and :meth:`level_bounds` bounds the levels
        the step derives from it.
        """
        n = sigmas.shape[0] - 1
        state = self.start(sigmas)
        levels = sigmas.unbind(0)  # the grid's entries, made once: no indexing per step
        enter = getattr(denoiser, "enter_step", None)
        host = sigmas.tolist() if enter is not None else None
        for i in range(n):
            sigma, sigma_next, last = levels[i], levels[i + 1], i == n - 1
            if enter is not None:
                enter(StepLevels(((sigma, host[i]), (sigma_next, host[i + 1])), self.level_bounds(host, i), sigmas.dtype))
            noise = noise_sampler(sigma, sigma_next) if self.adds_noise(last) else None
            x, denoised, state = self.step(denoiser, x, sigma, sigma_next, state, noise, last)
            if callback is not None:
                callback({"i": i, "sigma": sigma, "sigma_next": sigma_next, "x": x, "denoised": denoised})
        return x, self.nfe(n)

    def level_bounds(self, sigmas: list[float], i: int) -> tuple[float, float] | None:
        """``(low, high)``: bounds on the noise levels step ``i`` evaluates at other than the grid's entries
        ``sigmas[i]`` and ``sigmas[i + 1]`` (passed as they are), from the grid on the host; None when unknown
        (the default). Only a guidance interval uses them, to decide on the host which side a level is on."""
        return None

    def nfe(self, num_steps: int) -> int:
        """Network evaluations for ``num_steps`` steps, from the declared evaluations per step."""
        return (num_steps - 1) * self.evaluations + self.final_evaluations

    def start(self, sigmas: torch.Tensor) -> Any:
        """The state handed to the first step (None: the solver keeps none)."""
        return None

    def adds_noise(self, last: bool) -> bool:
        """Whether the step draws noise: stochastic solvers on every step but the last, to 0."""
        return self.stochastic and not last

    def step(
        self,
        denoiser: Any,
        x: torch.Tensor,
        sigma: torch.Tensor,
        sigma_next: torch.Tensor,
        state: Any = None,
        noise: torch.Tensor | None = None,
        last: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """One step from ``sigma`` to ``sigma_next``; returns ``(x_next, denoised, state)``."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement step()")


class EulerSpec(SolverSpec):
    """Euler on the probability-flow ODE in the noise level (first order; DDIM).

    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("solver", "euler")
    EulerSpec(name='euler')
    >>> ds.create("solver", "euler")
    Euler()
    """

    name: Literal["euler"] = "euler"
    builds = "Euler"


class Euler(BaseSolver):
    """Euler on the probability-flow ODE in sigma: DDIM (Song et al. 2021a; Karras et al. 2022, eq. 4).

    ``x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (x_i - D(x_i; sigma_i)) / sigma_i``; the last
    step returns ``D(x; sigma_{N-1})``. N evaluations.
    """

    spec_class = EulerSpec
    levels_from_grid = True

    def step(self, denoiser, x, sigma, sigma_next, state=None, noise=None, last=False):
        return (*_euler(denoiser, x, sigma, sigma_next), state)

    def solve(self, denoiser, x, sigmas, noise_sampler, callback=None):
        """The steps of :meth:`step`, each step's ratio ``sigma_next / sigma`` a number from a grid in host memory
        (as :meth:`Heun.solve`; the generic loop where that does not apply)."""
        if not _host_loop(self, Euler, denoiser, sigmas):
            return super().solve(denoiser, x, sigmas, noise_sampler, callback)
        host, levels = sigmas.tolist(), sigmas.unbind(0)
        for i in range(len(host) - 1):
            x, denoised = _euler(denoiser, x, levels[i], levels[i + 1], host[i + 1] / host[i])
            if callback is not None:
                callback({"i": i, "sigma": levels[i], "sigma_next": levels[i + 1], "x": x, "denoised": denoised})
        return x, self.nfe(len(host) - 1)


def _host_loop(solver: BaseSolver, cls: type, denoiser: Any, sigmas: torch.Tensor) -> bool:
    """Whether ``solver`` (of ``cls``) can run its own loop with each step's coefficients computed as numbers from
    the grid: a grid in host memory (on the CPU: reading it is no device synchronisation; elsewhere a CUDA-graph
    capture must see no host read), not differentiated (numbers carry no gradient, and ``ds.calibrate_sigmas``
    differentiates the samples with respect to the grid), ``cls``'s own ``step`` (a subclass's step is its own) and
    a denoiser not told each step's levels (``enter_step``, which the generic loop calls)."""
    return (sigmas.device.type == "cpu" and not (sigmas.requires_grad and torch.is_grad_enabled())
            and type(solver).step is cls.step and getattr(denoiser, "enter_step", None) is None)


class HeunSpec(SolverSpec):
    """Heun's second-order method, Euler on the last step (Karras et al. 2022, Algorithm 1).

    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("solver", "heun")
    HeunSpec(name='heun')
    >>> ds.create("solver", "heun")
    Heun()
    """

    name: Literal["heun"] = "heun"
    builds = "Heun"


class Heun(BaseSolver):
    """Heun's second-order method, Euler on the last step: Karras et al. 2022, Algorithm 1.

    ``2N - 1`` evaluations for N steps (35 for 18).
    """

    order = 2
    evaluations = 2
    spec_class = HeunSpec
    levels_from_grid = True

    def step(self, denoiser, x, sigma, sigma_next, state=None, noise=None, last=False):
        return (*(_euler if last else _heun)(denoiser, x, sigma, sigma_next), state)

    def solve(self, denoiser, x, sigmas, noise_sampler, callback=None):
        """The steps of :meth:`step` over a grid in host memory (on the CPU), with each step's scalar coefficients
        computed as numbers from the grid, read once (a CPU tensor: no device synchronisation), rather than by
        six operations on single-number tensors at every step; the latent sees the same operations. On another
        device, on a grid being differentiated, for a subclass with its own ``step``, or for a denoiser that is
        told each step's levels (``enter_step``), the loop of :class:`BaseSolver` (:func:`_host_loop`)."""
        if not _host_loop(self, Heun, denoiser, sigmas):
            return super().solve(denoiser, x, sigmas, noise_sampler, callback)
        host, levels, n = sigmas.tolist(), sigmas.unbind(0), sigmas.shape[0] - 1
        for i in range(n):
            sigma, sigma_next = host[i], host[i + 1]
            if i < n - 1:
                h = sigma_next - sigma
                x, denoised = _heun(denoiser, x, levels[i], levels[i + 1], (h / sigma, h / (2 * sigma), h / (2 * sigma_next)))
            else:
                x, denoised = _euler(denoiser, x, levels[i], levels[i + 1], sigma_next / sigma)
            if callback is not None:
                callback({"i": i, "sigma": levels[i], "sigma_next": levels[i + 1], "x": x, "denoised": denoised})
        return x, self.nfe(n)


class _EDMStochasticSpec(SolverSpec):
    S_churn: float = Field(40.0, ge=0, description="Total stochasticity; 0 gives the deterministic solver.")
    S_min: float = Field(0.05, ge=0, description="Lowest noise level where noise is added.")
    S_max: float = Field(50.0, gt=0, description="Highest noise level where noise is added.")
    S_noise: float = Field(1.003, gt=0, description="Scale of the added noise (slightly above 1).")


class EDMStochasticEulerSpec(_EDMStochasticSpec):
    """Karras et al. 2022, Algorithm 2 with Euler steps (churn S_churn, S_min, S_max, S_noise).

    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("solver", {"name": "edm_stochastic_euler", "S_churn": 10})
    EDMStochasticEulerSpec(name='edm_stochastic_euler', S_churn=10.0, S_min=0.05, S_max=50.0, S_noise=1.003)
    >>> solver = ds.create("solver", {"name": "edm_stochastic_euler", "S_churn": 10})
    >>> solver, solver.order
    (EDMStochasticEuler(S_churn=10.0, S_min=0.05, S_max=50.0, S_noise=1.003), 1)
    """

    name: Literal["edm_stochastic_euler"] = "edm_stochastic_euler"
    builds = "EDMStochasticEuler"


class EDMStochasticHeunSpec(_EDMStochasticSpec):
    """Karras et al. 2022, Algorithm 2 (stochastic Heun; churn S_churn, S_min, S_max, S_noise).

    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("solver", "edm_stochastic_heun")
    EDMStochasticHeunSpec(name='edm_stochastic_heun', S_churn=40.0, S_min=0.05, S_max=50.0, S_noise=1.003)
    >>> solver = ds.create("solver", {"name": "edm_stochastic_heun", "S_churn": 0})
    >>> solver, solver.order
    (EDMStochasticHeun(S_churn=0.0, S_min=0.05, S_max=50.0, S_noise=1.003), 2)
    """

    name: Literal["edm_stochastic_heun"] = "edm_stochastic_heun"
    builds = "EDMStochasticHeun"


class EDMStochastic(BaseSolver):
    """Karras et al. 2022, Algorithm 2: churn, then an Euler or Heun step.

    At each step ``gamma = min(S_churn / N, sqrt(2) - 1)`` if ``S_min <= sigma_i <= S_max``
    else 0; ``sigma_hat = sigma_i (1 + gamma)``;
    ``x_hat = x_i + sqrt(sigma_hat^2 - sigma_i^2) S_noise eps``; then a step of the ODE from
    ``sigma_hat`` to ``sigma_{i+1}`` (Heun for :class:`EDMStochasticHeun`, Euler on the last
    step). ``S_churn = 0`` is exactly the deterministic solver (no noise is drawn). The state
    is the run's ``gamma``; ``eps`` is drawn on every step, the last included.
    """

    stochastic = True
    levels_from_grid = True

    def churn(self, num_steps: int) -> float:
        """``min(S_churn / N, sqrt(2) - 1)``: the gamma applied inside ``[S_min, S_max]``."""
        return min(self.S_churn / num_steps, math.sqrt(2) - 1)

    def level_bounds(self, sigmas, i):
        """``sigma_hat = sigma_i (1 + gamma)``; the device compares ``sigma_i`` with ``S_min`` and ``S_max`` in
        its own dtype, so close to them (relative 1e-6) both outcomes are allowed."""
        sigma = sigmas[i]
        gamma = self.churn(len(sigmas) - 1) if self.S_churn > 0 else 0.0
        if sigma < self.S_min * (1 - 1e-6) or sigma > self.S_max * (1 + 1e-6):
            gamma = 0.0
        return sigma, sigma * (1 + gamma)

    def start(self, sigmas):
        return self.churn(sigmas.shape[0] - 1)

    def adds_noise(self, last):
        return self.S_churn > 0

    def step(self, denoiser, x, sigma, sigma_next, state=None, noise=None, last=False):
        if noise is not None:
            inside = (sigma >= self.S_min) & (sigma <= self.S_max)
            sigma_hat = sigma * (1 + state * inside.to(sigma.dtype))
            x = torch.addcmul(x, noise, cast((sigma_hat**2 - sigma**2).sqrt() * self.S_noise, x.dtype))  # one pass
            sigma = sigma_hat
        second_order = self.order == 2 and not last
        return (*(_heun if second_order else _euler)(denoiser, x, sigma, sigma_next), state)


class EDMStochasticEuler(EDMStochastic):
    """Algorithm 2 with Euler steps: N evaluations."""

    spec_class = EDMStochasticEulerSpec


class EDMStochasticHeun(EDMStochastic):
    """Algorithm 2 with Heun steps (Euler on the last): ``2N - 1`` evaluations."""

    order = 2
    evaluations = 2
    spec_class = EDMStochasticHeunSpec


class EulerMaruyamaSpec(SolverSpec):
    """Euler-Maruyama on the reverse SDE (first order, stochastic).

    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("solver", "euler_maruyama")
    EulerMaruyamaSpec(name='euler_maruyama')
    >>> ds.create("solver", "euler_maruyama")
    EulerMaruyama()
    """

    name: Literal["euler_maruyama"] = "euler_maruyama"
    builds = "EulerMaruyama"


class EulerMaruyama(BaseSolver):
    """Euler-Maruyama on the reverse SDE in sigma (Song et al. 2021, eq. 6, with ``g^2 = d sigma^2 / d sigma``).

    ``x_{i+1} = x_i + 2 (sigma_{i+1} - sigma_i) (x_i - D) / sigma_i + sqrt(sigma_i^2 - sigma_{i+1}^2) eps``;
    the last step (to 0) returns ``D(x; sigma_{N-1})``. N evaluations.
    """

    stochastic = True
    spec_class = EulerMaruyamaSpec
    levels_from_grid = True

    def step(self, denoiser, x, sigma, sigma_next, state=None, noise=None, last=False):
        denoised = denoiser.x0_sigma(x, sigma)
        if last:
            return denoised, denoised, state
        # x + 2 (s' - s) (x - D) / s = D + (2 s' / s - 1) (x - D): one lerp, then the noise in place (two passes)
        drifted = torch.lerp(denoised, x, cast(2 * sigma_next / sigma - 1, x.dtype))
        return drifted.addcmul_(noise, cast((sigma**2 - sigma_next**2).sqrt(), x.dtype)), denoised, state
