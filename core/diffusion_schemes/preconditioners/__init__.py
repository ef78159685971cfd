"""Preconditioners: the affine wrapper ``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)`` around a network.

:class:`BaseAffinePreconditioner` owns the contract (time or noise level in, the four coefficients
from ``compute_coefficients(sigma)``, domain checks, the condition passed on); a scheme states its
coefficients and, when its time is not the noise level, ``sigma(t)``. :class:`EpsilonPreconditioner`
is the form around an epsilon-predicting network (VP, iDDPM).
"""

from __future__ import annotations

from diffusion_schemes.preconditioners.affine import BaseAffinePreconditioner
from diffusion_schemes.preconditioners.epsilon import EpsilonPreconditioner

__all__ = ["BaseAffinePreconditioner", "EpsilonPreconditioner"]
