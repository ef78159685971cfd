"""The core's own plugin: the hook that registers the built-in schemes, like any plugin's.

Each built-in scheme's spec lives beside its implementation (the weightings in
``_weighting``); this module only lists them. They are never filtered by the plugin
environment variables.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._hookspecs import hookimpl
from ._specs import SolverSpec
from ._weighting import LikelihoodWeightingSpec, SNRWeightingSpec


class EulerSpec(SolverSpec):
    """Euler on the probability-flow ODE in the noise level (first order; DDIM).

    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("solver", "euler")
    EulerSpec(name='euler')
    >>> ds.create("solver", "euler")
    Euler()
    """

    name: Literal["euler"] = "euler"

    def build(self):
        from ._solvers import Euler

        return Euler()


class HeunSpec(SolverSpec):
    """Heun's second-order method, Euler on the last step (Karras et al. 2022, Algorithm 1).

    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("solver", "heun")
    HeunSpec(name='heun')
    >>> ds.create("solver", "heun")
    Heun()
    """

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
    """Karras et al. 2022, Algorithm 2 with Euler steps (churn S_churn, S_min, S_max, S_noise).

    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("solver", {"name": "edm_stochastic_euler", "S_churn": 10})
    EDMStochasticEulerSpec(name='edm_stochastic_euler', S_churn=10.0, S_min=0.05, S_max=50.0, S_noise=1.003)
    >>> solver = ds.create("solver", {"name": "edm_stochastic_euler", "S_churn": 10})
    >>> solver, solver.order
    (EDMStochastic(S_churn=10.0, S_min=0.05, S_max=50.0, S_noise=1.003), 1)
    """

    name: Literal["edm_stochastic_euler"] = "edm_stochastic_euler"

    def build(self):
        from ._solvers import EDMStochastic

        return EDMStochastic(second_order=False, **self.params())


class EDMStochasticHeunSpec(_EDMStochasticSpec):
    """Karras et al. 2022, Algorithm 2 (stochastic Heun; churn S_churn, S_min, S_max, S_noise).

    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("solver", "edm_stochastic_heun")
    EDMStochasticHeunSpec(name='edm_stochastic_heun', S_churn=40.0, S_min=0.05, S_max=50.0, S_noise=1.003)
    >>> solver = ds.create("solver", {"name": "edm_stochastic_heun", "S_churn": 0})
    >>> solver, solver.order
    (EDMStochastic(S_churn=0.0, S_min=0.05, S_max=50.0, S_noise=1.003), 2)
    """

    name: Literal["edm_stochastic_heun"] = "edm_stochastic_heun"

    def build(self):
        from ._solvers import EDMStochastic

        return EDMStochastic(second_order=True, **self.params())


class EulerMaruyamaSpec(SolverSpec):
    """Euler-Maruyama on the reverse SDE (first order, stochastic).

    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("solver", "euler_maruyama")
    EulerMaruyamaSpec(name='euler_maruyama')
    >>> ds.create("solver", "euler_maruyama")
    EulerMaruyama()
    """

    name: Literal["euler_maruyama"] = "euler_maruyama"

    def build(self):
        from ._solvers import EulerMaruyama

        return EulerMaruyama()


class DPMpp2MSpec(SolverSpec):
    """DPM-Solver++(2M): multistep, one evaluation a step (Lu et al. 2022).

    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("solver", "dpmpp_2m")
    DPMpp2MSpec(name='dpmpp_2m')
    >>> ds.create("solver", "dpmpp_2m")
    DPMpp2M()
    """

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

