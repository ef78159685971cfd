"""The noise samplers' former path, kept for code written against it: they live in
:mod:`diffusion_schemes.solvers.noise_samplers` beside the solvers that draw their noise."""

from __future__ import annotations

from diffusion_schemes.solvers.noise_samplers import BrownianTreeNoiseSampler

__all__ = ["BrownianTreeNoiseSampler"]
