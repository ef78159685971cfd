"""What a scheme is and how one is found by name.

A *spec* (:class:`SchemeSpec` and its per-kind bases) is the single source of a scheme's
parameters: it validates a config, names the class it builds and gives ``get_config`` and
``repr`` to the object built from it (:class:`SpecBacked`). The registry discovers the plugin
distributions (the entry-point group ``diffusion_schemes``, through pluggy's ``register_schemes``
hook, the core's own built-ins included), looks specs up by kind and name, and builds them
(:func:`create`, :func:`parse_spec`, :func:`list_schemes`). The protocols
(:class:`DiffusionModel`, :class:`Preconditioner`, :class:`NoiseSchedule`) say what a built scheme
must do. ``spec_type`` and ``json_schema``
give downstream configs the same validation as a pydantic type and as a JSON Schema.
"""

from __future__ import annotations

from diffusion_schemes.specs.base import (
    KINDS,
    DiscretizationSpec,
    NoiseScheduleSpec,
    PreconditionerSpec,
    SchemeSpec,
    SolverSpec,
    SpecBacked,
    WeightingSpec,
    validate_spec,
)
from diffusion_schemes.specs.config import WeightingRef, json_schema, resolve_weighting, spec_type
from diffusion_schemes.specs.discovery import (
    PluginStatus,
    Registry,
    SchemeInfo,
    create,
    list_schemes,
    parse_spec,
    registry,
)
from diffusion_schemes.specs.hooks import hookimpl
from diffusion_schemes.specs.protocols import DiffusionModel, NoiseSchedule, Preconditioner

__all__ = [
    "KINDS",
    "DiffusionModel",
    "DiscretizationSpec",
    "NoiseSchedule",
    "NoiseScheduleSpec",
    "PluginStatus",
    "Preconditioner",
    "PreconditionerSpec",
    "Registry",
    "SchemeInfo",
    "SchemeSpec",
    "SolverSpec",
    "SpecBacked",
    "WeightingRef",
    "WeightingSpec",
    "create",
    "hookimpl",
    "json_schema",
    "list_schemes",
    "parse_spec",
    "registry",
    "resolve_weighting",
    "spec_type",
    "validate_spec",
]
