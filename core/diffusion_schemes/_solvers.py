"""Solvers: integrate ``dx/dsigma = (x - D(x; sigma)) / sigma`` from ``sigmas[0]`` down to 0.

A solver is called as ``solver(denoiser, x, sigmas, generator=None) -> (x, nfe)`` where
``sigmas`` holds N decreasing noise levels then 0 (``schedule.sigmas(N)``) and ``x`` is the
unscaled latent at ``sigmas[0]``; ``nfe`` is the number of network evaluations spent. No
solver evaluates the model at noise level 0. Each solver's :meth:`step` takes only tensors
(and flags fixed for the whole run), so it compiles with ``torch.compile(fullgraph=True)``
and replays as a CUDA graph; random numbers are drawn outside it.

>>> import torch
>>> import diffusion_schemes as ds
>>> schedule = ds.create("noise_schedule", "edm")
>>> denoiser = schedule.get_denoiser(x0_predictor=lambda x, t: torch.zeros_like(x))
>>> x, nfe = ds.create("solver", "heun")(denoiser, torch.ones(2, 3), schedule.sigmas(18))
>>> nfe, float(x.abs().max())
(35, 0.0)
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import torch

from ._builtins import (
    DPMpp2MSpec,
    EDMStochasticEulerSpec,
    EDMStochasticHeunSpec,
    EulerMaruyamaSpec,
    EulerSpec,
    HeunSpec,
)
from ._preconditioner import compute_dtype
from ._specs import SpecBacked

__all__ = ["BaseSolver", "DPMpp2M", "EDMStochastic", "Euler", "EulerMaruyama", "Heun"]


def _euler(
    denoiser: Any, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler step of ``dx/dsigma = (x - D) / sigma``; returns ``(x_next, slope)``."""
    d = (x - denoiser.x0_sigma(x, sigma)) / sigma
    return x + (sigma_next - sigma) * d, d


def _heun(denoiser: Any, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """Heun's step (Karras et al. 2022, Algorithm 1, lines 5-8): Euler, then the trapezoidal correction."""
    x_euler, d = _euler(denoiser, x, sigma, sigma_next)
    d_next = (x_euler - denoiser.x0_sigma(x_euler, sigma_next)) / sigma_next
    return x + (sigma_next - sigma) * (0.5 * d + 0.5 * d_next)


class _StepReport:
    """A denoiser that remembers the first estimate of each step, and calls ``callback`` when the step is done."""

    def __init__(self, denoiser: Any, callback: Any) -> None:
        self.denoiser, self.callback, self.denoised = denoiser, callback, None

    def x0_sigma(self, x: torch.Tensor, sigma: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.denoiser.x0_sigma(x, sigma, *args, **kwargs)
        if self.denoised is None:
            self.denoised = out
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.denoiser, name)

    def done(self, i: int, sigma: torch.Tensor, sigma_next: torch.Tensor, x: torch.Tensor) -> None:
        """Call the callback with the step's ``i, sigma, sigma_next, x, denoised``."""
        info = {"i": i, "sigma": sigma, "sigma_next": sigma_next, "x": x, "denoised": self.denoised}
        self.denoised = None
        self.callback(info)


class BaseSolver(SpecBacked):
    """Base of the solvers: checks ``sigmas``, puts them on the latent's device, runs :meth:`solve`.

    Subclasses set ``order`` (of the deterministic error) and ``stochastic``, implement
    ``step`` (one step, tensors only) and :meth:`solve` (the loop, returning ``(x, nfe)``).

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> class OneJump(ds.BaseSolver):
    ...     '''Jump from the first noise level straight to the denoiser's guess.'''
    ...     def solve(self, denoiser, x, sigmas, generator):
    ...         return denoiser.x0_sigma(x, sigmas[0]), 1
    >>> schedule = ds.create("noise_schedule", "edm")
    >>> denoiser = schedule.get_denoiser(x0_predictor=lambda x, t: torch.full_like(x, 0.5))
    >>> OneJump()(denoiser, torch.zeros(1, 2), schedule.sigmas(2))
    (tensor([[0.5000, 0.5000]]), 1)
    >>> OneJump()(denoiser, torch.zeros(1, 2), torch.tensor([1.0, 2.0, 0.0]))
    Traceback (most recent call last):
      ...
    ValueError: sigmas must decrease strictly from positive noise levels to a final 0, got [1.0, 2.0, 0.0]; ...
    """

    order: ClassVar[int] = 1
    stochastic: ClassVar[bool] = False

    def __call__(
        self,
        denoiser: Any,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        callback: Any = None,
        noise_sampler: Any = None,
    ) -> tuple[torch.Tensor, int]:
        sigmas = torch.as_tensor(sigmas)
        if sigmas.ndim != 1 or sigmas.shape[0] < 2:
            raise ValueError(f"sigmas must be 1-D with N >= 1 noise levels then 0, got shape {tuple(sigmas.shape)}")
        if sigmas.device.type == "cpu":
            decreasing = bool((sigmas[:-1] > 0).all()) and bool((sigmas[1:] < sigmas[:-1]).all())
            if float(sigmas[-1]) != 0 or not decreasing:
                raise ValueError(
                    f"sigmas must decrease strictly from positive noise levels to a final 0, got {sigmas.tolist()}; "
                    "use schedule.sigmas(num_steps)"
                )
        sigmas = sigmas.to(device=x.device, dtype=compute_dtype(x.dtype))
        hooks = {k: v for k, v in (("callback", callback), ("noise_sampler", noise_sampler)) if v is not None}
        if hooks:
            accepted = inspect.signature(self.solve).parameters
            if not self.stochastic and "noise_sampler" not in accepted:
                hooks.pop("noise_sampler", None)  # a deterministic solver draws no noise
            missing = [k for k in hooks if k not in accepted]
            if missing:
                raise TypeError(
                    f"{type(self).__name__}.solve does not take {', '.join(missing)}; accept them as keyword "
                    "arguments of solve (see BaseSolver.report and BaseSolver.noise) to support them"
                )
        return self.solve(denoiser, x, sigmas, generator, **hooks)

    def solve(
        self, denoiser: Any, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, int]:
        """Run every step; ``sigmas`` is already checked and on ``x``'s device.

        A solver that supports them also takes ``callback=None`` and ``noise_sampler=None``
        (keywords): see :meth:`report` and :meth:`noise`.
        """
        raise NotImplementedError

    @staticmethod
    def noise(
        x: torch.Tensor,
        generator: torch.Generator | None,
        noise_sampler: Any = None,
        sigma: torch.Tensor | None = None,
        sigma_next: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Standard normal noise shaped like ``x``: ``noise_sampler(sigma, sigma_next)`` when given, else drawn from ``generator``."""
        if noise_sampler is not None:
            return noise_sampler(sigma, sigma_next).to(device=x.device, dtype=x.dtype)
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    @staticmethod
    def report(denoiser: Any, callback: Any) -> tuple[Any, _StepReport | None]:
        """``(denoiser, reporter)``: with a ``callback``, a denoiser that keeps each step's first estimate.

        Step with the returned denoiser and call ``reporter.done(i, sigma, sigma_next, x)``
        after each step; without a callback the denoiser is returned as is and the reporter is None.
        """
        if callback is None:
            return denoiser, None
        reporter = _StepReport(denoiser, callback)
        return reporter, reporter

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Euler(BaseSolver):
    """Euler on the probability-flow ODE in sigma: DDIM (Song et al. 2021a; Karras et al. 2022, eq. 4).

    ``x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (x_i - D(x_i; sigma_i)) / sigma_i``; the last
    step returns ``D(x; sigma_{N-1})``. N evaluations.
    """

    order = 1
    spec_class = EulerSpec

    def step(self, denoiser: Any, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        """One Euler step from ``sigma`` to ``sigma_next`` (which may be 0)."""
        return _euler(denoiser, x, sigma, sigma_next)[0]

    def solve(self, denoiser, x, sigmas, generator, callback=None):
        denoiser, reporter = self.report(denoiser, callback)
        for i in range(sigmas.shape[0] - 1):
            x = self.step(denoiser, x, sigmas[i], sigmas[i + 1])
            if reporter is not None:
                reporter.done(i, sigmas[i], sigmas[i + 1], x)
        return x, sigmas.shape[0] - 1


class Heun(BaseSolver):
    """Heun's second-order method, Euler on the last step: Karras et al. 2022, Algorithm 1.

    ``2N - 1`` evaluations for N steps (35 for 18).
    """

    order = 2
    spec_class = HeunSpec

    def step(
        self, denoiser: Any, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, last: bool = False
    ) -> torch.Tensor:
        """One step from ``sigma`` to ``sigma_next``; ``last=True`` (``sigma_next = 0``) takes Euler."""
        return _euler(denoiser, x, sigma, sigma_next)[0] if last else _heun(denoiser, x, sigma, sigma_next)

    def solve(self, denoiser, x, sigmas, generator, callback=None):
        denoiser, reporter = self.report(denoiser, callback)
        n = sigmas.shape[0] - 1
        for i in range(n):
            x = self.step(denoiser, x, sigmas[i], sigmas[i + 1], last=i == n - 1)
            if reporter is not None:
                reporter.done(i, sigmas[i], sigmas[i + 1], x)
        return x, 2 * n - 1


class EDMStochastic(BaseSolver):
    """Karras et al. 2022, Algorithm 2: churn, then an Euler or Heun step.

    At each step ``gamma = min(S_churn / N, sqrt(2) - 1)`` if ``S_min <= sigma_i <= S_max``
    else 0; ``sigma_hat = sigma_i (1 + gamma)``;
    ``x_hat = x_i + sqrt(sigma_hat^2 - sigma_i^2) S_noise eps``; then a step of the ODE from
    ``sigma_hat`` to ``sigma_{i+1}`` (Heun when ``second_order``, Euler on the last step).
    ``S_churn = 0`` is exactly the deterministic solver (no noise is drawn).
    """

    stochastic = True

    def __init__(
        self,
        second_order: bool = True,
        S_churn: float = 40.0,
        S_min: float = 0.05,
        S_max: float = 50.0,
        S_noise: float = 1.003,
    ) -> None:
        self.second_order = bool(second_order)
        self.order = 2 if self.second_order else 1
        self.spec_class = EDMStochasticHeunSpec if self.second_order else EDMStochasticEulerSpec
        self.S_churn, self.S_min, self.S_max, self.S_noise = float(S_churn), float(S_min), float(S_max), float(S_noise)

    def get_config(self) -> dict[str, Any]:
        return {"S_churn": self.S_churn, "S_min": self.S_min, "S_max": self.S_max, "S_noise": self.S_noise}

    def churn(self, num_steps: int) -> float:
        """``min(S_churn / N, sqrt(2) - 1)``: the gamma applied inside ``[S_min, S_max]``."""
        return min(self.S_churn / num_steps, math.sqrt(2) - 1)

    def step(
        self,
        denoiser: Any,
        x: torch.Tensor,
        sigma: torch.Tensor,
        sigma_next: torch.Tensor,
        noise: torch.Tensor | None,
        churn: float,
        last: bool = False,
    ) -> torch.Tensor:
        """One step of Algorithm 2; ``noise`` is standard normal (None when ``churn`` is 0)."""
        if noise is not None:
            inside = (sigma >= self.S_min) & (sigma <= self.S_max)
            gamma = churn * inside.to(sigma.dtype)
            sigma_hat = sigma * (1 + gamma)
            x = x + (sigma_hat**2 - sigma**2).sqrt().to(x.dtype) * (self.S_noise * noise)
            sigma = sigma_hat
        if last or not self.second_order:
            return _euler(denoiser, x, sigma, sigma_next)[0]
        return _heun(denoiser, x, sigma, sigma_next)

    def solve(self, denoiser, x, sigmas, generator, callback=None, noise_sampler=None):
        denoiser, reporter = self.report(denoiser, callback)
        n = sigmas.shape[0] - 1
        churn = self.churn(n)
        for i in range(n):
            noise = self.noise(x, generator, noise_sampler, sigmas[i], sigmas[i + 1]) if churn > 0 else None
            x = self.step(denoiser, x, sigmas[i], sigmas[i + 1], noise, churn, last=i == n - 1)
            if reporter is not None:
                reporter.done(i, sigmas[i], sigmas[i + 1], x)
        return x, (2 * n - 1) if self.second_order else n


class EulerMaruyama(BaseSolver):
    """Euler-Maruyama on the reverse SDE in sigma (Song et al. 2021, eq. 6, with ``g^2 = d sigma^2 / d sigma``).

    ``x_{i+1} = x_i + 2 (sigma_{i+1} - sigma_i) (x_i - D) / sigma_i + sqrt(sigma_i^2 - sigma_{i+1}^2) eps``;
    the last step (to 0) returns ``D(x; sigma_{N-1})``. N evaluations.
    """

    stochastic = True
    spec_class = EulerMaruyamaSpec

    def step(
        self, denoiser: Any, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor:
        """One step; ``noise=None`` marks the last step, which returns the x0-prediction."""
        denoised = denoiser.x0_sigma(x, sigma)
        if noise is None:
            return denoised
        drift = 2 * (sigma_next - sigma) * (x - denoised) / sigma
        return x + drift + (sigma**2 - sigma_next**2).sqrt().to(x.dtype) * noise

    def solve(self, denoiser, x, sigmas, generator, callback=None, noise_sampler=None):
        denoiser, reporter = self.report(denoiser, callback)
        n = sigmas.shape[0] - 1
        for i in range(n):
            noise = self.noise(x, generator, noise_sampler, sigmas[i], sigmas[i + 1]) if i < n - 1 else None
            x = self.step(denoiser, x, sigmas[i], sigmas[i + 1], noise)
            if reporter is not None:
                reporter.done(i, sigmas[i], sigmas[i + 1], x)
        return x, n


class DPMpp2M(BaseSolver):
    """DPM-Solver++(2M) in ``lambda = -log sigma`` with data prediction (Lu et al. 2022, Algorithm 2).

    For the unscaled latent (``alpha = 1``) with ``h_i = log(sigma_i / sigma_{i+1})``:
    ``x_{i+1} = (sigma_{i+1} / sigma_i) x_i + (1 - e^{-h_i}) D_eff`` where
    ``D_eff = (1 + 1/(2 r)) D_i - 1/(2 r) D_{i-1}``, ``r = h_{i-1} / h_i``; first order
    (``D_eff = D_i``, i.e. DDIM) on the first step and on the last step to ``sigma = 0``.
    N evaluations.
    """

    order = 2
    spec_class = DPMpp2MSpec

    def step(
        self,
        denoiser: Any,
        x: torch.Tensor,
        sigma: torch.Tensor,
        sigma_next: torch.Tensor,
        previous: tuple[torch.Tensor, torch.Tensor] | None = None,
        last: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One step; ``previous = (D_{i-1}, h_{i-1})`` (None on the first step). Returns ``(x, (D_i, h_i))``."""
        denoised = denoiser.x0_sigma(x, sigma)
        if last:
            return denoised, (denoised, torch.zeros_like(sigma))
        h = (sigma / sigma_next).log()
        target = denoised
        if previous is not None:
            prev_denoised, prev_h = previous
            half_inv_r = (0.5 * h / prev_h).to(x.dtype)
            target = (1 + half_inv_r) * denoised - half_inv_r * prev_denoised
        ratio = (sigma_next / sigma).to(x.dtype)
        return ratio * x + (1 - ratio) * target, (denoised, h)

    def solve(self, denoiser, x, sigmas, generator, callback=None):
        denoiser, reporter = self.report(denoiser, callback)
        n = sigmas.shape[0] - 1
        previous = None
        for i in range(n):
            x, previous = self.step(denoiser, x, sigmas[i], sigmas[i + 1], previous, last=i == n - 1)
            if reporter is not None:
                reporter.done(i, sigmas[i], sigmas[i + 1], x)
        return x, n
