"""The core's own schemes, registered through the same hook as any plugin.

They are never filtered by the plugin environment variables. A solver's spec lives beside its
implementation (``_solvers``, ``_ancestral``, ``_multistep``, ``_adaptive``); this module lists them.
"""

from __future__ import annotations

from typing import Literal

from ._adaptive import DPMAdaptiveSpec
from ._ancestral import DPM2AncestralSpec, DPM2Spec, DPMpp2SAncestralSpec, EulerAncestralSpec
from ._hookspecs import hookimpl
from ._multistep import DPMpp2MSDESpec, DPMpp2MSpec, DPMpp3MSDESpec, LMSSpec, UniPCSpec
from ._solvers import EDMStochasticEulerSpec, EDMStochasticHeunSpec, EulerMaruyamaSpec, EulerSpec, HeunSpec
from ._specs import WeightingSpec


class SNRWeightingSpec(WeightingSpec):
    """1/sigma^2 on the x0-loss (uniform on epsilon): Karras et al. 2022, Table 1, VE/VP/iDDPM.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("weighting", "snr")
    SNRWeightingSpec(name='snr')
    >>> weighting = ds.create("weighting", "snr")
    >>> weighting, weighting.loss_type
    (SNRWeighting(), 'x0')
    >>> weighting(torch.tensor([0.0, 2.0]))                      # exp(lambda) = 1 / sigma^2
    tensor([1.0000, 7.3891])
    """

    name: Literal["snr"] = "snr"

    def build(self):
        from ._weighting import SNRWeighting

        return SNRWeighting()


class LikelihoodWeightingSpec(WeightingSpec):
    """-d lambda/dt on the epsilon-loss: likelihood weighting (Song et al. 2021).

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("weighting", "likelihood_weighting")
    LikelihoodWeightingSpec(name='likelihood_weighting')
    >>> weighting = ds.create("weighting", "likelihood_weighting")
    >>> ve = ds.create("noise_schedule", "ve")                   # t = sigma: -d lambda/dt = 2 / t
    >>> weighting(ve.get_log_snr(torch.tensor([1.0, 0.5])), schedule=ve)
    tensor([2., 4.])
    """

    name: Literal["likelihood_weighting"] = "likelihood_weighting"

    def build(self):
        from ._weighting import LikelihoodWeighting

        return LikelihoodWeighting()


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
def register_commands(cli):
    """The core's own plugin command: ``plot`` (its module imports matplotlib only when drawing)."""
    from ._plot import add_parser

    add_parser(cli)
