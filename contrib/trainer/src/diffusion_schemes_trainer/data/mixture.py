"""The Gaussian-mixture data set, on the core's exact oracle.

:class:`GaussianMixture` is ``diffusion_schemes.conformance.mixture.GaussianMixture``: an isotropic
mixture whose noisy density, score and ideal denoiser (the posterior mean) are known in closed
form, so sampling with that denoiser is what a perfect model would give, and the gap between it
and a trained model is what training left undone. This module makes it a data set (float32 points,
the component as the class) and a config table.

>>> import torch
>>> from diffusion_schemes_trainer import GaussianMixture
>>> gm = GaussianMixture(means=[[-1.0, 0.0], [1.0, 0.0]], stds=[0.1, 0.1])
>>> gm.denoise(torch.tensor([[1.0, 0.0]]), sigma=1e-4)   # a mode is its own denoised value
tensor([[1., 0.]])
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

import torch

from pydantic import Field

from diffusion_schemes.conformance.mixture import GaussianMixture

from ..errors import TrainerError
from ..schema import Section
from .base import PointCloud

__all__ = ["GaussianMixture", "GaussianMixtureConfig", "MixtureData"]

#: A number in (0, inf): a standard deviation, a weight.
Positive = Annotated[float, Field(gt=0)]


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
        return self.sample_labelled(n, generator)[0]

    def log_prob(self, x: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
        """``log p(x; sigma)``, the mixture convolved with ``N(0, sigma^2 I)``, float64, shape ``(B,)``."""
        return self.mixture.log_prob(x.double(), sigma)

    def sample_labelled(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` float32 points and the component each was drawn from (its class label)."""
        points, labels = self.mixture.sample_labelled(n, generator)
        return points.float(), labels


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
