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

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Field, TypeAdapter, WithJsonSchema

from ._errors import DiffusionSchemesError
from ._registry import check_kind, registry
from ._specs import SchemeSpec

__all__ = ["WeightingRef", "json_schema", "spec_type"]


def _name_checker(kind: str, names: list[str]):
    def check(value: Any) -> Any:
        if isinstance(value, str):
            value = {"name": value}
        if isinstance(value, dict) and "name" in value and value["name"] not in names:
            raise ValueError(str(registry._unknown(kind, value["name"])))
        return value

    return check


def spec_type(kind: str) -> Any:
    """A pydantic type accepting any installed scheme of ``kind``, discriminated by ``name``.

    Use it as the annotation of a field in your own config model. A bare name is accepted
    for a scheme with no required field; an unknown name is rejected with the installed ones
    and the closest match. Defaults given as a name are validated too.

    >>> from pydantic import BaseModel
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
    """
    return Annotated[_spec_union(kind), Field(validate_default=True)]


def _spec_union(kind: str) -> Any:
    check_kind(kind)
    specs = [info.spec for info in registry.infos(kind)]
    names = sorted({s.scheme_name() for s in specs})
    if not specs:
        raise LookupError(f"no {kind} schemes are installed; `diffusion-schemes doctor` shows what was found")
    inner: Any = specs[0] if len(specs) == 1 else Annotated[Union[tuple(specs)], Field(discriminator="name")]
    return Annotated[inner, BeforeValidator(_name_checker(kind, names))]


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of every installed scheme of ``kind`` (a ``oneOf`` keyed by ``name``).

    >>> import diffusion_schemes as ds
    >>> "heun" in ds.json_schema("solver")["discriminator"]["mapping"]
    True
    """
    return TypeAdapter(_spec_union(kind)).json_schema()


def _check_weighting(value: Any) -> Any:
    if value is None or value == "default" or hasattr(value, "__call__") and not isinstance(value, (str, dict)):
        return value
    if isinstance(value, SchemeSpec) or isinstance(value, (str, dict)):
        try:
            spec = registry.parse_spec("weighting", value)
        except DiffusionSchemesError as exc:  # pydantic reports ValueErrors with the field's location
            raise ValueError(str(exc)) from None
        return spec.model_dump(mode="json") if not isinstance(value, str) else value
    raise ValueError(f"a weighting is a registered name, a config mapping, 'default' or None; got {value!r}")


#: Field type for a weighting inside a spec: ``"default"`` (the scheme's own), ``None``
#: (uniform), a registered name (``"sigmoid"``) or a config (``{"name": "sigmoid", "bias": 1}``).
#: Names and configs are validated against the installed weightings.
WeightingRef = Annotated[
    Any,  # a weighting object is kept as given; its config is what get_config() reports
    BeforeValidator(_check_weighting),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"additionalProperties": True, "type": "object"}, {"type": "null"}]}),
]


def resolve_weighting(weighting: Any, default: Callable[[], Any] | None = None) -> Any:
    """The weighting object a config names: the one place a weighting reference is resolved.

    ``None`` stays ``None`` (uniform); ``"default"`` calls ``default`` (the scheme's own; ``None``
    when there is none); a registered name, a config mapping or a spec is built through the
    registry; any other callable ``w(log_snr, schedule=None)`` is used as given.

    >>> import diffusion_schemes as ds
    >>> from diffusion_schemes._config import resolve_weighting
    >>> resolve_weighting({"name": "sigmoid", "bias": 1.0}), resolve_weighting(None)
    (SigmoidWeighting(bias=1.0), None)
    >>> resolve_weighting("default", default=lambda: "the scheme's own")
    "the scheme's own"
    """
    if weighting is None:
        return None
    if isinstance(weighting, str) and weighting == "default":
        return default() if default is not None else None
    if isinstance(weighting, (str, dict)) or hasattr(weighting, "model_dump"):
        return registry.create("weighting", weighting)
    if callable(weighting):
        return weighting
    raise TypeError(
        f"weighting must be 'default', None, a registered name, a config mapping or a callable "
        f"w(log_snr, schedule=None); got {weighting!r}"
    )
