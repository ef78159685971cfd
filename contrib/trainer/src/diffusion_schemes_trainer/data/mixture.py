"""The Gaussian-mixture data set: an isotropic mixture with its density, score and exact denoiser in closed form.

``p(x) = sum_k pi_k N(x; mu_k, s_k^2 I)``. Adding noise of level ``sigma`` keeps it a mixture,
``p_sigma(x) = sum_k pi_k N(x; mu_k, (s_k^2 + sigma^2) I)``, so everything a diffusion model
learns is known exactly:

- the score ``grad log p_sigma(x) = sum_k r_k(x) (mu_k - x) / (s_k^2 + sigma^2)`` with the
  responsibilities ``r_k(x) = pi_k N_k(x) / p_sigma(x)``;
- the ideal denoiser (the posterior mean, Tweedie's formula
  ``D(x; sigma) = x + sigma^2 grad log p_sigma(x)``, Efron 2011 eq. 1.4), which for a mixture
  is the responsibility-weighted per-component posterior mean
  ``D(x; sigma) = sum_k r_k(x) [mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k)]``.

Sampling with that denoiser is what a perfect model would give, so the gap between it and a
trained model is what training left undone.

>>> import torch
>>> from diffusion_schemes_trainer import GaussianMixture
>>> gm = GaussianMixture(means=[[-1.0, 0.0], [1.0, 0.0]], stds=[0.1, 0.1])
>>> gm.sample(4, generator=torch.Generator().manual_seed(0)).shape
torch.Size([4, 2])
>>> gm.denoise(torch.tensor([[1.0, 0.0]]), sigma=1e-4)   # a mode is its own denoised value
tensor([[1., 0.]])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

import torch

from pydantic import Field

from ..errors import TrainerError
from ..schema import Section
from .base import PointCloud

__all__ = ["GaussianMixture", "GaussianMixtureConfig", "MixtureData"]

#: A number in (0, inf): a standard deviation, a weight.
Positive = Annotated[float, Field(gt=0)]


class GaussianMixture:
    """Isotropic Gaussian mixture ``sum_k pi_k N(mu_k, s_k^2 I)`` in ``d`` dimensions.

    Args:
        means: ``K`` centres of dimension ``d``.
        stds: ``K`` standard deviations ``s_k > 0``.
        weights: ``K`` mixing weights (normalised here); equal when omitted.

    >>> from diffusion_schemes_trainer import GaussianMixture
    >>> gm = GaussianMixture(means=[[0.0, 0.0]], stds=[2.0])
    >>> round(gm.std(), 6)
    2.0
    """

    def __init__(self, means: Sequence[Sequence[float]], stds: Sequence[float], weights: Sequence[float] | None = None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        k = self.means.shape[0]
        w = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if self.means.ndim != 2 or self.stds.shape != (k,) or w.shape != (k,):
            raise TrainerError(
                f"a mixture needs means shaped (K, d), stds (K,) and weights (K,); got {tuple(self.means.shape)}, "
                f"{tuple(self.stds.shape)} and {tuple(w.shape)}"
            )
        if not bool((self.stds > 0).all()) or not bool((w > 0).all()):
            raise TrainerError("mixture stds and weights must all be > 0")
        self.weights = w / w.sum()

    @property
    def dim(self) -> int:
        """The dimension ``d``."""
        return self.means.shape[1]

    def std(self) -> float:
        """Root mean over coordinates of the per-coordinate variance of the mixture."""
        second = (self.weights[:, None] * (self.means**2 + self.stds[:, None] ** 2)).sum(0)
        mean = (self.weights[:, None] * self.means).sum(0)
        return float((second - mean**2).mean().sqrt())

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` float32 draws."""
        return self.sample_labelled(n, generator)[0]

    def sample_labelled(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` float32 draws and the component each was drawn from (its class label)."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[comp] + self.stds[comp, None] * noise).float(), comp

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable component of each point (the Bayes classifier of the data density)."""
        return self._log_components(x, 0.0)[0].argmax(1)

    def _log_components(self, x: torch.Tensor, sigma: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``log pi_k N(x; mu_k, v_k I)`` shaped ``(B, K)`` and the variances ``v_k = s_k^2 + sigma^2``."""
        x = x.to(torch.float64)
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1, 1)
        var = self.stds[None, :].to(x.device) ** 2 + sigma**2  # (B or 1, K)
        sq = ((x[:, None, :] - self.means[None].to(x.device)) ** 2).sum(-1)  # (B, K)
        log_n = -0.5 * sq / var - 0.5 * self.dim * torch.log(2 * math.pi * var)
        return self.weights.to(x.device).log()[None] + log_n, var

    def log_prob(self, x: torch.Tensor, sigma: Any = 0.0) -> torch.Tensor:
        """``log p_sigma(x)`` (float64, shape ``(B,)``); ``sigma = 0`` is the data density."""
        log_c, _ = self._log_components(x, sigma)
        return torch.logsumexp(log_c, dim=1)

    def score(self, x: torch.Tensor, sigma: Any = 0.0) -> torch.Tensor:
        """``grad_x log p_sigma(x)`` in closed form (float64)."""
        log_c, var = self._log_components(x, sigma)
        resp = torch.softmax(log_c, dim=1)  # (B, K)
        diff = self.means[None].to(x.device) - x.to(torch.float64)[:, None, :]  # (B, K, d)
        return (resp[..., None] * diff / var[..., None]).sum(1)

    def denoise(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        """``E[x0 | x0 + sigma eps = x]``, the ideal x0-prediction, in ``x``'s dtype."""
        log_c, var = self._log_components(x, sigma)
        resp = torch.softmax(log_c, dim=1)
        shrink = (self.stds[None].to(x.device) ** 2 / var)[..., None]  # (B or 1, K, 1)
        mu = self.means[None].to(x.device)
        post = mu + shrink * (x.to(torch.float64)[:, None, :] - mu)
        return (resp[..., None] * post).sum(1).to(x.dtype)


class MixtureData(PointCloud):
    """A Gaussian mixture as a data set; :attr:`mixture` has the exact density, score and denoiser.

    >>> from diffusion_schemes_trainer import MixtureData
    >>> MixtureData(means=[[0.0, 0.0], [1.0, 1.0]], stds=[0.1, 0.2]).sample(3).shape
    torch.Size([3, 2])
    """

    def __init__(self, means: Any, stds: Any, weights: Any = None) -> None:
        self.mixture = GaussianMixture(means, stds, weights)
        self.shape = (self.mixture.dim,)
        self.num_classes = self.mixture.means.shape[0]  # the component is the class

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mixture.sample(n, generator)

    def sample_labelled(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mixture.sample_labelled(n, generator)


class GaussianMixtureConfig(Section):
    """A Gaussian mixture: ``components`` equal blobs of std ``std`` on a circle of radius ``radius``,
    or explicit ``means`` / ``stds`` / ``weights``. Its exact denoiser is known."""

    name: Literal["gaussian_mixture"] = "gaussian_mixture"
    components: int = Field(8, ge=1, description="Number of blobs on the circle (ignored when means are given).")
    radius: float = Field(0.7, ge=0, description="Radius of the circle of centres.")
    std: float = Field(0.07, gt=0, description="Standard deviation of every blob (unless stds is given).")
    means: list[list[float]] | None = Field(None, description="Explicit centres, one [x, y] each.")
    stds: list[Positive] | None = Field(None, description="Explicit per-blob standard deviations (> 0).")
    weights: list[Positive] | None = Field(None, description="Mixing weights (> 0, normalised); equal when omitted.")
    train_size: int = Field(100_000, ge=1, description="Points in the training set.")
    eval_size: int = Field(4096, ge=16, description="Points in each of the two held-out sets.")

    default_model: ClassVar[str] = "mlp"

    def build(self) -> Any:
        """The data set (a :class:`MixtureData`)."""
        means = self.means
        if means is None:
            angles = [2 * math.pi * k / self.components for k in range(self.components)]
            means = [[self.radius * math.cos(a), self.radius * math.sin(a)] for a in angles]
        stds = self.stds if self.stds is not None else [self.std] * len(means)
        try:
            return MixtureData(means, stds, self.weights)
        except ValueError as exc:
            raise TrainerError(f"invalid data.gaussian_mixture: {exc}") from None
