"""The residual MLP backbone (points; images are flattened) and its config table ``model = { name = "mlp" }``.

>>> import torch
>>> import diffusion_schemes as ds
>>> from diffusion_schemes_trainer import MLP
>>> net = MLP(dim=2)
>>> isinstance(net, ds.DiffusionModel)
True
>>> net(torch.randn(5, 2), torch.rand(5)).shape
torch.Size([5, 2])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from ..schema import Section
from .blocks import Backbone

__all__ = ["MLP", "MLPConfig"]


class _ResidualMLPBlock(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(self.act(self.fc1(self.act(self.norm(h))) + emb))


class MLP(Backbone):
    """Residual MLP: input layer, ``depth`` blocks taking the noise embedding, output layer.

    Inputs ``(B, dim)`` (or ``(B, *)``, flattened to ``dim`` features). Beside the residual
    path, a noise-dependent gain times the input, ``g(c_noise) * x``, lets the network be
    exactly linear in ``x`` where the ideal output is (an epsilon-prediction at high noise is
    nearly ``x`` itself), also for inputs in the tails that training rarely sees. Both output
    layers start at zero, so an untrained model predicts ``F = 0`` (for an affine
    preconditioner, ``D = c_skip x``).

    Args:
        dim: data dimension.
        hidden: width of the hidden layers.
        depth: number of residual blocks.
        frequencies: Fourier frequencies of the noise embedding.
        num_classes: ``K > 0`` makes it class-conditional: the condition is integer labels
            ``(B,)`` (``K`` or no condition: unconditional), embedded and added to the noise embedding.
    """

    label = "MLP"

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, frequencies: int = 32,
                 num_classes: int = 0) -> None:
        super().__init__()
        self.init_embedding(hidden, frequencies, num_classes)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_ResidualMLPBlock(hidden) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))
        self.gate = nn.Linear(hidden, dim)
        for layer in (self.out[-1], self.gate):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, condition: Any = None) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(shape[0], -1)
        emb = self.embedding(c_noise, condition, shape[0], x.dtype)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return (self.out(h) + self.gate(emb) * x).reshape(shape)


class MLPConfig(Section):
    """Residual MLP backbone (points; images are flattened)."""

    name: Literal["mlp"] = "mlp"
    hidden: int = Field(128, ge=1, description="Width of the hidden layers.")
    depth: int = Field(3, ge=1, description="Number of residual blocks.")
    frequencies: int = Field(32, ge=1, description="Fourier frequencies of the noise embedding.")

    def build(self, shape: Sequence[int], num_classes: int = 0) -> Any:
        """The backbone for data of per-sample ``shape`` (class-conditional when ``num_classes``)."""
        return MLP(math.prod(shape), self.hidden, self.depth, self.frequencies, num_classes)

    def floats_per_sample(self, shape: Sequence[int]) -> int:
        """About how many activations one sample keeps for the backward pass (a bound for memory checks)."""
        return 10 * self.hidden * (self.depth + 2) + 4 * math.prod(shape)
