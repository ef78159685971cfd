"""The core's own plugin: the hook that registers the built-in schemes, like any plugin's.

Each built-in scheme's spec lives beside its implementation (the weightings in ``_weighting``,
the solvers in ``_solvers``, ``_ancestral``, ``_multistep`` and ``_adaptive``); this module only
lists them. They are never filtered by the plugin environment variables.
"""

from __future__ import annotations

from ._adaptive import DPMAdaptiveSpec
from ._ancestral import DPM2AncestralSpec, DPM2Spec, DPMpp2SAncestralSpec, EulerAncestralSpec
from ._explicit_grid import ExplicitSpec
from .discretizations import KarrasSpec, LinearTimeSpec, LogSNRUniformSpec, PolyexponentialSpec, ScheduleSpec
from ._hookspecs import hookimpl
from ._multistep import DPMpp2MSDESpec, DPMpp2MSpec, DPMpp3MSDESpec, LMSSpec, UniPCSpec
from ._solvers import EDMStochasticEulerSpec, EDMStochasticHeunSpec, EulerMaruyamaSpec, EulerSpec, HeunSpec
from ._weighting import LikelihoodWeightingSpec, SNRWeightingSpec


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
        ScheduleSpec,
        KarrasSpec,
        LogSNRUniformSpec,
        PolyexponentialSpec,
        LinearTimeSpec,
        ExplicitSpec,
    ]
