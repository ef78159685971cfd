"""Posterior sampling for inverse problems: condition on a measurement ``y = A(x0) + noise``.

``ds.sample(..., guidance=ds.Posterior(operator, measurement, ...))`` replaces the denoiser
``D(x; sigma) = E[x0 | x]`` by an estimate of the posterior mean given the measurement too.
Tweedie's formula holds for the conditional law as well, so

    E[x0 | x, y] = x + sigma^2 grad_x log p(x | y) = D(x; sigma) + sigma^2 grad_x log p(y | x),

and every solver, which only calls ``D``, samples ``p(x0 | y)`` once ``grad_x log p(y | x)`` is
known. Both methods estimate it as a vector-Jacobian product through the denoiser,
``grad_x log p(y | x) ~ J_D(x)^T J_A(D)^T v`` with ``J`` the Jacobians of ``D`` and ``A``, and
differ in the vector ``v`` of the measurement space:

- ``"dps"`` (Chung et al. 2023, "Diffusion posterior sampling for general noisy inverse
  problems", eq. 16 and their step-size rule ``zeta_i = zeta' / ||y - A(x0_hat)||``): the score
  ``-zeta grad_x ||y - A(D(x))||^2`` with ``zeta = scale / ||y - A(D(x))||`` per sample, that is
  ``v = 2 scale (y - A(D)) / ||y - A(D)||``;
- ``"pigdm"`` (Song et al. 2023, "Pseudoinverse-guided diffusion models for inverse problems",
  eq. 7-8): ``p(x0 | x)`` taken Gaussian with mean ``D`` and variance ``r^2 I``,
  ``r^2 = data_std^2 sigma^2 / (data_std^2 + sigma^2)`` (the posterior variance of Gaussian data of
  standard deviation ``data_std``), so ``p(y | x) = N(A(D), r^2 J_A J_A^T + noise_std^2 I)`` and
  ``v = scale (r^2 J_A J_A^T + noise_std^2 I)^{-1} (y - A(D))``, solved by conjugate gradients.
  For isotropic Gaussian data, a linear operator and ``data_std`` the data's standard
  deviation, this is the exact posterior mean.

Cost: each evaluation runs the network forward with its graph and one backward pass through it
(besides the operator's own products); :func:`~diffusion_schemes.sample`'s ``nfe`` counts the
backward pass as one more network evaluation per sample, so a posterior-guided evaluation
counts two (four over classifier-free guidance, whose two branches are differentiated).

>>> import torch
>>> import diffusion_schemes as ds
>>> schedule = ds.create("noise_schedule", "edm")
>>> prior = lambda x, t: x / (1 + t[:, None] ** 2)             # exact D for data N(0, I) in 2-D
>>> A = torch.tensor([[1.0, 1.0]])                              # we measure x0[0] + x0[1] ...
>>> y = torch.full((2000, 1), 2.0)                              # ... = 2, noiselessly
>>> latents = schedule.init_latents((2000, 2), generator=torch.Generator().manual_seed(0))
>>> result = ds.sample(prior, latents, schedule, 32,
...                    guidance=ds.Posterior(lambda x: x @ A.T, y, method="pigdm", data_std=1.0))
>>> float((result.samples.sum(1) - 2).abs().max()) < 1e-4        # every sample agrees with y
True
>>> result.samples.mean(0).round(decimals=1)                    # the posterior mean is (1, 1)
tensor([1., 1.])
>>> result.nfe                                                  # 63 forward and 63 backward passes
126
"""

from __future__ import annotations

import math
from typing import Any

import torch

from diffusion_schemes.sampling.denoiser import Denoiser
from diffusion_schemes.errors import ArgumentTypeError, GuidanceError
from diffusion_schemes.tensors import append_dims, compute_dtype

__all__ = ["METHODS", "Posterior", "PosteriorDenoiser"]

#: The likelihood-score estimates :class:`Posterior` implements.
METHODS = ("dps", "pigdm")


def _nonnegative(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{what} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise GuidanceError(f"{what} must be finite and >= 0, got {value}")
    return value


class Posterior:
    """Guidance toward a measurement ``y = A(x0) + noise``, for :func:`~diffusion_schemes.sample`.

    Args:
        operator: ``A``, a differentiable callable on a batch of latents (a matrix product, a
            mask, a blur, a nonlinear map), acting on each sample independently.
        measurement: ``y``, a tensor with the latents' batch size (or 1, broadcast) as its first
            dimension, shaped like ``A``'s output.
        noise_std: the standard deviation of the Gaussian measurement noise (>= 0); used by
            ``"pigdm"`` (``"dps"`` weighs its gradient by the step-size rule instead).
        method: ``"dps"`` (Chung et al. 2023) or ``"pigdm"`` (Song et al. 2023).
        scale: multiplies the likelihood score: DPS's ``zeta'``; for PiGDM 1 is the exact weight.
        data_std: PiGDM only: the data's standard deviation, which sets the spread ``r^2 = data_std^2
            sigma^2 / (data_std^2 + sigma^2)`` of ``x0`` given the latent. ``None``: the
            preconditioner's ``sigma_data`` where the denoiser wraps one that has it, else 1 (data
            scaled to unit variance, as Song et al. assume).
        cg_iterations: PiGDM only: conjugate-gradient iterations for ``(r^2 J_A J_A^T + noise_std^2
            I)^{-1}``; ``None``: the measurement's size per sample, at most 100 (exact in exact
            arithmetic up to that size; a mask needs one).

    Combine it with classifier-free guidance as a sequence, ``guidance=(ds.Guidance(3.0),
    ds.Posterior(...))``: the posterior term is then taken through the guided denoiser.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> ds.Posterior(lambda x: x[:, :1], torch.zeros(4, 1), noise_std=0.1)
    Posterior(method='dps', noise_std=0.1, scale=1.0)
    >>> ds.Posterior(lambda x: x, torch.zeros(4, 1), method="map")
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.GuidanceError: method must be one of ('dps', 'pigdm'), got 'map'
    >>> ds.Posterior(lambda x: x, torch.tensor([[float("nan")]]))
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.GuidanceError: the measurement holds NaN or infinite values; ...
    """

    def __init__(
        self,
        operator: Any,
        measurement: Any,
        noise_std: float = 0.0,
        method: str = "dps",
        scale: float = 1.0,
        data_std: float | None = None,
        *,
        cg_iterations: int | None = None,
    ) -> None:
        if method not in METHODS:
            raise GuidanceError(f"method must be one of {METHODS}, got {method!r}")
        if not callable(operator):
            raise ArgumentTypeError(
                f"operator must be a callable A(x) on a batch of latents, got {type(operator).__name__}; "
                "for a matrix M use lambda x: x @ M.T"
            )
        if not isinstance(measurement, torch.Tensor):
            try:
                measurement = torch.as_tensor(measurement, dtype=torch.get_default_dtype())
            except (TypeError, ValueError, RuntimeError) as exc:
                raise ArgumentTypeError(f"measurement must be a tensor, got {type(measurement).__name__}") from exc
        if not measurement.is_floating_point() or measurement.ndim < 1:
            raise ArgumentTypeError(
                "measurement must be a floating-point tensor with the batch as its first dimension, got "
                f"dtype {measurement.dtype} and shape {tuple(measurement.shape)}"
            )
        if not bool(torch.isfinite(measurement).all()):  # once, when the guidance is built
            raise GuidanceError(
                "the measurement holds NaN or infinite values; mark missing values in the operator instead "
                "(e.g. a mask that keeps only the observed entries)"
            )
        self.noise_std = _nonnegative(noise_std, "noise_std")
        self.scale = _nonnegative(scale, "scale")
        if data_std is not None:
            if method != "pigdm":
                raise GuidanceError("data_std sets PiGDM's spread of x0 given the latent; use it with method='pigdm'")
            data_std = _nonnegative(data_std, "data_std")
            if data_std == 0:
                raise GuidanceError("data_std must be > 0 (the data's standard deviation)")
        if cg_iterations is not None and (isinstance(cg_iterations, bool) or not isinstance(cg_iterations, int)
                                          or cg_iterations < 1):
            raise GuidanceError(f"cg_iterations must be an int >= 1 or None, got {cg_iterations!r}")
        self.operator, self.measurement, self.method = operator, measurement, method
        self.data_std, self.cg_iterations = data_std, cg_iterations

    def __repr__(self) -> str:
        extra = "" if self.data_std is None else f", data_std={self.data_std}"
        return f"Posterior(method={self.method!r}, noise_std={self.noise_std}, scale={self.scale}{extra})"

    def bind(self, denoiser: Denoiser, batch_size: int, schedule: Any) -> PosteriorDenoiser:
        """The posterior denoiser over ``denoiser`` (plain or guided) for latents of ``batch_size``."""
        if self.measurement.shape[0] not in (1, batch_size):
            raise GuidanceError(
                f"the measurement has batch size {self.measurement.shape[0]} (shape {tuple(self.measurement.shape)}) "
                f"but the latents have {batch_size}; give one measurement per sample, or one of batch size 1 for all"
            )
        return PosteriorDenoiser(denoiser, self, batch_size)


def _sigma_data_of(denoiser: Denoiser) -> float | None:
    """The ``sigma_data`` of the preconditioner inside ``denoiser`` (through guidance and partials), if any."""
    seen = denoiser
    while hasattr(seen, "base"):
        seen = seen.base
    model = seen.predictor
    while hasattr(model, "func"):  # functools.partial
        model = model.func
    value = getattr(model, "sigma_data", None)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner products of two batches, shape ``(B,)``."""
    return (a * b).flatten(1).sum(1)


def conjugate_gradient(apply: Any, b: torch.Tensor, iterations: int) -> torch.Tensor:
    """Solve ``apply(u) = b`` per sample for a symmetric positive (semi-)definite ``apply``.

    A fixed number of iterations and no host synchronisation: once a sample's residual is below
    float precision its solution stops changing. For a consistent semi-definite system started
    at 0 the iterates stay in the range, so the solution is the minimum-norm one.

    >>> import torch
    >>> M = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> conjugate_gradient(lambda u: u @ M, torch.tensor([[1.0, 2.0]], dtype=torch.float64), 2)
    tensor([[0.0909, 0.6364]], dtype=torch.float64)
    """
    u = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = _dot(r, r)
    floor = (torch.finfo(b.dtype).eps * 1e-2) ** 2 * rs
    for _ in range(iterations):
        active = rs > floor
        cp = apply(p)
        pcp = _dot(p, cp)
        alpha = torch.where(active & (pcp > 0), rs / torch.where(pcp > 0, pcp, 1), 0)
        u = u + append_dims(alpha, b.ndim) * p
        r = r - append_dims(alpha, b.ndim) * cp
        rs_next = _dot(r, r)
        beta = torch.where(active, rs_next / torch.where(rs > 0, rs, 1), 0)
        p = r + append_dims(beta, b.ndim) * p
        rs = torch.where(active, rs_next, rs)
    return u


class PosteriorDenoiser(Denoiser):
    """The denoiser ``D + sigma^2 J_D^T J_A^T v`` built by :meth:`Posterior.bind`; counts its network passes.

    ``evaluations`` is the number of network passes per sample so far: the forward evaluations
    of the wrapped denoiser (two per guided call) plus as many backward passes.
    """

    def __init__(self, denoiser: Denoiser, posterior: Posterior, batch_size: int) -> None:
        super().__init__(
            denoiser.schedule, denoiser.predictor, denoiser.prediction_type, denoiser.denoising_type, denoiser.condition
        )
        self.base, self.posterior, self.batch_size = denoiser, posterior, batch_size
        self.guide = getattr(denoiser, "guide", None)  # an autoguidance model, for the device check
        self.evaluations = 0
        data_std = posterior.data_std
        if posterior.method == "pigdm" and data_std is None:
            data_std = _sigma_data_of(denoiser) or 1.0
        self.data_std = data_std
        self._y: torch.Tensor | None = None

    def parameter(self) -> torch.Tensor | None:
        return self.base.parameter()

    def _measurement(self, like: torch.Tensor) -> torch.Tensor:
        y = self._y
        if y is None or y.device != like.device or y.dtype != like.dtype:
            y = self._y = self.posterior.measurement.to(device=like.device, dtype=like.dtype)
        if y.shape[0] != like.shape[0]:
            y = y.expand(like.shape[0], *y.shape[1:])
        if y.shape != like.shape:
            raise GuidanceError(
                f"the operator returns shape {tuple(like.shape)} but the measurement has shape "
                f"{tuple(self.posterior.measurement.shape)}; they must agree (batch first)"
            )
        return y

    def x0_given(self, x: torch.Tensor, sigma: Any, condition: Any) -> torch.Tensor:
        raise GuidanceError(
            "a posterior-guided denoiser cannot be guided again; give classifier-free guidance first: "
            "guidance=(ds.Guidance(w), ds.Posterior(...))"
        )

    def x0_sigma(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        """``E[x0 | x, y]`` estimated as ``D(x; sigma) + sigma^2 J_D^T J_A^T v`` (see the module's text)."""
        sigma = torch.as_tensor(sigma, device=x.device).to(compute_dtype(x.dtype))
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
        before = getattr(self.base, "evaluations", None)
        posterior = self.posterior
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            denoised = self.base.x0_sigma(x_in, sigma)
            d = denoised.detach().requires_grad_(True)
            a = posterior.operator(d)
            if not isinstance(a, torch.Tensor):
                raise ArgumentTypeError(f"the operator must return a tensor, got {type(a).__name__}")
            residual = (self._measurement(a) - a).detach()
            if posterior.method == "dps":
                norm = residual.flatten(1).norm(dim=1)
                v = append_dims(2 * posterior.scale / norm.clamp_min(torch.finfo(norm.dtype).tiny), a.ndim) * residual
            else:
                v = posterior.scale * self._pigdm_solve(a, d, residual, sigma)
            (u,) = torch.autograd.grad(a, d, v)  # J_A^T v
            (score,) = torch.autograd.grad(denoised, x_in, u)  # J_D^T J_A^T v: one backward through the network
        after = getattr(self.base, "evaluations", None)
        forwards = 1 if before is None else after - before
        self.evaluations += 2 * forwards
        return denoised.detach() + append_dims(sigma**2, x.ndim).to(x.dtype) * score

    def _pigdm_solve(self, a: torch.Tensor, d: torch.Tensor, residual: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``(r^2 J_A J_A^T + noise_std^2 I)^{-1} residual`` by conjugate gradients on the operator's products."""
        s2 = self.data_std**2
        r2 = append_dims(s2 * sigma**2 / (s2 + sigma**2), a.ndim).to(a.dtype)
        dummy = torch.zeros_like(a, requires_grad=True)
        (transpose,) = torch.autograd.grad(a, d, dummy, create_graph=True)  # J_A^T w, linear in w

        def apply(w: torch.Tensor) -> torch.Tensor:
            (jjt,) = torch.autograd.grad(transpose, dummy, torch.autograd.grad(a, d, w, retain_graph=True)[0],
                                         retain_graph=True)  # J_A (J_A^T w)
            return r2 * jjt + self.posterior.noise_std**2 * w

        iterations = self.posterior.cg_iterations or min(a[0].numel(), 100)
        return conjugate_gradient(apply, residual, iterations)

    def __repr__(self) -> str:
        return f"PosteriorDenoiser({self.posterior!r}, base={self.base!r})"
