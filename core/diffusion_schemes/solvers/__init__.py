"""Solvers: how a grid of noise levels is walked from noise to data.

:class:`BaseSolver` owns the loop (the grid check, the steps, the count of network evaluations,
the noise drawn through a ``noise_sampler``, the callback); a solver states its order, whether it
is stochastic, its evaluations per step and one ``step``. The built-in solvers (first-order and
Heun, EDM's stochastic sampler, Euler-Maruyama, the ancestral and midpoint solvers, the
multistep DPM-Solver++/LMS/UniPC family and adaptive DPM-Solver) are registered through this
package's ``register_schemes`` hook; ``noise_samplers`` holds the Brownian-tree noise source of
the SDE solvers (the ``sde`` extra) and ``normal_noise``, the default noise drawn from one
generator or from one generator per sample.
"""

from __future__ import annotations

from diffusion_schemes.solvers.adaptive import DPMAdaptive, DPMAdaptiveSpec
from diffusion_schemes.solvers.ancestral import (
    DPM2,
    DPM2Ancestral,
    DPM2AncestralSpec,
    DPM2Spec,
    DPMpp2SAncestral,
    DPMpp2SAncestralSpec,
    EulerAncestral,
    EulerAncestralSpec,
)
from diffusion_schemes.solvers.base import (
    BaseSolver,
    EDMStochasticEuler,
    EDMStochasticEulerSpec,
    EDMStochasticHeun,
    EDMStochasticHeunSpec,
    Euler,
    EulerMaruyama,
    EulerMaruyamaSpec,
    EulerSpec,
    Heun,
    HeunSpec,
    StepLevels,
    default_noise_sampler,
)
from diffusion_schemes.solvers.multistep import (
    LMS,
    DPMpp2M,
    DPMpp2MSDE,
    DPMpp2MSDESpec,
    DPMpp2MSpec,
    DPMpp3MSDE,
    DPMpp3MSDESpec,
    LMSSpec,
    UniPC,
    UniPCSpec,
)
from diffusion_schemes.specs.hooks import hookimpl

__all__ = [
    "DPM2",
    "LMS",
    "BaseSolver",
    "DPM2Ancestral",
    "DPMAdaptive",
    "DPMpp2M",
    "DPMpp2MSDE",
    "DPMpp2SAncestral",
    "DPMpp3MSDE",
    "EDMStochasticEuler",
    "EDMStochasticHeun",
    "Euler",
    "EulerAncestral",
    "EulerMaruyama",
    "Heun",
    "StepLevels",
    "UniPC",
    "default_noise_sampler",
]

SPECS = [
    EulerSpec,
    HeunSpec,
    EDMStochasticEulerSpec,
    EDMStochasticHeunSpec,
    EulerMaruyamaSpec,
    DPMpp2MSpec,
    EulerAncestralSpec,
    DPM2Spec,
    DPM2AncestralSpec,
    DPMpp2SAncestralSpec,
    DPMpp2MSDESpec,
    DPMpp3MSDESpec,
    LMSSpec,
    UniPCSpec,
    DPMAdaptiveSpec,
]


@hookimpl
def register_schemes():
    return SPECS
