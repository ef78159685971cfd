"""``log_likelihood``: the log-density a diffusion model assigns to data, through its probability-flow ODE.

Every scheme speaks the unscaled latent ``x`` at noise level ``sigma`` (``x = x0 + sigma eps``),
whose marginal density ``p(x; sigma)`` is the data's density convolved with ``N(0, sigma^2 I)``.
The probability-flow ODE ``dx/dsigma = (x - D(x; sigma)) / sigma`` (Song et al. 2021, eq. 13;
Karras et al. 2022, eq. 4 with ``s = 1``) carries ``p(.; sigma_min)`` onto ``p(.; sigma_max)``, and
along a solution the instantaneous change of variables (Chen et al. 2018, Neural ODEs, Theorem 1)
gives ``d log p(x(sigma); sigma) / dsigma = -div f``. Here the ODE is integrated in the log noise
level ``s = ln sigma``, where it reads

    dx/ds = x - D(x; e^s),        div_x (x - D) = dim - tr(dD/dx),

so that

    log p(x; sigma_min) = log N(x(sigma_max); 0, sigma_max^2 I) + int_{ln sigma_min}^{ln sigma_max} (dim - tr dD/dx) ds,

with the prior ``N(0, sigma_max^2 I)`` standing in for ``p(.; sigma_max)`` (the data's spread is
negligible against ``sigma_max``: the error falls like ``1 / sigma_max^2``). The trace is exact
(one reverse-mode pass per dimension, batched with ``vmap`` where the network allows) or
Hutchinson's unbiased estimate ``E[v^T (dD/dx) v]`` with Rademacher or Gaussian probes ``v``
held fixed along the path (Grathwohl et al. 2019, FFJORD).

Each sample's path is its own: the fixed-step integrator (classic Runge-Kutta 4 in ``ln sigma``,
``num_steps=``) makes the same model calls for every sample and every batch, and the adaptive one
(Dormand-Prince 5(4) on torchode, the ``likelihood`` extra) chooses each sample's steps from that
sample's error alone, so a sample's log-density does not depend on the rest of its batch.

>>> import math, torch
>>> import diffusion_schemes as ds
>>> s = 0.5                                        # data N(0, s^2): the exact denoiser is s^2 / (s^2 + sigma^2) x
>>> schedule = ds.create("noise_schedule", "edm")
>>> x0_predictor = lambda x, t: s**2 / (s**2 + t[:, None] ** 2) * x      # t = sigma on EDM's schedule
>>> x = torch.tensor([[0.3], [-1.2]], dtype=torch.float64)
>>> result = ds.log_likelihood(x0_predictor, x, schedule, sigma_max=1000.0, num_steps=128)
>>> exact = -0.5 * x[:, 0] ** 2 / (s**2 + 0.002**2) - 0.5 * math.log(2 * math.pi * (s**2 + 0.002**2))
>>> bool((result.log_prob - exact).abs().max() < 1e-4), result.nfe       # RK4: four calls a step
(True, 512)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

# Private helpers of the core, in one block so that they can be repointed when the core moves.
from diffusion_schemes.errors import ArgumentTypeError, DiffusionSchemesError, InvalidArgumentError, SamplingError
from diffusion_schemes.sampling.denoiser import Denoiser, bind_condition, check_device

__all__ = ["LikelihoodResult", "log_likelihood"]

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
#: The adaptive integrator gives up after this many steps per sample (6 model calls each).
MAX_ADAPTIVE_STEPS = 10_000
#: Elements of the one-hot cotangents held at once by the batched exact trace (16 Mi: 128 MiB in float64).
_TRACE_CHUNK_ELEMENTS = 1 << 24


class LikelihoodResult(NamedTuple):
    """What :func:`log_likelihood` returns.

    - ``log_prob``: shape ``(B,)``, in nats: ``log p(x; sigma_min)``, the log-density of each
      unscaled sample at the noise level ``sigma_min``.
    - ``nfe``: the number of model calls, each on the whole batch.
    - ``dim``: the number of dimensions ``D`` of one sample (the elements of ``x[0]``).
    - ``latents``: ``x`` carried by the ODE to ``sigma_max`` (the encoding the prior is
      evaluated at), shaped like ``x``; ``log_prob - log N(latents; 0, sigma_max^2 I)`` is the
      integrated divergence alone, so another prior can be put in its place.

    >>> import torch
    >>> result = LikelihoodResult(torch.tensor([-2.0]), nfe=10, dim=2, latents=torch.zeros(1, 2))
    >>> round(float(result.bits_per_dim(1.0)), 4)          # 2 nats over 2 dimensions: 1 / ln 2 bits each
    1.4427
    """

    log_prob: torch.Tensor
    nfe: int
    dim: int
    latents: torch.Tensor

    def bits_per_dim(self, bin_width: float) -> torch.Tensor:
        """``-(log_prob + D ln bin_width) / (D ln 2)``: bits per dimension of data on a grid of ``bin_width``.

        A density is turned into the probability of a grid cell of volume ``bin_width^D``
        (uniform dequantisation), the usual figure for discrete data (Theis et al. 2016): for
        8-bit images scaled to ``[-1, 1]`` the bin width is ``2 / 256``. ``bin_width=1`` gives
        the negative log-density in bits per dimension.

        >>> import math, torch
        >>> result = LikelihoodResult(torch.tensor([-10.0, 0.0], dtype=torch.float64), nfe=1, dim=4, latents=torch.zeros(2, 4))
        >>> result.bits_per_dim(1.0).tolist() == [10 / (4 * math.log(2)), 0.0]
        True
        >>> result.bits_per_dim(0.0)
        Traceback (most recent call last):
          ...
        diffusion_schemes.errors.InvalidArgumentError: bin_width must be a positive finite number (the width of the data's grid, e.g. 2 / 256 for 8-bit images in [-1, 1]), got 0.0
        """
        if isinstance(bin_width, bool) or not isinstance(bin_width, (int, float)) or not (
            math.isfinite(bin_width) and bin_width > 0
        ):
            raise InvalidArgumentError(
                "bin_width must be a positive finite number (the width of the data's grid, e.g. 2 / 256 for "
                f"8-bit images in [-1, 1]), got {bin_width!r}"
            )
        return -(self.log_prob + self.dim * math.log(bin_width)) / (self.dim * math.log(2))


def _import_torchode() -> Any:
    try:
        import torchode
    except ImportError:
        raise DiffusionSchemesError(
            "log_likelihood's adaptive integrator needs the torchode package: pip install "
            "'diffusion-schemes[likelihood]'; or pass num_steps= for the fixed-step integrator, which needs nothing"
        ) from None
    return torchode


def _positive_float(name: str, value: Any) -> float:
    """``value`` as a float; an :class:`InvalidArgumentError` naming ``name`` unless finite and positive."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()  # once per call, before any model call
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{name} must be a positive number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise InvalidArgumentError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_arguments(
    x: Any, divergence: Any, num_probes: Any, probe: Any, num_steps: Any, rtol: Any, atol: Any
) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ArgumentTypeError(
            f"x must be a floating-point tensor of shape (B, ...), got {got}; convert (and dequantise) integer data first"
        )
    if x.ndim < 2 or x.shape[0] == 0:
        raise InvalidArgumentError(
            f"x must be a non-empty batch of shape (B, ...) with at least one dimension per sample, got shape "
            f"{tuple(x.shape)}; for a single sample use x[None]"
        )
    if divergence not in DIVERGENCES:
        raise InvalidArgumentError(
            f"divergence must be one of {DIVERGENCES} (the exact Jacobian trace, or Hutchinson's estimate), got "
            f"{divergence!r}"
        )
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
        raise InvalidArgumentError(f"num_probes must be an int >= 1 (Hutchinson probes per sample), got {num_probes!r}")
    if probe not in PROBES:
        raise InvalidArgumentError(f"probe must be one of {PROBES}, got {probe!r}")
    if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1):
        raise InvalidArgumentError(
            f"num_steps must be None (adaptive steps) or an int >= 1 (fixed Runge-Kutta 4 steps), got {num_steps!r}"
        )
    _positive_float("rtol", rtol)
    _positive_float("atol", atol)
    if torch.is_inference_mode_enabled():
        raise InvalidArgumentError(
            "log_likelihood differentiates the model for the divergence; call it outside torch.inference_mode() "
            "(torch.no_grad() around it is fine)"
        )
    if not bool(torch.isfinite(x).all()):  # one read per call, before any model call
        raise InvalidArgumentError("x holds NaN or infinite values; log_likelihood needs finite data")


def _sigma_range(noise_schedule: Any, sigma_min: Any, sigma_max: Any) -> tuple[float, float]:
    """``(sigma_min, sigma_max)``: given, or the schedule's sampling range (the first and last level of its grid)."""
    if sigma_min is None or sigma_max is None:
        grid = noise_schedule.sigmas(2)
        sigma_max = float(grid[0]) if sigma_max is None else sigma_max
        sigma_min = float(grid[1]) if sigma_min is None else sigma_min
    lo, hi = _positive_float("sigma_min", sigma_min), _positive_float("sigma_max", sigma_max)
    if lo >= hi:
        raise InvalidArgumentError(
            f"sigma_min must be below sigma_max, got sigma_min={lo!r} and sigma_max={hi!r}; the density is "
            "evaluated at sigma_min and the prior N(0, sigma_max^2 I) placed at sigma_max"
        )
    return lo, hi


class _Field:
    """The augmented ODE in ``s = ln sigma``: ``(dx/ds, d(accumulated divergence)/ds)``, counting model calls."""

    def __init__(self, denoiser: Denoiser, x: torch.Tensor, exact: bool, probes: torch.Tensor | None,
                 callback: Callable[[dict[str, Any]], None] | None) -> None:
        self.denoiser, self.exact, self.probes, self.callback = denoiser, exact, probes, callback
        self.dim = x[0].numel()
        self.nfe = 0

    #: Whether the backward passes are vmapped; set off for the rest of a call when the model refuses vmap.
    batched = True

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            denoised = self.denoiser.x0_sigma(x, sigma)
            self.nfe += 1
            trace = self._trace(denoised, x) if self.exact else self._hutchinson(denoised, x)
        if self.callback is not None:
            self.callback({"nfe": self.nfe, "sigma": sigma})
        return (x - denoised).detach(), (self.dim - trace).detach()

    def _vjps(self, out: torch.Tensor, x: torch.Tensor, cotangents: torch.Tensor, last: bool) -> torch.Tensor:
        """``cotangents[k]^T dD/dx`` for each k (shape ``(K, *x.shape)``), vmapped where the model allows."""
        if not out.requires_grad:  # D does not depend on x (a dataset of one point): a zero Jacobian
            return torch.zeros_like(cotangents)
        if self.batched and cotangents.shape[0] > 1:
            try:  # the graph is kept: a refusal may come after part of it was walked, and the loop needs it whole
                return torch.autograd.grad(
                    out, x, cotangents, retain_graph=True, is_grads_batched=True, materialize_grads=True
                )[0]
            except RuntimeError:
                self.batched = False  # an operation without a batching rule: one pass per cotangent instead
        k = cotangents.shape[0]
        return torch.stack([
            torch.autograd.grad(
                out, x, cotangents[i], retain_graph=not (last and i == k - 1), materialize_grads=True
            )[0]
            for i in range(k)
        ])

    def _trace(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``tr(dD/dx)`` per sample: one-hot cotangents, a chunk of dimensions at a time."""
        batch, dim = x.shape[0], self.dim
        chunk = max(1, min(dim, _TRACE_CHUNK_ELEMENTS // x.numel()))
        trace = x.new_zeros(batch)
        for start in range(0, dim, chunk):
            k = min(chunk, dim - start)
            one_hot = torch.zeros(k, dim, dtype=x.dtype, device=x.device)
            one_hot[torch.arange(k), torch.arange(start, start + k)] = 1
            cotangents = one_hot[:, None, :].expand(k, batch, dim).reshape(k, *x.shape)
            rows = self._vjps(out, x, cotangents, last=start + k >= dim).reshape(k, batch, dim)
            trace = trace + torch.diagonal(rows[:, :, start:start + k], dim1=0, dim2=2).sum(-1)
        return trace

    def _hutchinson(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``mean_k v_k^T (dD/dx) v_k`` per sample over the fixed probes ``v_k``."""
        probes = self.probes
        products = self._vjps(out, x, probes, last=True) * probes
        return products.reshape(probes.shape[0], x.shape[0], -1).sum(-1).mean(0)


def _fixed_steps(field: _Field, x: torch.Tensor, s_min: float, s_max: float, num_steps: int) -> tuple[Any, Any]:
    """Classic Runge-Kutta 4 on an even grid in ``s = ln sigma``: ``4 num_steps`` model calls."""
    grid = torch.linspace(s_min, s_max, num_steps + 1, dtype=torch.float64).tolist()
    batch = x.shape[0]
    acc = x.new_zeros(batch)

    def sigma_at(s: float) -> torch.Tensor:
        return torch.full((batch,), math.exp(s), dtype=x.dtype, device=x.device)

    for s, s_next in zip(grid[:-1], grid[1:]):
        h = s_next - s
        k1, a1 = field(x, sigma_at(s))
        k2, a2 = field(x + 0.5 * h * k1, sigma_at(s + 0.5 * h))
        k3, a3 = field(x + 0.5 * h * k2, sigma_at(s + 0.5 * h))
        k4, a4 = field(x + h * k3, sigma_at(s_next))
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        acc = acc + h / 6 * (a1 + 2 * a2 + 2 * a3 + a4)
    return x, acc


def _adaptive(field: _Field, x: torch.Tensor, s_min: float, s_max: float, rtol: float, atol: float) -> tuple[Any, Any]:
    """Dormand-Prince 5(4) on torchode, each sample with its own steps (error norm over its own state)."""
    to = _import_torchode()
    batch, shape = x.shape[0], x.shape

    def rhs(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # a model that returned NaN makes torchode's first step size NaN; its status then reports the failure, so
        # keep the model's noise level valid meanwhile (on the device: no read)
        s = torch.where(torch.isfinite(s), s, torch.full_like(s, s_min))
        drift, div = field(y[:, :-1].reshape(shape), s.exp())
        return torch.cat([drift.reshape(batch, -1), div[:, None]], dim=1)

    y0 = torch.cat([x.reshape(batch, -1), x.new_zeros(batch, 1)], dim=1)
    term = to.ODETerm(rhs)
    solver = to.AutoDiffAdjoint(
        to.Dopri5(term=term), to.IntegralController(atol=atol, rtol=rtol, term=term), max_steps=MAX_ADAPTIVE_STEPS
    )
    problem = to.InitialValueProblem(
        y0=y0, t_start=torch.full((batch,), s_min, dtype=x.dtype, device=x.device),
        t_end=torch.full((batch,), s_max, dtype=x.dtype, device=x.device),
    )
    solution = solver.solve(problem)
    failed = solution.status != 0
    if bool(failed.any()):  # one read per call
        codes = sorted({int(c) for c in solution.status[failed].tolist()})
        raise SamplingError(
            f"the adaptive integration stopped early for {int(failed.sum())} of {batch} samples (torchode status "
            f"{codes}: 1 = a general error, 2 = step size too small, 3 = more than {MAX_ADAPTIVE_STEPS} steps, 4 = "
            "non-finite values); "
            "check that the model returns finite values, loosen rtol/atol, or pass num_steps= for fixed steps"
        )
    end = solution.ys[:, -1]
    return end[:, :-1].reshape(shape), end[:, -1]


def log_likelihood(
    denoiser: Any,
    x: torch.Tensor,
    noise_schedule: Any,
    *,
    condition: Any = None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    divergence: str = "exact",
    num_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
    num_steps: int | None = None,
    probe: str = "rademacher",
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> LikelihoodResult:
    """The log-density of ``x`` under a diffusion model, by its probability-flow ODE from ``sigma_min`` to ``sigma_max``.

    Args:
        denoiser: what :func:`diffusion_schemes.sample` takes: a :class:`Denoiser`
            (``noise_schedule.get_denoiser(...)``), or a preconditioner / any x0-predictor
            ``f(x, t)`` called in ``noise_schedule``'s time. The model must treat the samples of a
            batch independently (``model.eval()``: no batch statistics, no dropout).
        x: the data, unscaled, shape ``(B, ...)``, floating point and finite; discrete data
            should be dequantised (uniform noise of one grid cell) first.
        noise_schedule: the schedule whose time the predictor speaks; it also gives the
            defaults of ``sigma_min`` and ``sigma_max`` (the first and last positive noise level
            of its sampling grid, ``noise_schedule.sigmas(2)``).
        condition: a Tensor or TensorDict with one entry per sample, passed to the model at
            every call (a conditional model without guidance: ``log p(x | condition)``).
        sigma_min: the noise level of the density returned; ``x`` is taken as a draw of
            ``p(.; sigma_min)``, the data convolved with ``N(0, sigma_min^2 I)``.
        sigma_max: where the prior ``N(0, sigma_max^2 I)`` replaces ``p(.; sigma_max)``; the
            mismatch shrinks like ``E|x0|^2 / sigma_max^2``.
        divergence: ``"exact"``, the trace of the Jacobian of ``D`` (one reverse-mode pass per
            dimension, vmapped over chunks of dimensions), or ``"hutchinson"``, its unbiased
            estimate with ``num_probes`` probes per sample (``probe``: ``"rademacher"`` or
            ``"gaussian"``), drawn once from ``generator`` and kept along the path.
        rtol, atol: tolerances of the adaptive integrator (per sample, on the state and the
            accumulated divergence); ignored with ``num_steps``.
        num_steps: ``None`` for adaptive steps (Dormand-Prince 5(4) on torchode: install
            ``diffusion-schemes[likelihood]``), or a number of fixed Runge-Kutta 4 steps in
            ``ln sigma`` (``4 num_steps`` model calls whatever the data: what distributed
            evaluation needs, where every rank must make the same calls).
        callback: called after every model call with ``{"nfe": calls so far, "sigma": the (B,)
            noise levels of that call}`` (progress: ``ln(sigma / sigma_min) / ln(sigma_max /
            sigma_min)`` goes from 0 to 1).

    Returns :class:`LikelihoodResult` ``(log_prob, nfe, dim, latents)``; ``bits_per_dim(bin_width)``
    turns it into bits per dimension. A sample's ``log_prob`` does not depend on the rest of
    its batch (with ``"hutchinson"``, its probes are the ones drawn at its position).

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> schedule = ds.create("noise_schedule", "edm")
    >>> x0_predictor = lambda x, t: torch.zeros_like(x)       # a dataset holding the one point 0
    >>> x = torch.tensor([[0.0, 0.0], [0.1, 0.0]], dtype=torch.float64)
    >>> result = ds.log_likelihood(x0_predictor, x, schedule, sigma_min=0.1, sigma_max=10.0, num_steps=32)
    >>> result.log_prob                                        # log N(x; 0, 0.1^2 I) = -ln(2 pi 0.01) - |x|^2 / 0.02
    tensor([2.7673, 2.2673], dtype=torch.float64)
    >>> ds.log_likelihood(x0_predictor, x, schedule, divergence="hutch")
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.InvalidArgumentError: divergence must be one of ('exact', 'hutchinson') ...
    """
    _check_arguments(x, divergence, num_probes, probe, num_steps, rtol, atol)
    lo, hi = _sigma_range(noise_schedule, sigma_min, sigma_max)
    denoiser = bind_condition(denoiser, noise_schedule, condition, x.shape[0], who="log_likelihood")
    check_device(denoiser, x)
    probes = None
    if divergence == "hutchinson":
        shape = (num_probes, *x.shape)
        if probe == "rademacher":
            probes = torch.randint(0, 2, shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
        else:
            probes = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
    x = x.detach()
    if x.is_inference():
        x = x.clone()
    field = _Field(denoiser, x, divergence == "exact", probes, callback)
    with torch.no_grad():
        if num_steps is None:
            end, acc = _adaptive(field, x, math.log(lo), math.log(hi), float(rtol), float(atol))
        else:
            end, acc = _fixed_steps(field, x, math.log(lo), math.log(hi), num_steps)
        dim = field.dim
        prior = -0.5 * end.reshape(x.shape[0], -1).pow(2).sum(1) / hi**2 - 0.5 * dim * math.log(2 * math.pi * hi**2)
    return LikelihoodResult(prior + acc, field.nfe, dim, end)
