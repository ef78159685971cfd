"""The core's own schemes, registered through the same hook as any plugin.

They are never filtered by the plugin environment variables. This module stays light:
building a scheme is what imports its implementation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._hookspecs import hookimpl
from ._specs import SolverSpec, WeightingSpec


class SNRWeightingSpec(WeightingSpec):
    """1/sigma^2 on the x0-loss (uniform on epsilon): Karras et al. 2022, Table 1, VE/VP/iDDPM."""

    name: Literal["snr"] = "snr"

    def build(self):
        from ._weighting import SNRWeighting

        return SNRWeighting()


class LikelihoodWeightingSpec(WeightingSpec):
    """-d lambda/dt on the epsilon-loss: likelihood weighting (Song et al. 2021)."""

    name: Literal["likelihood_weighting"] = "likelihood_weighting"

    def build(self):
        from ._weighting import LikelihoodWeighting

        return LikelihoodWeighting()


class EulerSpec(SolverSpec):
    """Euler on the probability-flow ODE in the noise level (first order; DDIM)."""

    name: Literal["euler"] = "euler"

    def build(self):
        from ._solvers import Euler

        return Euler()


class HeunSpec(SolverSpec):
    """Heun's second-order method, Euler on the last step (Karras et al. 2022, Algorithm 1)."""

    name: Literal["heun"] = "heun"

    def build(self):
        from ._solvers import Heun

        return Heun()


class _EDMStochasticSpec(SolverSpec):
    S_churn: float = Field(40.0, ge=0, description="Total stochasticity; 0 gives the deterministic solver.")
    S_min: float = Field(0.05, ge=0, description="Lowest noise level where noise is added.")
    S_max: float = Field(50.0, gt=0, description="Highest noise level where noise is added.")
    S_noise: float = Field(1.003, gt=0, description="Scale of the added noise (slightly above 1).")


class EDMStochasticEulerSpec(_EDMStochasticSpec):
    """Karras et al. 2022, Algorithm 2 with Euler steps (churn S_churn, S_min, S_max, S_noise)."""

    name: Literal["edm_stochastic_euler"] = "edm_stochastic_euler"

    def build(self):
        from ._solvers import EDMStochastic

        return EDMStochastic(second_order=False, **self.params())


class EDMStochasticHeunSpec(_EDMStochasticSpec):
    """Karras et al. 2022, Algorithm 2 (stochastic Heun; churn S_churn, S_min, S_max, S_noise)."""

    name: Literal["edm_stochastic_heun"] = "edm_stochastic_heun"

    def build(self):
        from ._solvers import EDMStochastic

        return EDMStochastic(second_order=True, **self.params())


class EulerMaruyamaSpec(SolverSpec):
    """Euler-Maruyama on the reverse SDE (first order, stochastic)."""

    name: Literal["euler_maruyama"] = "euler_maruyama"

    def build(self):
        from ._solvers import EulerMaruyama

        return EulerMaruyama()


class DPMpp2MSpec(SolverSpec):
    """DPM-Solver++(2M): multistep, one evaluation a step (Lu et al. 2022)."""

    name: Literal["dpmpp_2m"] = "dpmpp_2m"

    def build(self):
        from ._solvers import DPMpp2M

        return DPMpp2M()


@hookimpl
def register_schemes():
    return [
        SNRWeightingSpec,
        LikelihoodWeightingSpec,
        EulerSpec,
        HeunSpec,
        EDMStochasticEulerSpec,
        EDMStochasticHeunSpec,
        EulerMaruyamaSpec,
        DPMpp2MSpec,
    ]


@hookimpl
def register_commands(cli):
    """The core's own plugin command: ``plot`` (its module imports matplotlib only when drawing)."""
    from ._plot import add_parser

    add_parser(cli)
