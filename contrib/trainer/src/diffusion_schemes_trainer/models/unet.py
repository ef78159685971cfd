"""The small U-Net backbone (images; the default for digits) and its config table ``model = { name = "unet" }``."""

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

__all__ = ["UNet", "UNetConfig"]


class _UNetBlock(nn.Module):
    """Residual block: GroupNorm, SiLU, 3x3 conv, scale and shift from the noise embedding, again; 1x1 skip."""

    def __init__(self, cin: int, cout: int, emb: int, attention: bool, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(math.gcd(8, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(math.gcd(8, cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.act = nn.SiLU()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.attn = _SelfAttention(cout) if attention else None

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        r = self.conv1(self.act(self.norm1(h)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        r = self.act(self.norm2(r) * (1 + scale) + shift)
        h = self.skip(h) + self.conv2(self.drop(r))
        return h if self.attn is None else self.attn(h)


class _SelfAttention(nn.Module):
    """Single-head self-attention over the pixels of a feature map, residual, output projection at zero."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(math.gcd(8, channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(b, 3, c, hh * ww).unbind(1)
        out = nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return h + self.proj(out.transpose(1, 2).reshape(b, c, hh, ww))


class UNet(Backbone):
    """A small U-Net for images ``(B, C, H, W)``, of the family of EDM's SongUNet / DhariwalUNet.

    An encoder of ``len(channel_mult)`` levels (``blocks`` residual blocks each, then 2x average
    pooling), a decoder that mirrors it (nearest-neighbour upsampling) and takes every encoder
    activation through a skip connection, self-attention after the blocks at resolutions
    ``attention`` (e.g. ``(4,)``: the 4x4 level of 8x8 images). The noise label goes through
    :class:`NoiseEmbedding` (Fourier features over the whole range of every scheme's
    ``c_noise``) and an MLP, and scales and shifts every block's features (adaptive GroupNorm,
    Dhariwal & Nichol 2021). The last layer and each block's second conv start at zero, so the
    untrained network outputs 0 and every block starts as its skip path.

    With ``num_classes = K > 0`` it is class-conditional: the condition is integer labels ``(B,)``
    (``K`` or no condition: unconditional), embedded (:class:`ClassEmbedding`) and added to the
    noise embedding.

    >>> import torch
    >>> from diffusion_schemes_trainer import UNet
    >>> net = UNet(in_channels=1, channels=16, channel_mult=(1, 2), blocks=1, attention=(4,))
    >>> net(torch.randn(3, 1, 8, 8), torch.rand(3)).shape
    torch.Size([3, 1, 8, 8])
    """

    label = "UNet"

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2),
        blocks: int = 2,
        attention: tuple[int, ...] = (4,),
        resolution: int = 8,
        frequencies: int = 32,
        dropout: float = 0.0,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if resolution % (2 ** (len(channel_mult) - 1)):
            raise TrainerError(f"resolution {resolution} cannot be halved {len(channel_mult) - 1} times; use fewer levels")
        emb = 4 * channels
        self.init_embedding(emb, frequencies, num_classes)
        self.inp = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        widths, cin, res = [channels], channels, resolution
        for level, mult in enumerate(channel_mult):
            for _ in range(blocks):
                self.down.append(_UNetBlock(cin, channels * mult, emb, res in attention, dropout))
                cin = channels * mult
                widths.append(cin)
            if level < len(channel_mult) - 1:
                self.down.append(nn.AvgPool2d(2))
                widths.append(cin)
                res //= 2
        self.mid = nn.ModuleList([_UNetBlock(cin, cin, emb, True, dropout), _UNetBlock(cin, cin, emb, False, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(blocks + 1):
                self.up.append(_UNetBlock(cin + widths.pop(), channels * mult, emb, res in attention, dropout))
                cin = channels * mult
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
                res *= 2
        self.out = nn.Sequential(nn.GroupNorm(math.gcd(8, cin), cin), nn.SiLU(), nn.Conv2d(cin, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, condition: Any = None) -> torch.Tensor:
        emb = self.embedding(c_noise, condition, x.shape[0], x.dtype)
        emb = nn.functional.silu(emb)
        h = self.inp(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, _UNetBlock) else layer(h)
            skips.append(h)
        for block in self.mid:
            h = block(h, emb)
        for layer in self.up:
            h = layer(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(layer, _UNetBlock) else layer(h)
        return self.out(h)


class UNetConfig(Section):
    """Small U-Net (images; the default for digits): residual blocks, skips, attention at low resolution."""

    name: Literal["unet"] = "unet"
    channels: int = Field(16, ge=1, description="Feature channels of the first level.")
    channel_mult: tuple[int, ...] = Field((1, 2), min_length=1, description="Channel multiplier of each level (each halves the resolution).")
    blocks: int = Field(1, ge=1, description="Residual blocks per level.")
    attention: tuple[int, ...] = Field((4,), description="Resolutions with self-attention after each block.")
    frequencies: int = Field(32, ge=1, description="Fourier frequencies of the noise embedding.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout in the residual blocks.")

    def build(self, shape: Sequence[int], num_classes: int = 0) -> Any:
        """The backbone for square images of per-sample ``shape`` ``(C, H, W)`` (class-conditional when ``num_classes``)."""
        if len(shape) != 3 or shape[1] != shape[2]:
            raise TrainerError(f"the unet backbone needs square images shaped (C, H, W), got data of shape {tuple(shape)}")
        try:
            return UNet(shape[0], self.channels, self.channel_mult, self.blocks, self.attention, shape[1],
                        self.frequencies, self.dropout, num_classes)
        except ValueError as exc:
            raise TrainerError(f"invalid model.unet: {exc}") from None

    def floats_per_sample(self, shape: Sequence[int]) -> int:
        """About how many activations one sample keeps for the backward pass (a bound for memory checks):
        every block at the widest level's width and full resolution, and one attention matrix per block."""
        pixels = math.prod(shape[1:])
        blocks = len(self.channel_mult) * (2 * self.blocks + 1) + 2
        return blocks * (12 * self.channels * max(self.channel_mult) * pixels + pixels**2) + 4 * math.prod(shape)
