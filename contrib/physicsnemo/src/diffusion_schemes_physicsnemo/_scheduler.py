"""A diffusion-schemes noise schedule speaking PhysicsNeMo's noise-scheduler protocol.

PhysicsNeMo 2.2.2's ``sample`` calls ``timesteps(num_steps, device=, dtype=)`` and a denoiser
``(x, t) -> dx/dt`` from ``get_denoiser``; its ``MSEDSMLoss`` calls ``sample_time(B, device=,
dtype=)``, ``add_noise(x0, t)``, ``model(x_t, t, condition=...)`` and ``loss_weight(t)`` (an
x0-prediction loss); ``init_latents(spatial_shape, tN)`` draws the first latent. Here:

- **time** is, by default (``time="schedule"``), the schedule's own diffusion time (``t = sigma``
  for EDM, VE, iDDPM; VP's ``t`` in ``[epsilon, 1]``), the time its preconditioner reads, as
  PhysicsNeMo's schedulers do; with ``time="noise_level"`` it is the noise level ``s`` itself
  (EDM's convention, for every schedule);
- **the latent** is the unscaled latent of this library, ``x_t = x0 + s(t) eps`` with the noise
  level ``s(t) = sigma / alpha = exp(-lambda(t) / 2)``: in PhysicsNeMo's linear-Gaussian terms
  ``alpha = 1`` and ``sigma = s(t)``, whatever the schedule's own variance type. Every
  preconditioner of this library (and PhysicsNeMo's, whose inputs are unscaled too) takes it as
  it is;
- **the denoiser** is the probability-flow ODE ``dx/dt = s'(t) / s(t) (x - D(x; s))``, or the
  reverse-SDE drift ``2 s'(t) / s(t) (x - D)`` (the solver adds ``g dW``, ``g^2 = 2 s s'``; with
  ``time="noise_level"``, ``s' = 1``), where
  ``D`` is the x0-prediction (Karras et al. 2022, eq. 4 with scale 1). A preconditioner of this
  library given as predictor is called at the noise level (``forward_sigma``), so any
  preconditioner runs with any schedule in PhysicsNeMo's sampler;
- **the loss weight** is the schedule's weighting for an x0-loss (``schedule.loss_weight(t)``),
  so PhysicsNeMo's ``MSEDSMLoss`` computes the same number as ``ds.MSEDSMLoss``.

PhysicsNeMo's solvers step in ``t``. In the noise level they do what ``ds.sample`` does (the
same samples for every schedule), and PhysicsNeMo's EDM stochastic solvers add exactly the
noise of EDM's churn (Karras et al. 2022, Algorithm 2). In a schedule's own time that differs
from the noise level (VP, cosine, flow matching) they integrate the ODE in that time, as with
PhysicsNeMo's own ``VPNoiseScheduler``, and the churn of the stochastic solvers, which
PhysicsNeMo computes to first order from ``sigma_fn``, ``sigma_inv_fn`` and ``diffusion_fn``
(this object's :meth:`~PhysicsNeMoScheduler.sigma`, :meth:`~PhysicsNeMoScheduler.sigma_inv`,
:meth:`~PhysicsNeMoScheduler.diffusion`), is only approximate: use ``time="noise_level"`` there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

import diffusion_schemes as ds
from diffusion_schemes.errors import ArgumentTypeError, InvalidArgumentError
from diffusion_schemes.tensors import append_dims, compute_dtype
from diffusion_schemes.weightings import weight_for

__all__ = ["PhysicsNeMoScheduler", "as_physicsnemo"]

#: The predictors :meth:`PhysicsNeMoScheduler.get_denoiser` accepts (one of them).
PREDICTORS = ("x0_predictor", "score_predictor", "epsilon_predictor", "v_predictor")
#: What PhysicsNeMo's ``t`` is: the schedule's own time, or the noise level.
TIMES = ("schedule", "noise_level")


def _build(schedule: Any) -> Any:
    if isinstance(schedule, PhysicsNeMoScheduler):
        return schedule.schedule
    if isinstance(schedule, ds.BaseNoiseSchedule):
        return schedule
    if isinstance(schedule, (str, Mapping, ds.NoiseScheduleSpec)):
        return ds.create("noise_schedule", schedule)
    hint = (
        " It looks like a PhysicsNeMo scheduler already; pass a diffusion-schemes schedule (a name such as 'vp')."
        if type(schedule).__module__.startswith("physicsnemo")
        else ""
    )
    raise ArgumentTypeError(
        f"as_physicsnemo needs a diffusion-schemes noise schedule, its name or its config, got "
        f"{type(schedule).__name__}.{hint}"
    )


def _build_discretization(discretization: Any) -> Any:
    if discretization is None or hasattr(discretization, "sigmas"):
        return discretization
    return ds.create("discretization", discretization)


def _batch_times(t: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.ndim != 1:
        raise InvalidArgumentError(f"{name} must be one diffusion time per sample, shape (B,), got shape {tuple(t.shape)}")
    return t


class PhysicsNeMoScheduler:
    """A diffusion-schemes schedule as a PhysicsNeMo noise scheduler (see the module for the conventions).

    Args:
        schedule: a built schedule, a scheme name or a config (what ``ds.create`` takes).
        discretization: where :meth:`timesteps` puts the sampling steps: ``None`` for the
            schedule's own grid, or a discretization (built, a name such as ``"karras"`` or a
            config), whose noise levels are mapped to the schedule's time.
        time: ``"schedule"`` (the schedule's own time) or ``"noise_level"`` (see the module).

    >>> import torch
    >>> from diffusion_schemes_physicsnemo import as_physicsnemo
    >>> scheduler = as_physicsnemo({"name": "edm", "sigma_data": 0.5})
    >>> t = torch.tensor([0.5, 2.0])
    >>> scheduler.add_noise(torch.zeros(2, 3), t, noise=torch.ones(2, 3))[:, 0]    # x0 + s(t) eps
    tensor([0.5000, 2.0000])
    >>> scheduler.loss_weight(t)          # EDM's (s^2 + sigma_data^2) / (s sigma_data)^2
    tensor([8.0000, 4.2500])
    """

    def __init__(self, schedule: Any, discretization: Any = None, time: str = "schedule") -> None:
        if time not in TIMES:
            raise InvalidArgumentError(f"time must be one of {TIMES}, got {time!r}")
        self.schedule = _build(schedule)
        self.discretization = _build_discretization(discretization)
        self.time = time

    @property
    def _by_level(self) -> bool:
        return self.time == "noise_level"

    def schedule_time(self, t: torch.Tensor) -> torch.Tensor:
        """The schedule's own time at PhysicsNeMo's ``t`` (``t`` itself unless ``time="noise_level"``)."""
        t = torch.as_tensor(t)
        return self.schedule.get_t_from_log_snr(-2 * t.log()).to(t.dtype) if self._by_level else t

    # ------------------------------------------------------------------ the noise level
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """The noise level ``s(t) = exp(-lambda(t) / 2)``: the latent's noise at time ``t``."""
        return torch.as_tensor(t) if self._by_level else self.schedule.noise_level(t)

    def sigma_inv(self, sigma: torch.Tensor) -> torch.Tensor:
        """The time whose noise level is ``sigma`` (inverse of :meth:`sigma`), in ``sigma``'s dtype."""
        sigma = torch.as_tensor(sigma)
        return sigma if self._by_level else self.schedule.get_t_from_log_snr(-2 * sigma.log()).to(sigma.dtype)

    def sigma_dot(self, t: torch.Tensor) -> torch.Tensor:
        """``d s / dt``."""
        return torch.ones_like(torch.as_tensor(t)) if self._by_level else self.schedule.noise_level_derivative(t)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """1: the latent is unscaled (``x_t = x0 + s(t) eps``)."""
        return torch.ones_like(torch.as_tensor(t))

    def alpha_dot(self, t: torch.Tensor) -> torch.Tensor:
        """0 (see :meth:`alpha`)."""
        return torch.zeros_like(torch.as_tensor(t))

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The forward SDE's drift of the unscaled latent: 0."""
        return torch.zeros_like(x)

    def diffusion(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``g^2 = d s^2 / dt = 2 s s'``, shaped ``(B, 1, ..., 1)`` against ``x``."""
        t = _batch_times(t, "t")
        return append_dims(2 * self.sigma(t) * self.sigma_dot(t), x.ndim).to(x.dtype)

    def _level(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``s(t)`` shaped ``(B, 1, ..., 1)`` against ``like``, in its dtype."""
        return append_dims(self.sigma(_batch_times(t, "t")), like.ndim).to(like.dtype)

    def x0_to_score(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The score ``(x0 - x_t) / s^2`` of an x0-prediction."""
        return (x0 - x_t) / self._level(t, x_t) ** 2

    def score_to_x0(self, score: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The x0-prediction ``x_t + s^2 score`` of a score (Tweedie); ``MSEDSMLoss``'s ``score_to_x0_fn``."""
        return x_t + self._level(t, x_t) ** 2 * score

    def epsilon_to_x0(self, epsilon: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The x0-prediction ``x_t - s eps`` of a noise prediction; ``MSEDSMLoss``'s ``epsilon_to_x0_fn``."""
        return x_t - self._level(t, x_t) * epsilon

    # ------------------------------------------------------------------ training
    def sample_time(
        self, N: int, *, device: Any = None, dtype: torch.dtype | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``N`` times from the schedule's training distribution (``schedule.sample_time``)."""
        if isinstance(N, bool) or not isinstance(N, int) or N < 1:
            raise InvalidArgumentError(f"N must be a positive number of times, got {N!r}")
        t = self.schedule.sample_time(N, generator=generator, device=device)
        if self._by_level:
            t = torch.exp(-self.schedule.get_log_snr(t.to(torch.float64), training=True) / 2)
        return t.to(dtype or torch.get_default_dtype())

    def add_noise(
        self,
        x0: torch.Tensor,
        time: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``x0 + s(t) noise`` with the training-time noise level; ``noise`` is drawn when not given."""
        time = _batch_times(time, "time")
        if time.shape[0] != x0.shape[0]:
            raise InvalidArgumentError(f"time has {time.shape[0]} entries but x0 has {x0.shape[0]} samples")
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        elif noise.shape != x0.shape:
            raise InvalidArgumentError(f"noise must be shaped like x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
        level = torch.exp(-self._log_snr(time).to(compute_dtype(x0.dtype)) / 2)
        return x0 + append_dims(level, x0.ndim).to(x0.dtype) * noise

    def _log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """The training log-SNR at PhysicsNeMo's ``t``."""
        return -2 * t.log() if self._by_level else self.schedule.get_log_snr(t, training=True)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """The schedule's weighting at ``t`` for PhysicsNeMo's x0-prediction loss (as ``schedule.loss_weight``)."""
        return weight_for(self.schedule.weighting, self._log_snr(_batch_times(t, "t")), "x0", schedule=self.schedule)

    def diffusion_model(self, model: Any) -> torch.nn.Module:
        """``model`` as PhysicsNeMo's ``MSEDSMLoss`` calls it, ``model(x_t, t, condition=None, **kw)``.

        A preconditioner of this library is called at the noise level ``s(t)``
        (``forward_sigma``), so one of another scheme trains with this schedule; any other model
        is called with the schedule's own time.
        """
        if not callable(model):
            raise ArgumentTypeError(f"model must be callable as model(x, t, condition=None), got {type(model).__name__}")
        return _AtNoiseLevel(model, self)

    # ------------------------------------------------------------------ sampling
    def timesteps(self, num_steps: int, *, device: Any = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``num_steps`` decreasing times of the sampling grid, then 0 (the schedule's or the discretization's)."""
        if self.discretization is None:
            grid = self.schedule.sigmas if self._by_level else self.schedule.timesteps
            t = grid(num_steps, device=device)
        else:
            t = self.discretization.sigmas(num_steps, self.schedule).to(device=device, dtype=torch.float64)
            if not self._by_level:
                t = torch.cat([self.schedule.get_t_from_log_snr(-2 * t[:-1].log()), torch.zeros_like(t[-1:])])
        return t.to(dtype or torch.get_default_dtype())

    def init_latents(
        self,
        spatial_shape: tuple[int, ...],
        tN: torch.Tensor,
        *,
        device: Any = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``s(tN) eps``, shaped ``(B, *spatial_shape)`` with ``B = len(tN)`` (``schedule.init_latents``)."""
        tN = _batch_times(tN, "tN")
        level = self.sigma(tN.to(torch.float64))
        shape = (tN.shape[0], *tuple(spatial_shape))
        return self.schedule.init_latents(shape, generator=generator, device=device, dtype=dtype, sigma=level)

    def get_denoiser(
        self,
        *,
        x0_predictor: Any = None,
        score_predictor: Any = None,
        epsilon_predictor: Any = None,
        v_predictor: Any = None,
        denoising_type: str = "ode",
        condition: Any = None,
        **kwargs: Any,
    ) -> Any:
        """``(x, t) -> dx/dt`` for exactly one predictor (see the module).

        A preconditioner of this library (or a ``functools.partial`` of one) is called at the
        noise level; any other predictor as ``f(x, t)`` with the schedule's own time, also when
        PhysicsNeMo's ``t`` is the noise level (``time="noise_level"``).

        The result is the schedule's own :class:`~diffusion_schemes.sampling.Denoiser`
        (``schedule.get_denoiser``), or with ``time="noise_level"`` the same in the noise level;
        ``condition`` is passed to the predictor at every call.
        """
        if kwargs:
            raise InvalidArgumentError(
                f"unknown argument(s) {sorted(kwargs)} to get_denoiser; it takes one of {', '.join(PREDICTORS)}, "
                "denoising_type and condition"
            )
        denoiser = self.schedule.get_denoiser(
            x0_predictor=x0_predictor,
            score_predictor=score_predictor,
            epsilon_predictor=epsilon_predictor,
            v_predictor=v_predictor,
            denoising_type=denoising_type,
            condition=condition,
        )
        return _InNoiseLevel(denoiser) if self._by_level else denoiser

    def __repr__(self) -> str:
        extra = "" if self.discretization is None else f", discretization={self.discretization!r}"
        extra += "" if not self._by_level else ", time='noise_level'"
        return f"{type(self).__name__}({self.schedule!r}{extra})"


class _InNoiseLevel:
    """A denoiser in the noise level: ``dx/ds = (x - D(x; s)) / s`` (ODE) or twice that (SDE drift)."""

    def __init__(self, denoiser: Any) -> None:
        self.denoiser = denoiser
        self.factor = 2 if denoiser.denoising_type == "sde" else 1

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device)
        rate = append_dims(self.factor / sigma.expand(x.shape[0]), x.ndim).to(x.dtype)
        return rate * (x - self.denoiser.x0_sigma(x, sigma))


class _AtNoiseLevel(torch.nn.Module):
    """A model called by PhysicsNeMo's loss with the schedule's time (see :meth:`PhysicsNeMoScheduler.diffusion_model`)."""

    def __init__(self, model: Any, scheduler: PhysicsNeMoScheduler) -> None:
        super().__init__()
        self.model = model
        self.scheduler = scheduler

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: Any = None, **model_kwargs: Any) -> torch.Tensor:
        if isinstance(self.model, ds.BaseAffinePreconditioner):
            return self.model.forward_sigma(x, self.scheduler.sigma(t), condition, **model_kwargs)
        return self.model(x, self.scheduler.schedule_time(t), condition=condition, **model_kwargs)


def as_physicsnemo(schedule: Any, discretization: Any = None, time: str = "schedule") -> PhysicsNeMoScheduler:
    """Any installed noise schedule as a PhysicsNeMo noise scheduler: a built one, a name or a config.

    ``discretization`` places the sampling steps and ``time`` chooses PhysicsNeMo's ``t`` (see
    :class:`PhysicsNeMoScheduler`); ``time="noise_level"`` makes PhysicsNeMo's solvers integrate
    as ``ds.sample`` does:

    >>> import torch
    >>> from diffusion_schemes_physicsnemo import as_physicsnemo
    >>> scheduler = as_physicsnemo("edm", discretization="karras")
    >>> scheduler.timesteps(2)                   # sigma_max, sigma_min, 0 (time = noise level)
    tensor([8.0000e+01, 2.0000e-03, 0.0000e+00])
    >>> as_physicsnemo("vp", time="noise_level").timesteps(2)      # VP's sigma(1), sigma(1e-3), 0
    tensor([1.5217e+02, 1.0486e-02, 0.0000e+00])
    """
    return PhysicsNeMoScheduler(schedule, discretization, time)
