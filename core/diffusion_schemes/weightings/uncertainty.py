"""Learned uncertainty weighting of the loss (Karras et al. 2024, "Analyzing and Improving the Training
Dynamics of Diffusion Models", sec. 5 and eq. 21; Kendall & Gal 2017 for the multi-task form).

A small network ``u(sigma)`` of the noise level is trained with the model, and the per-element
loss ``L = w(sigma) ||D - target||^2`` becomes

    ``L / exp(u(sigma)) + u(sigma)``.

For a fixed ``sigma`` this is smallest at ``u = ln E[L | sigma]`` (its derivative in ``u`` is
``1 - L exp(-u)``), so ``u`` learns the log of the expected loss at each noise level and the
model's gradients are reweighted by ``1 / E[L | sigma]``: every noise level then contributes
about equally, whatever weighting and schedule the loss was written with.

``u`` takes ``c = ln(sigma) / 4`` (EDM's ``c_noise``) through fixed Fourier features
``sqrt(2) cos(2 pi (f_i c + p_i))`` with ``f_i ~ N(0, 1)`` and ``p_i ~ U(0, 1)`` drawn from a
fixed seed (as EDM2's ``MPFourier``), then a linear layer that starts at zero (``u = 0``: the
plain loss).

>>> import torch
>>> import diffusion_schemes as ds
>>> schedule = ds.create("noise_schedule", "edm")
>>> precond = ds.create("preconditioner", "edm", model=torch.nn.Conv2d(1, 1, 1))
>>> loss_fn = ds.MSEDSMLoss(lambda x, t, condition=None: precond(x, t), schedule, uncertainty=True)
>>> u = loss_fn.uncertainty                       # its parameters go into the optimiser
>>> optimizer = torch.optim.Adam([*precond.parameters(), *u.parameters()], lr=1e-3)
>>> u(torch.tensor([0.1, 1.0, 10.0])).tolist()    # starts at 0: the plain loss
[0.0, 0.0, 0.0]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from diffusion_schemes.errors import ArgumentTypeError, DomainError
from diffusion_schemes.tensors import check_inside

__all__ = ["UncertaintyWeight", "resolve_uncertainty"]


def resolve_uncertainty(uncertainty: object) -> UncertaintyWeight | None:
    """The loss's ``u(sigma)`` module for its ``uncertainty=`` argument (None when off).

    >>> import diffusion_schemes as ds
    >>> ds.MSEDSMLoss(ds.create("preconditioner", "edm", model=lambda x, c, condition=None: x),
    ...               ds.create("noise_schedule", "edm"), uncertainty="yes")
    Traceback (most recent call last):
      ...
    diffusion_schemes.errors.ArgumentTypeError: uncertainty must be True, False or ...
    """
    if uncertainty is False or uncertainty is None:
        return None
    if uncertainty is True:
        return UncertaintyWeight()
    if isinstance(uncertainty, nn.Module) and callable(getattr(uncertainty, "weigh", None)):
        return uncertainty  # type: ignore[return-value]
    raise ArgumentTypeError(
        f"uncertainty must be True, False or a module with weigh(loss, sigma) (an UncertaintyWeight); got {uncertainty!r}"
    )


class UncertaintyWeight(nn.Module):
    """``u(sigma)``: fixed Fourier features of ``ln(sigma) / 4``, then a linear layer (zero at start).

    Args:
        features: number of Fourier features.
        seed: seed of the features' frequencies and phases (fixed buffers, saved in the state dict).
    """

    def __init__(self, features: int = 128, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(features, generator=g, dtype=torch.float64).float())
        self.register_buffer("phases", torch.rand(features, generator=g, dtype=torch.float64).float())
        self.linear = nn.Linear(features, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        """``u`` at noise levels ``sigma`` (any shape; float32 or wider), shaped like ``sigma``."""
        sigma = torch.as_tensor(sigma)
        # checked on the tensor's device, like the preconditioner's noise levels: no host read, no device sync
        check_inside(sigma, 0.0, math.inf, lambda bad: DomainError(
            f"the uncertainty weight u(sigma) needs noise levels sigma > 0; got {bad}"))
        c = sigma.to(torch.promote_types(sigma.dtype, torch.float32)).log().reshape(-1, 1) / 4
        feats = math.sqrt(2) * torch.cos(2 * math.pi * (c * self.freqs + self.phases))
        return self.linear(feats.to(self.linear.weight.dtype)).to(c.dtype).reshape(sigma.shape)

    def weigh(self, loss: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``loss / exp(u(sigma)) + u(sigma)``, elementwise; ``sigma`` broadcasts against ``loss``."""
        u = self.forward(sigma).to(loss.dtype)
        return loss * torch.exp(-u) + u
