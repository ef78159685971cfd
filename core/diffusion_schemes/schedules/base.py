"""Noise schedules in log-SNR terms (Kingma & Gao 2023 notation).

The forward process is ``z_t = alpha(t) x0 + sigma(t) eps`` with log-SNR
``lambda(t) = log alpha(t)^2 - log sigma(t)^2``, decreasing in t. A schedule states
``lambda(t)``, its inverse, its time domains, its training distribution of t and its
sampling time steps; everything else is derived here once:

- ``noise_level(t) = sigma / alpha = exp(-lambda / 2)``, what a preconditioner's
  ``sigma(t)`` must equal and what every sampler steps in;
- ``alpha, sigma`` from lambda by variance type: preserving ``alpha^2 = sigmoid(lambda)``,
  exploding ``alpha = 1, sigma^2 = exp(-lambda)``;
- drift and diffusion of the forward SDE ``dz = f(t) z dt + g(t) dW``:
  ``f = d log alpha / dt`` and ``g^2 = d sigma^2/dt - 2 f sigma^2 = -lambda'(t) sigma^2``
  (for variance exploding this is ``beta (1 + exp(-lambda))``, not ``beta``);
- ``beta(t) = d/dt log(1 + exp(-lambda)) = -lambda'(t) sigmoid(-lambda)`` (``derivative_log_snr``).

A minimal schedule (variance exploding, ``t`` = noise level, log-uniform training):

>>> import torch
>>> import diffusion_schemes as ds
>>> class LogUniformVE(ds.BaseNoiseSchedule):
...     def __init__(self):
...         super().__init__("log-uniform-ve", "exploding")
...     def get_log_snr(self, t, training=False):
...         return -2 * self._t(t, training).log()
...     def get_t_from_log_snr(self, log_snr, training=False):
...         return torch.exp(-self._log_snr(log_snr) / 2)
...     def domain(self, training=False):
...         return (0.01, 50.0)
...     def sample_time(self, n, generator=None, device=None):
...         u = torch.rand(n, generator=generator, device=device)
...         return 0.01 * 5000.0 ** u
...     def timesteps(self, num_steps, device=None):
...         i = torch.arange(num_steps, dtype=torch.float64, device=device) / max(num_steps - 1, 1)
...         return self._with_zero(50.0 * (0.01 / 50.0) ** i)
>>> schedule = LogUniformVE()
>>> schedule.validate()
>>> round(float(schedule.noise_level(torch.tensor(2.0))), 6)
2.0
>>> float(schedule.get_drift_diffusion(schedule.get_log_snr(torch.tensor(2.0)))) # g^2 = d sigma^2/dt = 2t
4.0
>>> schedule.timesteps(3)
tensor([5.0000e+01, 7.0711e-01, 1.0000e-02, 0.0000e+00], dtype=torch.float64)
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch

from diffusion_schemes.schedules.deprecation import LOG_SNR_METHODS, accept_log_snr_t
from diffusion_schemes.discretizations import check_num_steps
from diffusion_schemes.errors import ArgumentTypeError, DomainError, InvalidArgumentError
from diffusion_schemes.tensors import GeneratorArg, append_dims, check_inside, check_not_nan, compute_dtype, interval, normal_noise
from diffusion_schemes.specs.base import SpecBacked
from diffusion_schemes.specs.config import resolve_weighting
from diffusion_schemes.weightings.base import SNRWeighting, weight_for

__all__ = ["BaseNoiseSchedule"]

#: ``preserving``: ``alpha^2 + sigma^2 = 1``; ``exploding``: ``alpha = 1``; ``custom``: the
#: schedule overrides :meth:`BaseNoiseSchedule.get_alpha_sigma` (e.g. flow matching).
VARIANCE_TYPES = ("preserving", "exploding", "custom")


def _nan_log_snr(bad: list[float]) -> DomainError:
    return DomainError(f"log_snr contains NaN (got {bad}); a log-SNR is any real number, +-inf included")


class BaseNoiseSchedule(SpecBacked, abc.ABC):
    """Abstract noise schedule described by its log-SNR ``lambda(t)``.

    Subclasses implement :meth:`get_log_snr`, :meth:`get_t_from_log_snr`, :meth:`domain`,
    :meth:`sample_time` and :meth:`timesteps`; they may override :meth:`dlog_snr_dt` (the
    default differentiates :meth:`get_log_snr` with autograd) and :meth:`noise_level`
    with closed forms.

    Args:
        name: the schedule's name.
        variance_type: ``"preserving"``, ``"exploding"`` or ``"custom"``.
        weighting: the loss weighting: ``"default"`` (the scheme's own, see
            :meth:`default_weighting`), ``None`` (uniform in the loss's prediction type), a
            registered name (``"sigmoid"``), a config mapping or an object called as
            ``w(log_snr, schedule=None)`` with a ``loss_type``.

    **The** ``training`` **flag.** ``t`` is the schedule's native time in both modes (``t = sigma``
    for EDM, VE and iDDPM; ``t`` in ``[eps, 1]`` for VP), never a fraction in ``[0, 1]``. The flag
    says which of the scheme's two uses a time belongs to: ``True`` for a time drawn for the loss
    (:meth:`sample_time`, :meth:`add_noise`, the loss call it so), ``False`` (the default) for a
    sampling time (:meth:`timesteps`, solvers). The built-in schemes have one ``lambda(t)`` for
    both, so every method returns the same values for either flag; the flag only names the domain
    in error messages. A schedule that defines a different ``lambda`` for training must make
    :meth:`get_log_snr`, :meth:`get_t_from_log_snr` and :meth:`dlog_snr_dt` agree for each flag.
    BayesFlow's flag means something else (``t`` in ``[0, 1]`` through the training distribution
    or the sampling grid); the ``diffusion-schemes-bayesflow`` distribution provides that.
    Methods taking a log-SNR also accept BayesFlow's keyword ``log_snr_t=`` (deprecated: it
    warns with ``DeprecationWarning``; pass ``log_snr``).

    The built-in schemes are subclasses, built by name:

    >>> import diffusion_schemes as ds
    >>> schedule = ds.create("noise_schedule", "vp")
    >>> isinstance(schedule, ds.BaseNoiseSchedule), schedule.variance_type, schedule.weighting
    (True, 'preserving', SNRWeighting())
    """

    #: The open interval of times where lambda(t) is finite; times outside it are an error.
    t_limits: tuple[float, float] = (0.0, math.inf)
    #: The variance type of a schedule built from a spec (one written by hand passes it).
    variance_type: str = "custom"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in LOG_SNR_METHODS:  # BayesFlow-style keyword calls reach overrides too
            if name in cls.__dict__:
                setattr(cls, name, accept_log_snr_t(cls.__dict__[name]))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if self._built_from_spec(args, kwargs):  # the arguments are the spec's fields
            spec = self._bind_spec(args, kwargs)
            name, variance_type, weighting = spec.name, type(self).variance_type, getattr(spec, "weighting", None)
        else:
            name, variance_type, weighting = self._unspecced(*args, **kwargs)
        if variance_type not in VARIANCE_TYPES:
            raise InvalidArgumentError(f"variance_type must be one of {VARIANCE_TYPES}, got {variance_type!r}")
        if variance_type == "custom" and type(self).get_alpha_sigma is BaseNoiseSchedule.get_alpha_sigma:
            raise ArgumentTypeError(f"{type(self).__name__} has variance_type 'custom' and must override get_alpha_sigma")
        self.name = name
        self.variance_type = variance_type
        self.weighting = resolve_weighting(weighting, self.default_weighting)

    @staticmethod
    def _unspecced(name: str, variance_type: str, weighting: Any = None) -> tuple[str, str, Any]:
        """The arguments of a schedule without ``spec_class``: its name, variance type and weighting."""
        return name, variance_type, weighting

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def get_log_snr(self, t: Any, training: bool = False) -> torch.Tensor:
        """``lambda(t)``, the log signal-to-noise ratio at diffusion time ``t``.

        ``training`` selects the training-time schedule where a scheme defines one apart.

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> ve = ds.create("noise_schedule", "ve")        # t = sigma: lambda = -2 ln t
        >>> ve.get_log_snr(torch.tensor([0.5, 2.0]))
        tensor([ 1.3863, -1.3863])
        """

    @abc.abstractmethod
    def get_t_from_log_snr(self, log_snr: Any, training: bool = False) -> torch.Tensor:
        """The diffusion time whose log-SNR is ``log_snr`` (inverse of :meth:`get_log_snr`).

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> vp = ds.create("noise_schedule", "vp")
        >>> t = torch.tensor([0.001, 0.5, 1.0], dtype=torch.float64)
        >>> vp.get_t_from_log_snr(vp.get_log_snr(t))
        tensor([0.0010, 0.5000, 1.0000], dtype=torch.float64)
        """

    @abc.abstractmethod
    def domain(self, training: bool = False) -> tuple[float, float]:
        """``(t_min, t_max)``: the finite interval where the schedule samples, or where its training
        times fall (for an unbounded training distribution, an interval holding nearly all draws).

        >>> import diffusion_schemes as ds
        >>> vp = ds.create("noise_schedule", "vp")
        >>> vp.domain(), vp.domain(training=True)
        ((0.001, 1.0), (1e-05, 1.0))
        """

    def sample_time(self, n: int, generator: torch.Generator | None = None, device: Any = None) -> torch.Tensor:
        """``n`` diffusion times drawn from the training distribution.

        By default ``time_from_uniform(u)`` with ``u ~ U(0, 1)`` drawn in float64; a schedule
        overrides either this method or :meth:`time_from_uniform`.

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> vp = ds.create("noise_schedule", "vp")           # t ~ U(1e-5, 1)
        >>> t = vp.sample_time(1000, generator=torch.Generator().manual_seed(0))
        >>> t.shape, bool(((t >= 1e-5) & (t <= 1)).all())
        (torch.Size([1000]), True)
        """
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        return self.time_from_uniform(u).to(torch.get_default_dtype())

    def time_from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """The inverse CDF of the training distribution of t, at ``u`` in ``[0, 1)``.

        Stratified (low-discrepancy) draws of the loss push ``u_i = (i + U) / B`` through it.

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> ve = ds.create("noise_schedule", "ve")           # log-uniform sigma in [0.02, 100]
        >>> ve.time_from_uniform(torch.tensor([0.0, 0.5], dtype=torch.float64))
        tensor([0.0200, 1.4142], dtype=torch.float64)
        """
        raise NotImplementedError(
            f"{type(self).__name__} states no inverse CDF of its training times; implement "
            "time_from_uniform(u) (or sample_time) to draw training times"
        )

    def has_inverse_cdf(self) -> bool:
        """Whether :meth:`time_from_uniform` is implemented (needed for stratified draws)."""
        return type(self).time_from_uniform is not BaseNoiseSchedule.time_from_uniform

    @abc.abstractmethod
    def timesteps(self, num_steps: int, device: Any = None) -> torch.Tensor:
        """``num_steps + 1`` decreasing sampling times: ``num_steps`` in the domain, then 0.

        The final 0 stands for noise level 0 (the clean sample); no solver evaluates a
        model there. Use :meth:`_with_zero` to append it.

        >>> import diffusion_schemes as ds
        >>> ds.create("noise_schedule", "vp").timesteps(4)    # 1 + i/(N-1) (eps_s - 1), then 0
        tensor([1.0000, 0.6670, 0.3340, 0.0010, 0.0000], dtype=torch.float64)
        """

    # ------------------------------------------------------------------ derived from lambda
    def dlog_snr_dt(self, t: Any, training: bool = False) -> torch.Tensor:
        """``d lambda / dt`` at time ``t`` (autograd of :meth:`get_log_snr` unless overridden).

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> vp = ds.create("noise_schedule", "vp")           # VP states a closed form
        >>> t = torch.tensor([0.1, 0.5], dtype=torch.float64)
        >>> by_autograd = ds.BaseNoiseSchedule.dlog_snr_dt(vp, t)
        >>> torch.allclose(vp.dlog_snr_dt(t), by_autograd, rtol=1e-12, atol=0)
        True
        """
        t = self._t(t, training)
        with torch.enable_grad():
            tt = t.detach().clone().requires_grad_(True)
            lam = self.get_log_snr(tt, training)
            (grad,) = torch.autograd.grad(lam.sum(), tt)
        return grad

    def derivative_log_snr(self, log_snr: Any, training: bool = False) -> torch.Tensor:
        """``beta(t) = d/dt log(1 + exp(-lambda(t)))`` at the time whose log-SNR is ``log_snr``.

        Equal to ``-lambda'(t) sigmoid(-lambda)``; for variance preserving it is the forward SDE's
        ``g^2`` (see :meth:`get_drift_diffusion` for the general case).

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> ve = ds.create("noise_schedule", "ve")     # at t = 1: lambda = 0, -lambda' = 2, sigmoid(0) = 1/2
        >>> ve.derivative_log_snr(ve.get_log_snr(torch.tensor(1.0)))
        tensor(1.)
        """
        log_snr = self._log_snr(log_snr)
        t = self.get_t_from_log_snr(log_snr, training)
        return -self.dlog_snr_dt(t, training) * torch.sigmoid(-log_snr)

    def noise_level(self, t: Any) -> torch.Tensor:
        """``sigma(t) / alpha(t) = exp(-lambda(t) / 2)``: the noise level of the unscaled latent.

        What the matching preconditioner's ``sigma(t)`` returns, and what samplers step in.

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> vp = ds.create("noise_schedule", "vp")
        >>> t = torch.tensor(0.5, dtype=torch.float64)    # sqrt(exp(19.9 t^2/2 + 0.1 t) - 1)
        >>> bool(torch.isclose(vp.noise_level(t), torch.expm1(19.9 / 2 * t**2 + 0.1 * t).sqrt()))
        True
        """
        return torch.exp(-self.get_log_snr(t) / 2)

    def log_snr_and_noise_level(self, t: Any, training: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lambda(t), noise_level(t))`` from one domain check: what a training step needs of ``t``.

        By default the noise level is ``exp(-lambda / 2)`` of that log-SNR (no second call, no second
        check); a schedule whose time is its noise level returns the time itself.

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> vp = ds.create("noise_schedule", "vp")
        >>> t = torch.tensor([0.5], dtype=torch.float64)
        >>> lam, level = vp.log_snr_and_noise_level(t, training=True)
        >>> bool(torch.equal(lam, vp.get_log_snr(t))), bool(torch.isclose(level, vp.noise_level(t)))
        (True, True)
        """
        log_snr = self.get_log_snr(t, training)
        return log_snr, torch.exp(log_snr * -0.5)

    def noise_level_derivative(self, t: Any) -> torch.Tensor:
        """``d noise_level / dt = -lambda'(t) / 2 * noise_level(t)``.

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> ds.create("noise_schedule", "ve").noise_level_derivative(torch.tensor([0.5, 3.0]))   # t = sigma
        tensor([1., 1.])
        """
        return -0.5 * self.dlog_snr_dt(t) * self.noise_level(t)

    def get_alpha_sigma(self, log_snr: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, sigma)`` of the forward process for this log-SNR, by variance type.

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> ds.create("noise_schedule", "vp").get_alpha_sigma(torch.tensor([0.0]))   # alpha^2 = sigmoid(lambda)
        (tensor([0.7071]), tensor([0.7071]))
        >>> ds.create("noise_schedule", "ve").get_alpha_sigma(torch.tensor([0.0]))   # alpha = 1
        (tensor([1.]), tensor([1.]))
        """
        log_snr = self._log_snr(log_snr)
        if self.variance_type == "exploding":
            return torch.ones_like(log_snr), torch.exp(-log_snr / 2)
        return torch.sigmoid(log_snr).sqrt(), torch.sigmoid(-log_snr).sqrt()

    def dlog_alpha_dlog_snr(self, log_snr: Any) -> torch.Tensor:
        """``d log alpha / d lambda``: 0 when exploding, ``sigmoid(-lambda) / 2`` when preserving.

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> ds.create("noise_schedule", "vp").dlog_alpha_dlog_snr(torch.tensor([0.0]))
        tensor([0.2500])
        """
        log_snr = self._log_snr(log_snr)
        if self.variance_type == "exploding":
            return torch.zeros_like(log_snr)
        if self.variance_type == "preserving":
            return 0.5 * torch.sigmoid(-log_snr)
        with torch.enable_grad():
            lam = log_snr.detach().clone().requires_grad_(True)
            alpha, _ = self.get_alpha_sigma(lam)
            (grad,) = torch.autograd.grad(alpha.log().sum(), lam)
        return grad

    def get_drift_diffusion(
        self, log_snr: Any, x: torch.Tensor | None = None, training: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Forward SDE ``dz = f(z, t) dt + g(t) dW``: ``(f(z, t), g^2)`` if ``x`` is given, else ``g^2``.

        Derived from the forward process: ``f = (d log alpha / dt) z`` and
        ``g^2 = -lambda'(t) sigma(t)^2``. The probability-flow ODE is
        ``dz = [f - g^2 / 2 * score] dt`` and the reverse SDE
        ``dz = [f - g^2 * score] dt + g dW``. Shapes follow ``log_snr``; pass it
        shaped ``(B, 1, ..., 1)`` to broadcast against ``x``.

        For VP this is Song et al. 2021 (eq. 11), ``f = -beta(t)/2 z``, ``g^2 = beta(t)`` with
        ``beta(t) = beta_min + beta_d t``; for VE, ``f = 0`` and ``g^2 = d sigma^2/dt``:

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> vp = ds.create("noise_schedule", "vp")
        >>> lam = vp.get_log_snr(torch.tensor([[0.5]], dtype=torch.float64))       # beta(0.5) = 10.05
        >>> vp.get_drift_diffusion(lam, x=torch.ones(1, 2, dtype=torch.float64))
        (tensor([[-5.0250, -5.0250]], dtype=torch.float64), tensor([[10.0500]], dtype=torch.float64))
        >>> ve = ds.create("noise_schedule", "ve")
        >>> ve.get_drift_diffusion(ve.get_log_snr(torch.tensor([2.0])))   # d t^2/dt = 2t
        tensor([4.])
        """
        log_snr = self._log_snr(log_snr)
        t = self.get_t_from_log_snr(log_snr, training)
        dlam = self.dlog_snr_dt(t, training)
        _, sigma = self.get_alpha_sigma(log_snr)
        g2 = -dlam * sigma**2
        if x is None:
            return g2
        f = dlam * self.dlog_alpha_dlog_snr(log_snr)
        return f * x, g2

    # ------------------------------------------------------------------ weighting
    def default_weighting(self) -> Any:
        """The scheme's own weighting (Karras et al. 2022, Table 1): ``1/sigma^2`` on the x0-loss.

        >>> import diffusion_schemes as ds
        >>> ds.create("noise_schedule", "vp").default_weighting()
        SNRWeighting()
        """
        return SNRWeighting()

    def loss_weight(self, t: Any, prediction_type: str = "x0") -> torch.Tensor:
        """The loss weight at times ``t`` for a loss on ``prediction_type`` (converted from the weighting's own).

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> ve = ds.create("noise_schedule", "ve")              # default: 1/sigma^2 on the x0-loss
        >>> ve.loss_weight(torch.tensor([0.5, 2.0]))
        tensor([4.0000, 0.2500])
        >>> ve.loss_weight(torch.tensor([0.5, 2.0]), "epsilon")  # the same objective on epsilon
        tensor([1., 1.])
        """
        return weight_for(self.weighting, self.get_log_snr(t, training=True), prediction_type, schedule=self)

    # ------------------------------------------------------------------ training and sampling helpers
    def add_noise(
        self, x0: torch.Tensor, t: Any, noise: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``z_t = alpha(t) x0 + sigma(t) noise`` (the scaled latent of the forward process).

        ``z_t / alpha(t)`` is the unscaled latent that predictors see.

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> vp = ds.create("noise_schedule", "vp")
        >>> z = vp.add_noise(torch.ones(2, 3), torch.tensor([0.001, 1.0]), noise=torch.zeros(2, 3))
        >>> z[:, 0]                                              # alpha(t) = exp(-(19.9 t^2/2 + 0.1 t)/2)
        tensor([0.9999, 0.0066])
        """
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        lam = append_dims(self.get_log_snr(t, training=True), x0.ndim)
        alpha, sigma = self.get_alpha_sigma(lam)
        return (alpha * x0 + sigma * noise).to(x0.dtype)

    def sigmas(self, num_steps: int, device: Any = None) -> torch.Tensor:
        """The noise levels of :meth:`timesteps`: ``num_steps`` decreasing values, then 0.

        >>> import diffusion_schemes as ds
        >>> ds.create("noise_schedule", "vp").sigmas(2)         # sigma(1), sigma(1e-3), 0
        tensor([1.5217e+02, 1.0486e-02, 0.0000e+00], dtype=torch.float64)
        """
        t = self.timesteps(check_num_steps(num_steps), device=device)
        return torch.cat([self.noise_level(t[:-1]), torch.zeros_like(t[-1:])])

    def init_latents(
        self,
        shape: Any,
        generator: GeneratorArg = None,
        device: Any = None,
        dtype: torch.dtype | None = None,
        *,
        x0: torch.Tensor | None = None,
        sigma: Any = None,
    ) -> torch.Tensor:
        """Unscaled latents at the first noise level of a grid: ``x0 + sigma * eps``, ``eps ~ N(0, I)``.

        By default ``x0 = 0`` and ``sigma`` is the first noise level of :meth:`sigmas` (pure
        noise at the top of the schedule). For img2img give the image ``x0`` and the first noise
        level ``sigma`` of the grid the sampler will follow (a scalar, or one per sample); ``shape``
        must then be ``x0``'s shape, whose device and dtype are used unless given. ``generator`` may
        be one ``torch.Generator`` or a list of one per sample (each on ``device``): sample ``i``'s
        noise then comes from ``generator[i]`` alone, whatever batch it is drawn in
        (:func:`~diffusion_schemes.solvers.noise_samplers.normal_noise`).

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> edm = ds.create("noise_schedule", "edm")                 # sigma_max = 80
        >>> x = edm.init_latents((2, 3, 8, 8), generator=torch.Generator().manual_seed(0))
        >>> x.shape, round(float(x.std() / 80), 1)
        (torch.Size([2, 3, 8, 8]), 1.0)
        >>> image = torch.ones(2, 3, 8, 8)
        >>> x = edm.init_latents(image.shape, generator=torch.Generator().manual_seed(0), x0=image, sigma=0.5)
        >>> eps = torch.randn(image.shape, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.equal(x, image + 0.5 * eps))
        True
        >>> gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]   # one per sample
        >>> whole = edm.init_latents((3, 2), generator=gens([0, 1, 2]))
        >>> bool(torch.equal(whole[2:], edm.init_latents((1, 2), generator=gens([2]))))
        True
        """
        shape = tuple(shape)
        if x0 is not None:
            x0 = torch.as_tensor(x0)
            if tuple(x0.shape) != shape:
                raise InvalidArgumentError(f"shape {shape} differs from x0's shape {tuple(x0.shape)}; pass x0.shape")
            device = x0.device if device is None else device
            dtype = (x0.dtype if x0.is_floating_point() else torch.float32) if dtype is None else dtype
        dtype = torch.float32 if dtype is None else dtype
        if sigma is None:
            sigma = self.sigmas(2)[0]
        sigma = torch.as_tensor(sigma)
        if sigma.ndim > 1 or (sigma.ndim == 1 and (len(shape) == 0 or sigma.shape[0] != shape[0])):
            raise InvalidArgumentError(
                f"sigma must be a scalar or one value per sample ({shape[0] if len(shape) else '?'},), got shape "
                f"{tuple(sigma.shape)}"
            )
        if sigma.device.type == "cpu" and not bool((torch.isfinite(sigma) & (sigma > 0)).all()):
            raise DomainError(
                f"init_latents needs a positive, finite noise level sigma, got {sigma.tolist()}; "
                "pass the first value of the grid the sampler will follow"
            )
        noise = normal_noise(shape, generator, device=device, dtype=dtype)
        sigma = append_dims(sigma.to(device=noise.device, dtype=dtype), noise.ndim)
        return noise * sigma if x0 is None else x0.to(device=noise.device, dtype=dtype) + sigma * noise

    def get_denoiser(self, **kwargs: Any) -> Any:
        """The right-hand side of the probability-flow ODE or reverse SDE for a predictor.

        See :func:`diffusion_schemes.make_denoiser` for the arguments.

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> edm = ds.create("noise_schedule", "edm")
        >>> denoiser = edm.get_denoiser(x0_predictor=lambda x, t: torch.zeros_like(x))
        >>> type(denoiser).__name__, denoiser.denoising_type
        ('Denoiser', 'ode')
        """
        from diffusion_schemes.sampling.denoiser import make_denoiser

        return make_denoiser(self, **kwargs)

    # ------------------------------------------------------------------ config
    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> BaseNoiseSchedule:
        """Rebuild a schedule from :meth:`get_config`.

        >>> import diffusion_schemes as ds
        >>> vp = ds.create("noise_schedule", {"name": "vp", "epsilon_s": 0.002, "weighting": "sigmoid"})
        >>> type(vp).from_config(vp.get_config()) == vp
        True
        """
        return cls(**{k: v for k, v in config.items() if k != "name"})

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()  # type: ignore[union-attr]

    __hash__ = object.__hash__

    # ------------------------------------------------------------------ validation
    def validate(self, num: int = 257) -> None:
        """Check the schedule: finite at both ends of its domains, lambda decreasing, inverse consistent.

        Also that :meth:`noise_level` is ``exp(-lambda/2)`` and that a closed-form
        :meth:`dlog_snr_dt` agrees with autograd of :meth:`get_log_snr`, on ``num`` points of
        each domain (sampling and training).

        Raises ``ValueError`` listing every failed check with the values seen.

        >>> import diffusion_schemes as ds
        >>> ve = ds.create("noise_schedule", "ve")
        >>> ve.validate()                                     # passes silently
        >>> class Rising(type(ve)):
        ...     def get_log_snr(self, t, training=False):
        ...         return 2 * self._t(t, training).log()    # wrong sign: increasing in t
        >>> Rising().validate()
        Traceback (most recent call last):
          ...
        diffusion_schemes.errors.InvalidArgumentError: noise schedule 've' is invalid:
          - sampling: lambda(t) is not decreasing near t=0.02
        ...
        """
        from diffusion_schemes.schedules.checks import check_schedule

        check_schedule(self, BaseNoiseSchedule.dlog_snr_dt, num)

    # ------------------------------------------------------------------ helpers for subclasses
    def _t(self, t: Any, training: bool = False) -> torch.Tensor:
        """``t`` as a float tensor (float32 or wider); a clear error outside ``t_limits``.

        The check reads nothing on the host (:func:`~diffusion_schemes.tensors.check_inside`), so
        ``get_log_snr`` and ``noise_level`` stay free of device synchronisation on the training path.
        """
        # a tensor is kept as it is: no call; and no name read from torch (under torch.compile each is a guard): only
        # tensors have new_tensor, and a dtype's own attributes are constants there
        if not hasattr(t, "new_tensor"):
            t = torch.as_tensor(t)
        if not (t.dtype.is_floating_point and t.dtype.itemsize >= 4):  # float32 and float64 as they are
            t = t.to(compute_dtype(t.dtype))
        lo, hi = self.t_limits
        check_inside(t, lo, hi, lambda bad: self._bad_time(bad, training))
        return t

    def _bad_time(self, bad: list[float], training: bool) -> DomainError:
        lo, hi = self.t_limits
        d_lo, d_hi = self.domain(training)
        return DomainError(
            f"{self.name}: diffusion time t={bad} is outside {interval(lo, hi)}, where lambda(t) is "
            f"defined; this schedule {'trains' if training else 'samples'} on [{d_lo:g}, {d_hi:g}]"
        )

    @staticmethod
    def _log_snr(log_snr: Any) -> torch.Tensor:
        """``log_snr`` as a float tensor, rejecting NaN (checked without a host read)."""
        log_snr = torch.as_tensor(log_snr)
        if not log_snr.is_floating_point():
            log_snr = log_snr.to(torch.float32)
        check_not_nan(log_snr, _nan_log_snr)
        return log_snr

    @staticmethod
    def _step_fractions(num_steps: int, device: Any = None) -> torch.Tensor:
        """``i / (N - 1)`` for ``i = 0 .. N - 1`` in float64 (``[0]`` for one step); N must be >= 1."""
        num_steps = check_num_steps(num_steps)
        return torch.arange(num_steps, dtype=torch.float64, device=device) / max(num_steps - 1, 1)

    @staticmethod
    def _with_zero(t: torch.Tensor) -> torch.Tensor:
        """Append the final 0 to ``num_steps`` sampling times."""
        return torch.cat([t, torch.zeros_like(t[:1])])


for _name in LOG_SNR_METHODS:
    if hasattr(BaseNoiseSchedule, _name):
        setattr(BaseNoiseSchedule, _name, accept_log_snr_t(getattr(BaseNoiseSchedule, _name)))
del _name
