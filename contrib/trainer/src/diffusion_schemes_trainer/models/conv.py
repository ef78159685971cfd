"""The small residual convolutional backbone (images) and its config table ``model = { name = "conv" }``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from ..errors import TrainerError
from ..schema import Section
from .blocks import Backbone

__all__ = ["ConvConfig", "ConvNet"]


class _ResidualConvBlock(nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        r = self.conv1(self.act(self.norm1(h))) + emb[:, :, None, None]
        return h + self.conv2(self.act(self.norm2(r)))


class ConvNet(Backbone):
    """Small residual convolutional backbone for images ``(B, C, H, W)`` (all at full resolution).

    Each block adds the noise embedding per channel; as in :class:`MLP`, a noise-dependent
    per-channel gain times the input is added to the output. Both start at zero.

    >>> import torch
    >>> from diffusion_schemes_trainer import ConvNet
    >>> ConvNet(in_channels=1, channels=16, blocks=1)(torch.randn(3, 1, 8, 8), torch.rand(3)).shape
    torch.Size([3, 1, 8, 8])
    """

    label = "ConvNet"

    def __init__(self, in_channels: int = 1, channels: int = 64, blocks: int = 4, frequencies: int = 32,
                 num_classes: int = 0) -> None:
        super().__init__()
        groups = math.gcd(8, channels)
        self.init_embedding(channels, frequencies, num_classes)
        self.inp = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.ModuleList(_ResidualConvBlock(channels, groups) for _ in range(blocks))
        self.out = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, in_channels, 3, padding=1))
        self.gate = nn.Linear(channels, in_channels)
        for layer in (self.out[-1], self.gate):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, condition: Any = None) -> torch.Tensor:
        emb = self.embedding(c_noise, condition, x.shape[0], x.dtype)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h) + self.gate(emb)[:, :, None, None] * x


class ConvConfig(Section):
    """Small residual convolutional backbone (images)."""

    name: Literal["conv"] = "conv"
    channels: int = Field(64, ge=1, description="Feature channels.")
    blocks: int = Field(4, ge=1, description="Number of residual blocks.")
    frequencies: int = Field(32, ge=1, description="Fourier frequencies of the noise embedding.")

    def build(self, shape: Sequence[int], num_classes: int = 0) -> Any:
        """The backbone for images of per-sample ``shape`` ``(C, H, W)`` (class-conditional when ``num_classes``)."""
        if len(shape) != 3:
            raise TrainerError(f"the conv backbone needs images shaped (C, H, W), got data of shape {tuple(shape)}")
        return ConvNet(shape[0], self.channels, self.blocks, self.frequencies, num_classes)

    def floats_per_sample(self, shape: Sequence[int]) -> int:
        """About how many activations one sample keeps for the backward pass (a bound for memory checks)."""
        return 10 * self.channels * math.prod(shape[1:]) * (self.blocks + 2) + 4 * math.prod(shape)
