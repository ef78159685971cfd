"""diffusion-schemes: pluggable diffusion-model schemes for PyTorch.

Preconditioners, noise schedules, loss weightings, solvers and discretizations are *schemes*,
picked by name from the installed plugin distributions:

>>> import diffusion_schemes as ds
>>> ds.create("solver", "heun").spec.name
'heun'

This namespace is the contract: the names a user or a plugin author needs every day. Everything
else is public in the package that owns it (``diffusion_schemes.errors``, ``.specs``,
``.schedules``, ``.preconditioners``, ``.weightings``, ``.solvers``, ``.discretizations``,
``.sampling``, ``.adapters``, ``.conformance``, ``.cli``); ``docs/architecture.md`` shows the plan.
"""

from __future__ import annotations

from diffusion_schemes import specs as _specs
from diffusion_schemes.adapters import ConcatConditionWrapper
from diffusion_schemes.errors import ConditionError, DiffusionSchemesError, DomainError, PairingError, PluginError
from diffusion_schemes.errors import PluginWarning, SchemeConfigError, SchemeConflictError, UnknownKindError, UnknownSchemeError
from diffusion_schemes.lazy import lazy_exports
from diffusion_schemes.preconditioners import BaseAffinePreconditioner, EpsilonPreconditioner
from diffusion_schemes.schedules import BaseNoiseSchedule, SigmaTimeSchedule, UniformTimeSchedule
from diffusion_schemes.specs import DiffusionModel, NoiseSchedule, Preconditioner  # the protocols
from diffusion_schemes.specs import DiscretizationSpec, NoiseScheduleSpec, PreconditionerSpec, SchemeSpec, SolverSpec
from diffusion_schemes.specs import SpecBacked, WeightingRef, WeightingSpec, hookimpl
from diffusion_schemes.specs import create, json_schema, list_schemes, parse_spec, registry, spec_type
from diffusion_schemes.weightings import BaseWeighting

# The pipeline (loss, guidance, posterior sampling, patches, likelihood, calibrated grids, solvers, sampling) is
# imported on first use.
_LAZY = {
    "MSEDSMLoss": "diffusion_schemes.sampling",
    "Guidance": "diffusion_schemes.sampling",
    "Posterior": "diffusion_schemes.sampling",
    "Patched": "diffusion_schemes.sampling",
    "sample": "diffusion_schemes.sampling",
    "log_likelihood": "diffusion_schemes.sampling",
    "calibrate_sigmas": "diffusion_schemes.sampling",
    "BaseSolver": "diffusion_schemes.solvers",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

# The common errors; every error is in diffusion_schemes.errors.
_TOP_LEVEL_ERRORS = [
    "ConditionError",
    "DiffusionSchemesError",
    "DomainError",
    "PairingError",
    "PluginError",
    "PluginWarning",
    "SchemeConfigError",
    "SchemeConflictError",
    "UnknownKindError",
    "UnknownSchemeError",
]
__all__ = sorted([
    *_TOP_LEVEL_ERRORS, *_LAZY, "ConcatConditionWrapper", "BaseAffinePreconditioner", "EpsilonPreconditioner",
    "BaseNoiseSchedule", "SigmaTimeSchedule", "UniformTimeSchedule", "BaseWeighting",
    # specs: the protocols, the spec bases, the registry and the config types
    "DiffusionModel", "NoiseSchedule", "Preconditioner", "SchemeSpec", "PreconditionerSpec", "NoiseScheduleSpec",
    "WeightingSpec", "SolverSpec", "DiscretizationSpec", "SpecBacked", "WeightingRef", "hookimpl",
    "create", "parse_spec", "list_schemes", "registry", "spec_type", "json_schema",
])

# The errors and spec bases of this namespace print under it (``diffusion_schemes.UnknownSchemeError``);
# every other error prints under ``diffusion_schemes.errors``, where all of them live.
for _name in [*_TOP_LEVEL_ERRORS, *(n for n in _specs.__all__ if n.endswith("Spec") and n in __all__)]:
    globals()[_name].__module__ = __name__
del _name, _specs
