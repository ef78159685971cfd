"""Config-by-name for downstream frameworks: spec types to embed in their own pydantic models.

>>> from pydantic import BaseModel
>>> import diffusion_schemes as ds
>>> class SamplerConfig(BaseModel):
...     solver: ds.spec_type("solver") = "heun"
...     num_steps: int = 18
>>> SamplerConfig().solver.name
'heun'
>>> SamplerConfig(solver={"name": "euler"}).solver.name
'euler'

A field accepts exactly what :func:`parse_spec` accepts, and reports what it rejects the way
:func:`parse_spec` does, under the field's path:

>>> SamplerConfig(solver={"name": "edm_stochastic_heun", "S_chrun": 0})
Traceback (most recent call last):
  ...
pydantic_core._pydantic_core.ValidationError: 1 validation error for SamplerConfig
solver
  Value error, invalid config for solver 'edm_stochastic_heun' (EDMStochasticHeunSpec):
  - S_chrun: unknown field. Did you mean 'S_churn'? ...

``WeightingRef`` is the field type of a weighting inside a scheme's spec: ``"default"``,
``None``, a registered name or a config, validated against the installed weightings:

>>> from typing import Literal
>>> class MyScheduleSpec(ds.NoiseScheduleSpec):
...     '''A schedule whose loss weighting can be chosen.'''
...     name: Literal["my_schedule"] = "my_schedule"
...     weighting: ds.WeightingRef = "default"
>>> MyScheduleSpec().weighting, MyScheduleSpec(weighting="snr").weighting
('default', 'snr')
>>> MyScheduleSpec(weighting="snrr")
Traceback (most recent call last):
  ...
pydantic_core._pydantic_core.ValidationError: 1 validation error for MyScheduleSpec
weighting
  Value error, no weighting named 'snrr' is installed. ...
"""

import warnings
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Union

from pydantic.fields import FieldInfo
from pydantic_core import core_schema

from diffusion_schemes.errors import (
    ArgumentTypeError,
    DiffusionSchemesError,
    PluginError,
    PluginWarning,
    SchemeConflictError,
    UnknownSchemeError,
)
from diffusion_schemes.specs.discovery import check_kind, registry, spec_problem
from diffusion_schemes.specs.base import SchemeSpec

__all__ = ["WeightingRef", "json_schema", "spec_type"]


class _ValidateDefault(FieldInfo):
    """``validate_default=True`` where ``spec_type`` is the whole field type.

    A subclass of ``FieldInfo``: pydantic applies it when it annotates a field directly and
    ignores it without a warning inside ``list[...]``, ``Optional[...]`` and friends, where
    only the model (``validate_default=True`` in its config) can ask for defaults to be validated.
    """

    def __init__(self) -> None:
        super().__init__(validate_default=True)


def _installed(kind: str) -> dict[str, type[SchemeSpec]]:
    """Name -> spec of every installed scheme of ``kind`` whose name resolves (conflicts left out)."""
    check_kind(kind)
    specs = {}
    for name in registry.names(kind):
        try:
            specs[name] = registry.lookup(kind, name)
        except DiffusionSchemesError:  # registered by two distributions: the name raises when used
            continue
    return specs


def _bare_names(specs: Mapping[str, type[SchemeSpec]]) -> list[str]:
    """The names that are a whole config on their own: their spec has no required field."""
    bare = []
    for name, spec in specs.items():
        try:
            spec.model_validate({"name": name})
        except ValueError:
            continue
        bare.append(name)
    return bare


def _buildable(kind: str, specs: Mapping[str, type[SchemeSpec]]) -> dict[str, type[SchemeSpec]]:
    """``specs`` without those whose validator pydantic cannot build, each left out with a :class:`PluginWarning`:
    one broken plugin spec must not take the schema of every scheme of its kind with it."""
    kept = {}
    for name, spec in specs.items():
        problem = spec_problem(spec)
        if problem is None:
            kept[name] = spec
            continue
        dist = next((i.distribution for i in registry.infos(kind) if i.name == name and i.spec is spec), "?")
        error = registry.unusable_error(kind, name, dist, spec, problem)
        warnings.warn(f"{error} It is left out of the JSON Schema of {kind} configs.", PluginWarning, stacklevel=2)
    return kept


def _kind_json_schema(kind: str, specs: Mapping[str, type[SchemeSpec]], handler: Any) -> dict[str, Any]:
    """A bare name of a scheme without required fields, or an object with ``name`` and that scheme's fields."""
    specs = _buildable(kind, specs)
    if not specs:
        return {"not": {}, "description": f"No {kind} scheme is installed."}
    definitions, choices = [], {}
    for name, spec in specs.items():
        schema = spec.__pydantic_core_schema__
        if schema.get("ref"):  # one definition per spec, shared with other fields that use it
            definitions.append(schema)
            schema = core_schema.definition_reference_schema(schema["ref"])
        choices[name] = schema
    union = core_schema.tagged_union_schema(choices, discriminator="name")
    configs = handler(core_schema.definitions_schema(union, definitions) if definitions else union)
    configs = {"type": "object", "required": ["name"], **configs}
    bare = _bare_names(specs)
    forms = [{"type": "string", "enum": bare}, configs] if bare else [configs]
    return {"anyOf": forms, "description": f"A {kind}: the name of an installed scheme or a config with its name."}


def _parse(kind: str, value: Any, specs: Mapping[str, type[SchemeSpec]] | None = None) -> SchemeSpec:
    name = value.get("name") if isinstance(value, Mapping) else value if isinstance(value, str) else None
    try:
        if specs is not None and isinstance(name, str) and name not in specs:
            registry.lookup(kind, name)  # unknown, or registered twice: says so
            raise registry._unknown(kind, name)  # installed after this type was made: not in its schema
        return registry.parse_spec(kind, value)
    except (SchemeConflictError, PluginError):  # not the config's fault: the environment's, raised as is
        raise
    except DiffusionSchemesError as exc:  # pydantic reports ValueErrors under the field's path
        raise ValueError(str(exc)) from None


def _dump(value: Any, info: core_schema.SerializationInfo) -> Any:
    if not isinstance(value, SchemeSpec):
        return value
    return value.model_dump(
        mode=info.mode,
        by_alias=info.by_alias,
        exclude_unset=info.exclude_unset,
        exclude_defaults=info.exclude_defaults,
        exclude_none=info.exclude_none,
        round_trip=info.round_trip,
    )


class _SpecOf:
    """The validation, serialisation and JSON Schema of :func:`spec_type`'s annotation."""

    def __init__(self, kind: str, specs: dict[str, type[SchemeSpec]]) -> None:
        self.kind, self.specs = kind, specs

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            lambda value: _parse(self.kind, value, self.specs),
            serialization=core_schema.plain_serializer_function_ser_schema(_dump, info_arg=True),
        )

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        return _kind_json_schema(self.kind, self.specs, handler)


def spec_type(kind: str) -> Any:
    """A pydantic type accepting any installed scheme of ``kind``, discriminated by ``name``.

    Use it as the type of a field in your own config model, alone or inside ``list``,
    ``Optional``, ``dict`` and ``tuple``. A field accepts what :func:`parse_spec` accepts (a
    bare name for a scheme with no required field, a mapping with ``name``, a spec) and
    rejects the rest with :func:`parse_spec`'s message under the field's path; its JSON Schema
    says the same. A default given as a name is validated into a spec where ``spec_type`` is
    the field's whole type; inside a container, set ``validate_default=True`` in the model's
    config for that.

    >>> from pydantic import BaseModel, ConfigDict
    >>> import diffusion_schemes as ds
    >>> class Config(BaseModel):
    ...     solver: ds.spec_type("solver") = "euler"
    >>> Config().solver
    EulerSpec(name='euler')
    >>> Config(solver={"name": "edm_stochastic_heun", "S_churn": 0}).solver.S_churn
    0.0
    >>> Config(solver="hune")
    Traceback (most recent call last):
      ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for Config
    solver
      Value error, no solver named 'hune' is installed. Did you mean 'heun'? ...
    >>> class Sweep(BaseModel):
    ...     model_config = ConfigDict(validate_default=True)
    ...     solvers: list[ds.spec_type("solver")] = ["heun", "euler"]
    >>> Sweep().solvers
    [HeunSpec(name='heun'), EulerSpec(name='euler')]
    """
    specs = _installed(kind)
    if not specs:
        raise UnknownSchemeError(
            f"no {kind} schemes are installed; `diffusion-schemes doctor` shows what was found",
            kind=kind, name="", installed=[],
        )
    members = tuple(specs.values())
    union: Any = members[0] if len(members) == 1 else Union[members]  # noqa: UP007 - a runtime tuple
    return Annotated[union, _SpecOf(kind, specs), _ValidateDefault()]


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a config of ``kind``: what :func:`parse_spec` accepts, for editors and validators.

    A bare name of an installed scheme without required fields, or an object with a ``name``
    and that scheme's fields; a weighting inside a schedule names an installed weighting.

    >>> import diffusion_schemes as ds
    >>> schema = ds.json_schema("solver")
    >>> "heun" in schema["anyOf"][0]["enum"], schema["anyOf"][1]["required"]
    (True, ['name'])
    """
    from pydantic import TypeAdapter  # imported here: pydantic.type_adapter is not needed to list or create (start-up)

    return TypeAdapter(spec_type(kind)).json_schema()


def _check_weighting(value: Any) -> Any:
    if value is None or value == "default" or hasattr(value, "__call__") and not isinstance(value, (str, Mapping)):
        return value
    if isinstance(value, SchemeSpec) or isinstance(value, (str, Mapping)):
        try:
            spec = registry.parse_spec("weighting", value)
        except DiffusionSchemesError as exc:  # pydantic reports ValueErrors with the field's location
            raise ValueError(str(exc)) from None
        return spec.model_dump(mode="json") if not isinstance(value, str) else value
    raise ValueError(f"a weighting is a registered name, a config mapping, 'default' or None; got {value!r}")


class _WeightingRefOf:
    """Validation and JSON Schema of :data:`WeightingRef`, resolved against the weightings installed when used."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(_check_weighting)

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        named = _kind_json_schema("weighting", _installed("weighting"), handler)
        forms = [{"const": "default"}, {"type": "null"}, *named["anyOf"]]
        return {"anyOf": forms}


#: Field type for a weighting inside a spec: ``"default"`` (the scheme's own), ``None``
#: (uniform), a registered name (``"sigmoid"``) or a config (``{"name": "sigmoid", "bias": 1}``).
#: Names and configs are validated against the installed weightings.
WeightingRef = Annotated[Any, _WeightingRefOf()]  # a weighting object is kept as given


def resolve_weighting(weighting: Any, default: Callable[[], Any] | None = None) -> Any:
    """The weighting object a config names: the one place a weighting reference is resolved.

    ``None`` stays ``None`` (uniform); ``"default"`` calls ``default`` (the scheme's own; ``None``
    when there is none); a registered name, a config mapping or a spec is built through the
    registry; any other callable ``w(log_snr, schedule=None)`` is used as given.

    >>> import diffusion_schemes as ds
    >>> from diffusion_schemes.specs.config import resolve_weighting
    >>> resolve_weighting({"name": "sigmoid", "bias": 1.0}), resolve_weighting(None)
    (SigmoidWeighting(bias=1.0), None)
    >>> resolve_weighting("default", default=lambda: "the scheme's own")
    "the scheme's own"
    """
    if weighting is None:
        return None
    if isinstance(weighting, str) and weighting == "default":
        return default() if default is not None else None
    if isinstance(weighting, (str, Mapping)) or hasattr(weighting, "model_dump"):
        return registry.create("weighting", weighting)
    if callable(weighting):
        return weighting
    raise ArgumentTypeError(
        f"weighting must be 'default', None, a registered name, a config mapping or a callable "
        f"w(log_snr, schedule=None); got {weighting!r}"
    )
