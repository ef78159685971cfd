"""Small backbones ``F(x, c_noise, condition=None)`` that satisfy :class:`diffusion_schemes.DiffusionModel`.

A preconditioner calls its backbone with the scaled input ``c_in x`` and the noise label
``c_noise``, whose range depends on the scheme (``ln(sigma)/4`` in about ``[-1.6, 1.1]`` for
EDM, ``999 t`` for VP, an integer up to 999 for iDDPM). :class:`NoiseEmbedding` therefore
uses Fourier features whose periods span that whole range.

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
from typing import Any

import torch
from torch import nn

from ._errors import TrainerError

__all__ = ["MLP", "ClassEmbedding", "ConvNet", "NoiseEmbedding", "UNet"]


def _unconditional(condition: Any, name: str) -> None:
    if condition is not None:
        raise TrainerError(
            f"the {name} backbone is unconditional; got a condition of type {type(condition).__name__} "
            "(build it with num_classes=K, or train with --class-conditional, to condition on a class)"
        )


class ClassEmbedding(nn.Module):
    """A learned vector per class label ``0 .. K-1`` plus one for "no class" (label ``K``, or no condition).

    The extra row is the null condition of classifier-free guidance: the loss's condition
    dropout trains it, and guided sampling evaluates it (Ho & Salimans 2022).

    >>> import torch
    >>> from diffusion_schemes_trainer._models import ClassEmbedding
    >>> embed = ClassEmbedding(num_classes=10, dim=4)
    >>> embed(torch.tensor([3, 10]), 2).shape, torch.equal(embed(None, 2)[0], embed(torch.tensor([10]), 1)[0])
    (torch.Size([2, 4]), True)
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: Any, batch: int) -> torch.Tensor:
        if labels is None:
            labels = torch.full((batch,), self.num_classes, dtype=torch.long, device=self.table.weight.device)
        if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int32, torch.int64) or labels.shape != (batch,):
            raise TrainerError(
                f"a class condition must be integer labels shaped ({batch},), got "
                f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}"
            )
        return self.table(labels)


class NoiseEmbedding(nn.Module):
    """Fourier features ``[cos(2 pi c / p_i), sin(2 pi c / p_i)]`` of the noise label ``c``.

    The periods ``p_i`` are geometric from ``max_period`` down to ``min_period`` (the
    continuous form of the sinusoidal position embedding of Vaswani et al. 2017, sec. 3.5),
    so labels from about ``min_period / 10`` apart up to ``max_period`` apart are told apart.

    >>> import torch
    >>> from diffusion_schemes_trainer import NoiseEmbedding
    >>> NoiseEmbedding(frequencies=8)(torch.tensor([0.0, 1.0])).shape
    torch.Size([2, 16])
    """

    def __init__(self, frequencies: int = 32, min_period: float = 0.5, max_period: float = 4000.0) -> None:
        super().__init__()
        exponent = torch.linspace(0, 1, frequencies, dtype=torch.float64)
        periods = max_period * (min_period / max_period) ** exponent
        self.register_buffer("omega", (2 * math.pi / periods).float(), persistent=False)
        self.dim = 2 * frequencies

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        """``(B,)`` labels to ``(B, 2 * frequencies)`` features (computed in float32 or wider)."""
        angle = c_noise.reshape(-1, 1).to(torch.promote_types(c_noise.dtype, torch.float32)) * self.omega
        return torch.cat([angle.cos(), angle.sin()], dim=1)


class _ResidualMLPBlock(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(self.act(self.fc1(self.act(self.norm(h))) + emb))


class MLP(nn.Module):
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

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, frequencies: int = 32,
                 num_classes: int = 0) -> None:
        super().__init__()
        self.classes = ClassEmbedding(num_classes, hidden) if num_classes else None
        self.embed = NoiseEmbedding(frequencies)
        self.emb_mlp = nn.Sequential(nn.Linear(self.embed.dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
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
        emb = self.emb_mlp(self.embed(c_noise).to(x.dtype))
        if self.classes is None:
            _unconditional(condition, "MLP")
        else:
            emb = emb + self.classes(condition, shape[0]).to(emb.dtype)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return (self.out(h) + self.gate(emb) * x).reshape(shape)


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


class ConvNet(nn.Module):
    """Small residual convolutional backbone for images ``(B, C, H, W)`` (all at full resolution).

    Each block adds the noise embedding per channel; as in :class:`MLP`, a noise-dependent
    per-channel gain times the input is added to the output. Both start at zero.

    >>> import torch
    >>> from diffusion_schemes_trainer import ConvNet
    >>> ConvNet(in_channels=1, channels=16, blocks=1)(torch.randn(3, 1, 8, 8), torch.rand(3)).shape
    torch.Size([3, 1, 8, 8])
    """

    def __init__(self, in_channels: int = 1, channels: int = 64, blocks: int = 4, frequencies: int = 32,
                 num_classes: int = 0) -> None:
        super().__init__()
        self.classes = ClassEmbedding(num_classes, channels) if num_classes else None
        groups = math.gcd(8, channels)
        self.embed = NoiseEmbedding(frequencies)
        self.emb_mlp = nn.Sequential(nn.Linear(self.embed.dim, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.inp = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.ModuleList(_ResidualConvBlock(channels, groups) for _ in range(blocks))
        self.out = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, in_channels, 3, padding=1))
        self.gate = nn.Linear(channels, in_channels)
        for layer in (self.out[-1], self.gate):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, condition: Any = None) -> torch.Tensor:
        emb = self.emb_mlp(self.embed(c_noise).to(x.dtype))
        if self.classes is None:
            _unconditional(condition, "ConvNet")
        else:
            emb = emb + self.classes(condition, x.shape[0]).to(emb.dtype)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h) + self.gate(emb)[:, :, None, None] * x


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


class UNet(nn.Module):
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
        self.classes = ClassEmbedding(num_classes, emb) if num_classes else None
        self.embed = NoiseEmbedding(frequencies)
        self.emb_mlp = nn.Sequential(nn.Linear(self.embed.dim, emb), nn.SiLU(), nn.Linear(emb, emb))
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
        emb = self.emb_mlp(self.embed(c_noise).to(x.dtype))
        if self.classes is None:
            _unconditional(condition, "UNet")
        else:
            emb = emb + self.classes(condition, x.shape[0]).to(emb.dtype)
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
