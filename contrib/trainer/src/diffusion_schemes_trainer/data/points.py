"""Procedural 2-D point clouds: two moons and a checkerboard (each with its config table).

>>> import torch
>>> from diffusion_schemes_trainer import TwoMoons
>>> TwoMoons(noise=0.0).sample(1000, torch.Generator().manual_seed(0)).mean(0).abs().max() < 0.05
tensor(True)
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from ..errors import TrainerError
from ..schema import Section
from .base import PointCloud

__all__ = ["Checkerboard", "CheckerboardConfig", "TwoMoons", "TwoMoonsConfig"]


class TwoMoons(PointCloud):
    """Two interleaved half circles of radius 1 with Gaussian jitter, centred on the origin.

    Upper moon ``(cos u, sin u)``, lower moon ``(1 - cos u, 1/2 - sin u)``, ``u ~ U[0, pi]``,
    shifted by ``(-1/2, -1/4)`` so the set is centred, plus ``noise * N(0, I)``.
    """

    def __init__(self, noise: float = 0.05) -> None:
        self.noise = float(noise)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
        lower = torch.rand(n, generator=generator) < 0.5
        x = torch.where(lower, 1 - u.cos(), u.cos()) - 0.5
        y = torch.where(lower, 0.5 - u.sin(), u.sin()) - 0.25
        jitter = torch.randn(n, 2, generator=generator, dtype=torch.float64) * self.noise
        return (torch.stack([x, y], 1) + jitter).float()

    def log_prob(self, x: torch.Tensor, sigma: float = 0.0, nodes: int = 2048) -> torch.Tensor:
        """``log p(x; sigma)``: the set convolved with ``N(0, sigma^2 I)``, float64, shape ``(B,)``.

        Each moon is a uniform mixture over ``u`` of ``N(curve(u), (noise^2 + sigma^2) I)``; the
        integral over ``u`` is the midpoint rule on ``nodes`` points per moon (spaced ``pi / nodes``,
        far below the jitter, so the rule's error is negligible).
        """
        var = self.noise**2 + float(sigma) ** 2
        if var <= 0:
            raise TrainerError("two_moons with noise 0 has no density; give it noise > 0 or a noise level sigma > 0")
        u = (torch.arange(nodes, dtype=torch.float64) + 0.5) * (math.pi / nodes)
        upper = torch.stack([u.cos() - 0.5, u.sin() - 0.25], 1)
        lower = torch.stack([0.5 - u.cos(), 0.25 - u.sin()], 1)
        centres = torch.cat([upper, lower]).to(x.device)
        x = x.double().reshape(-1, 2)
        out = []
        for part in x.split(1024):  # (1024, 2 nodes) at a time
            d2 = (part[:, None, :] - centres[None]).pow(2).sum(-1)
            out.append(torch.logsumexp(-0.5 * d2 / var, dim=1))
        return torch.cat(out) - math.log(2 * nodes) - math.log(2 * math.pi * var)


class Checkerboard(PointCloud):
    """Uniform on the dark squares of a ``squares x squares`` board of side ``size`` centred on 0.

    A point's column is uniform; its row is drawn among the rows of the same parity, so
    ``row + column`` is always even.

    >>> from diffusion_schemes_trainer import Checkerboard
    >>> x = Checkerboard(squares=4, size=4.0).sample(500, torch.Generator().manual_seed(0))
    >>> cells = ((x + 2) // 1).long()
    >>> bool(((cells[:, 0] + cells[:, 1]) % 2 == 0).all())
    True
    """

    def __init__(self, squares: int = 4, size: float = 4.0) -> None:
        if squares < 2 or squares % 2:
            raise TrainerError(f"squares must be an even number >= 2, got {squares}")
        self.squares, self.size = int(squares), float(size)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        m = self.squares
        col = torch.randint(0, m, (n,), generator=generator)
        row = 2 * torch.randint(0, m // 2, (n,), generator=generator) + col % 2
        cell = torch.stack([col, row], 1).double()
        offset = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        return ((cell + offset) * (self.size / m) - self.size / 2).float()

    def log_prob(self, x: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
        """``log p(x; sigma)``: the board convolved with ``N(0, sigma^2 I)``, float64, shape ``(B,)``.

        The density is ``2 / size^2`` on the dark squares; convolved, each square contributes the
        product over both axes of the Gaussian mass of its side, ``Phi((b - x) / sigma) - Phi((a - x) / sigma)``.

        >>> board = Checkerboard(squares=2, size=2.0)       # dark squares: [-1, 0)^2 and [0, 1)^2
        >>> board.log_prob(torch.tensor([[-0.5, -0.5], [0.5, -0.5]])).exp().tolist()
        [0.5, 0.0]
        """
        m, c = self.squares, self.size / self.squares
        x = x.double().reshape(-1, 2)
        edges = torch.arange(m + 1, dtype=torch.float64, device=x.device) * c - self.size / 2
        if sigma > 0:
            cdf = torch.special.ndtr((edges[None, None, :] - x[:, :, None]) / float(sigma))  # (B, 2, m + 1)
            mass = cdf[..., 1:] - cdf[..., :-1]
        else:
            mass = ((x[:, :, None] >= edges[:-1]) & (x[:, :, None] < edges[1:])).double()
        idx = torch.arange(m, device=x.device)
        dark = ((idx[:, None] + idx[None, :]) % 2 == 0).double()  # (column, row)
        total = torch.einsum("bi,ij,bj->b", mass[:, 0], dark, mass[:, 1])
        return total.log() + math.log(2 / self.size**2)


class TwoMoonsConfig(Section):
    """Two interleaved half circles with Gaussian jitter."""

    name: Literal["two_moons"] = "two_moons"
    noise: float = Field(0.05, ge=0, description="Standard deviation of the jitter.")
    train_size: int = Field(100_000, ge=1, description="Points in the training set.")
    eval_size: int = Field(4096, ge=16, description="Points in each of the two held-out sets.")

    default_model: ClassVar[str] = "mlp"

    def build(self) -> Any:
        """The data set (a :class:`TwoMoons`)."""
        return TwoMoons(self.noise)


class CheckerboardConfig(Section):
    """Uniform on the dark squares of a checkerboard centred on the origin."""

    name: Literal["checkerboard"] = "checkerboard"
    squares: int = Field(4, ge=2, multiple_of=2, description="Squares per side (even).")
    size: float = Field(2.0, gt=0, description="Side length of the board.")
    train_size: int = Field(100_000, ge=1, description="Points in the training set.")
    eval_size: int = Field(4096, ge=16, description="Points in each of the two held-out sets.")

    default_model: ClassVar[str] = "mlp"

    def build(self) -> Any:
        """The data set (a :class:`Checkerboard`)."""
        return Checkerboard(self.squares, self.size)
