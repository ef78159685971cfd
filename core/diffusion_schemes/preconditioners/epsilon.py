"""Preconditioners around a DDPM-style epsilon network (VP, iDDPM; Karras et al. 2022, Table 1).

The network sees the variance-preserving latent ``x / sqrt(1 + sigma^2)`` and predicts the
noise; the output is ``x - sigma F``, an x0-prediction: ``c_skip = 1``, ``c_out = -sigma``,
``c_in = 1 / sqrt(1 + sigma^2)``. Stated here once; a scheme adds only its ``c_noise``.

>>> import torch
>>> import diffusion_schemes as ds
>>> class LogSigmaLabels(ds.EpsilonPreconditioner):
...     def c_noise(self, sigma):
...         return sigma.log()
>>> precond = LogSigmaLabels(lambda x, c_noise, condition=None: torch.ones_like(x))
>>> precond(torch.zeros(1, 2), torch.tensor([3.0]))          # x - sigma * eps_hat
tensor([[-3., -3.]])
"""

from __future__ import annotations

import abc

import torch

from diffusion_schemes.preconditioners.affine import BaseAffinePreconditioner

__all__ = ["EpsilonPreconditioner"]


class EpsilonPreconditioner(BaseAffinePreconditioner):
    """``c_skip = 1``, ``c_out = -sigma``, ``c_in = 1 / sqrt(sigma^2 + 1)``; subclasses give :meth:`c_noise`.

    ``c_in x`` of the unscaled latent ``x = x0 + sigma eps`` is exactly the scaled latent
    ``alpha x0 + sqrt(1 - alpha^2) eps`` with ``alpha = 1 / sqrt(1 + sigma^2)``, so the scaling
    happens once, here; for unit-variance data input and target (``eps``) have unit variance.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> vp = ds.create("preconditioner", "vp", model=lambda x, c_noise, condition=None: torch.ones_like(x))
    >>> isinstance(vp, ds.EpsilonPreconditioner)
    True
    >>> vp.forward_sigma(torch.ones(1, 2), 0.5)                  # x - sigma * eps_hat
    tensor([[0.5000, 0.5000]])
    """

    @abc.abstractmethod
    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        """The network's noise conditioning for noise levels shaped ``(B, 1, ..., 1)``."""

    def compute_coefficients(self, sigma: torch.Tensor):
        """``(c_in, c_noise, c_out, c_skip)``.

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> vp = ds.create("preconditioner", "vp", model=torch.nn.Identity())
        >>> c_in, _, c_out, c_skip = vp.compute_coefficients(torch.tensor([[0.75]]))
        >>> float(c_in), float(c_out), float(c_skip)      # 1 / sqrt(0.75^2 + 1) = 0.8
        (0.8, -0.75, 1.0)
        """
        return 1 / (sigma**2 + 1).sqrt(), self.c_noise(sigma), -sigma, torch.ones_like(sigma)
