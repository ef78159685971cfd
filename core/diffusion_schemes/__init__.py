"""diffusion-schemes: pluggable diffusion-model schemes for PyTorch.

Preconditioners, noise schedules, loss weightings, solvers and discretizations are *schemes*, picked by
name from the installed plugin distributions:

>>> import diffusion_schemes as ds
>>> ds.create("solver", "heun").spec.name
'heun'

See ``docs/`` for the concepts, every scheme's formulas and how to write a plugin.
"""

from __future__ import annotations

from typing import Any

from ._builtins import (
    DPMpp2MSpec,
    EDMStochasticEulerSpec,
    EDMStochasticHeunSpec,
    EulerMaruyamaSpec,
    EulerSpec,
    HeunSpec,
    LikelihoodWeightingSpec,
    SNRWeightingSpec,
)
from ._conditioning import ConcatConditionWrapper, check_condition
from ._config import WeightingRef, json_schema, spec_type
from ._epsilon_preconditioner import EpsilonPreconditioner
from ._errors import (
    ConditionError,
    DiffusionSchemesError,
    DomainError,
    PairingError,
    PluginError,
    PluginWarning,
    SchemeConfigError,
    SchemeConflictError,
    UnknownKindError,
    UnknownSchemeError,
)
from ._hookspecs import hookimpl, hookspec
from ._preconditioner import BaseAffinePreconditioner, compute_dtype
from ._protocols import DiffusionModel, NoiseSchedule, Preconditioner
from ._registry import PluginStatus, SchemeInfo, create, list_schemes, parse_spec, registry
from ._schedule import VARIANCE_TYPES, BaseNoiseSchedule
from ._sigma_time import SigmaTimeSchedule
from ._specs import KINDS, DiscretizationSpec, NoiseScheduleSpec, PreconditionerSpec, SchemeSpec, SolverSpec, SpecBacked, WeightingSpec
from ._weighting import LOSS_TYPES, BaseWeighting, LikelihoodWeighting, SNRWeighting, convert_weight

# The pipeline (loss, denoiser, solvers, sampling) is imported on first use.
_LAZY = {
    "MSEDSMLoss": "._loss",
    "PREDICTION_TYPES": "._loss",
    "Denoiser": "._denoiser",
    "make_denoiser": "._denoiser",
    "BaseSolver": "._solvers",
    "SampleResult": "._sampling",
    "sample": "._sampling",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'diffusion_schemes' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(
    [
        "BaseAffinePreconditioner",
        "BaseNoiseSchedule",
        "BaseSolver",
        "BaseWeighting",
        "ConcatConditionWrapper",
        "ConditionError",
        "DPMpp2MSpec",
        "DiscretizationSpec",
        "Denoiser",
        "DiffusionModel",
        "DiffusionSchemesError",
        "DomainError",
        "EDMStochasticEulerSpec",
        "EDMStochasticHeunSpec",
        "EpsilonPreconditioner",
        "EulerMaruyamaSpec",
        "EulerSpec",
        "HeunSpec",
        "KINDS",
        "LOSS_TYPES",
        "LikelihoodWeighting",
        "LikelihoodWeightingSpec",
        "MSEDSMLoss",
        "NoiseSchedule",
        "NoiseScheduleSpec",
        "PREDICTION_TYPES",
        "PairingError",
        "PluginError",
        "PluginStatus",
        "PluginWarning",
        "Preconditioner",
        "PreconditionerSpec",
        "SNRWeighting",
        "SNRWeightingSpec",
        "SampleResult",
        "SchemeConfigError",
        "SchemeConflictError",
        "SchemeInfo",
        "SchemeSpec",
        "SigmaTimeSchedule",
        "SolverSpec",
        "SpecBacked",
        "UnknownKindError",
        "UnknownSchemeError",
        "VARIANCE_TYPES",
        "WeightingRef",
        "WeightingSpec",
        "check_condition",
        "compute_dtype",
        "convert_weight",
        "create",
        "hookimpl",
        "hookspec",
        "json_schema",
        "list_schemes",
        "make_denoiser",
        "parse_spec",
        "registry",
        "sample",
        "spec_type",
    ]
)
