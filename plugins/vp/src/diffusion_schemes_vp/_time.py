"""The VP map between time and noise level, shared by the preconditioner and the schedule.

Song et al. 2021 (eq. 33) with ``beta(t) = beta_min + beta_d t`` give
``alpha(t)^2 = exp(-E(t))`` with ``E(t) = beta_d t^2 / 2 + beta_min t``, so the noise level is
``sigma(t) = sqrt(exp(E(t)) - 1)`` (Karras et al. 2022, Table 1) and the log-SNR
``lambda(t) = -log(expm1(E(t)))``.
"""

from __future__ import annotations

import dataclasses

import torch

from diffusion_schemes.errors import InvalidArgumentError


@dataclasses.dataclass(frozen=True)
class VPTime:
    """``sigma(t)``, ``log sigma(t)^2``, its derivative and the closed-form inverses for VP.

    The inverse solves ``beta_d t^2 / 2 + beta_min t = L`` with ``L = log(1 + sigma^2)`` in the
    form ``t = 2 L / (beta_min + sqrt(beta_min^2 + 2 beta_d L))``, which has no cancellation
    (the textbook ``(sqrt(beta_min^2 + 2 beta_d L) - beta_min) / beta_d`` loses every digit
    for small L).

    >>> import torch
    >>> from diffusion_schemes_vp import VPTime
    >>> vp = VPTime(beta_d=19.9, beta_min=0.1)
    >>> t = torch.tensor([1e-5, 0.5, 1.0], dtype=torch.float64)
    >>> sigma = vp.noise_level(t)
    >>> torch.allclose(sigma, torch.expm1(19.9 / 2 * t**2 + 0.1 * t).sqrt())
    True
    >>> torch.allclose(vp.time_from_noise_level(sigma), t, rtol=1e-12, atol=0)
    True
    """

    beta_d: float
    beta_min: float

    def __post_init__(self) -> None:
        if not (self.beta_d > 0 and self.beta_min >= 0):
            raise InvalidArgumentError(
                f"VP needs beta_d > 0 and beta_min >= 0 (beta(t) = beta_min + beta_d t), "
                f"got beta_d={self.beta_d}, beta_min={self.beta_min}"
            )

    def exponent(self, t: torch.Tensor) -> torch.Tensor:
        """``E(t) = beta_d t^2 / 2 + beta_min t = log(1 + sigma(t)^2)``."""
        return 0.5 * self.beta_d * t**2 + self.beta_min * t

    def log_noise_level_sq(self, t: torch.Tensor) -> torch.Tensor:
        """``log sigma(t)^2 = log(expm1(E)) = E + log(-expm1(-E))`` (finite for any ``t > 0``)."""
        e = self.exponent(t)
        return e + torch.log(-torch.expm1(-e))

    def dlog_noise_level_sq_dt(self, t: torch.Tensor) -> torch.Tensor:
        """``d log sigma(t)^2 / dt = E'(t) / (1 - exp(-E(t)))`` with ``E'(t) = beta_d t + beta_min``."""
        return (self.beta_d * t + self.beta_min) / -torch.expm1(-self.exponent(t))

    def noise_level(self, t: torch.Tensor) -> torch.Tensor:
        """``sigma(t) = sqrt(exp(E(t)) - 1)``."""
        return torch.exp(0.5 * self.log_noise_level_sq(t))

    def time_from_exponent(self, L: torch.Tensor) -> torch.Tensor:
        """The ``t >= 0`` with ``E(t) = L``, cancellation free."""
        return 2 * L / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * self.beta_d * L))

    def time_from_noise_level(self, sigma: torch.Tensor) -> torch.Tensor:
        """``sigma^{-1}(sigma)``, with ``L = log1p(sigma^2)``."""
        return self.time_from_exponent(torch.log1p(sigma**2))

    def time_from_log_noise_level_sq(self, log_sigma_sq: torch.Tensor) -> torch.Tensor:
        """The time whose ``log sigma^2`` is given, with ``L = log(1 + exp(log sigma^2))`` (stable)."""
        return self.time_from_exponent(torch.logaddexp(log_sigma_sq, torch.zeros_like(log_sigma_sq)))
