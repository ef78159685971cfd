"""Backbones and inline references for the benchmarks.

``TinyMLP`` (2-D data) and ``SmallConvNet`` (3x32x32 images) satisfy ``DiffusionModel``:
``model(x, c_noise, condition=None)``. ``InlinePrecomputed`` is the affine formula with
coefficients computed beforehand; ``InlineEDM`` computes Karras et al. 2022 Table 1's
coefficients inline, as a user would without this library.
"""

from __future__ import annotations

import torch
from torch import nn


class TinyMLP(nn.Module):
    """Two hidden layers of ``width`` on 2-D points, with ``c_noise`` as an extra input."""

    def __init__(self, dim: int = 2, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, condition=None) -> torch.Tensor:
        return self.net(torch.cat([x, c_noise[:, None].to(x.dtype)], dim=1))


class SmallConvNet(nn.Module):
    """Three 3x3 convolutions of ``width`` channels; ``c_noise`` shifts the hidden features."""

    def __init__(self, channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.mid = nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        self.emb = nn.Linear(1, width)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, condition=None) -> torch.Tensor:
        h = nn.functional.silu(self.inp(x) + self.emb(c_noise[:, None].to(x.dtype))[:, :, None, None])
        h = nn.functional.silu(self.mid(h))
        return self.out(h)


class InlinePrecomputed(nn.Module):
    """``c_skip x + c_out F(c_in x, c_noise)`` with the coefficients given (the cheapest possible)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x, c_in, c_noise, c_out, c_skip):
        return c_skip * x + c_out * self.model(c_in * x, c_noise, None)


class InlineEDM(nn.Module):
    """The EDM preconditioner written inline (Karras et al. 2022, Table 1), sigma shaped ``(B,)``."""

    def __init__(self, model: nn.Module, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.model = model
        self.sigma_data = sigma_data

    def forward(self, x, sigma):
        sd = self.sigma_data
        s = sigma.to(torch.float32).reshape(-1, *([1] * (x.ndim - 1)))
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (sd**2 + s**2).sqrt()
        c_noise = s.log().flatten() / 4
        out = self.model((c_in * x).to(x.dtype), c_noise, None)
        return (c_skip * x + c_out * out).to(x.dtype)


class InlineEDMCalledAsAModel(InlineEDM):
    """The same inline formula behind the signature every diffusion model has in this library,
    ``forward(x, t, condition=None, **model_kwargs)``: what that signature costs a compiled call (its extra
    arguments are frame locals that dynamo guards)."""

    def forward(self, x, t, condition=None, **model_kwargs):
        return super().forward(x, t)


def edm_coefficients(sigma: torch.Tensor, ndim: int, sigma_data: float = 0.5):
    """``(c_in, c_noise, c_out, c_skip)`` of Karras et al. 2022 Table 1, shaped for latents of ``ndim``."""
    sd = sigma_data
    s = sigma.to(torch.float32).reshape(-1, *([1] * (ndim - 1)))
    return 1 / (sd**2 + s**2).sqrt(), s.log().flatten() / 4, s * sd / (s**2 + sd**2).sqrt(), sd**2 / (s**2 + sd**2)


BACKBONES = {
    "tiny MLP, 2-D": (TinyMLP, (2,)),
    "conv net, 3x32x32": (SmallConvNet, (3, 32, 32)),
}
