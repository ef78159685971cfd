"""Pydantic specs: the validated, serialisable configuration of one scheme.

A spec names its scheme with a ``Literal`` ``name``, forbids unknown fields, is frozen,
and knows how to ``build`` the object it describes. The kind of a spec (what it builds)
comes from the base class it derives from.

>>> from typing import Literal
>>> import diffusion_schemes as ds
>>> class ConstantWeightingSpec(ds.WeightingSpec):
...     '''A constant loss weight.'''
...     name: Literal["constant"] = "constant"
...     value: float = 1.0
>>> spec = ConstantWeightingSpec(value=2.0)
>>> spec.kind, spec.scheme_name(), spec.summary()
('weighting', 'constant', 'A constant loss weight.')
>>> ConstantWeightingSpec(valu=2.0)
Traceback (most recent call last):
  ...
pydantic_core._pydantic_core.ValidationError: 1 validation error for ConstantWeightingSpec
valu
  Extra inputs are not permitted [type=extra_forbidden, input_value=2.0, input_type=float]
...
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializationInfo, model_serializer

__all__ = [
    "KINDS",
    "NoiseScheduleSpec",
    "PreconditionerSpec",
    "SchemeSpec",
    "SolverSpec",
    "SpecBacked",
    "WeightingSpec",
]

#: The kinds of scheme, in the order they are listed.
KINDS: tuple[str, ...] = ("preconditioner", "noise_schedule", "weighting", "solver")


class SchemeSpec(BaseModel):
    """Base of every scheme spec: frozen, no unknown fields, a ``Literal`` ``name``.

    Subclass one of the per-kind bases (:class:`PreconditionerSpec`,
    :class:`NoiseScheduleSpec`, :class:`WeightingSpec`, :class:`SolverSpec`), declare
    ``name: Literal["my-name"] = "my-name"`` and the scheme's fields with their
    constraints and descriptions, and implement :meth:`build`. The first line of the
    class docstring is the summary that ``diffusion-schemes list`` shows.

    >>> import diffusion_schemes as ds
    >>> spec = ds.parse_spec("solver", {"name": "edm_stochastic_euler", "S_churn": 0})
    >>> isinstance(spec, ds.SchemeSpec), spec.kind, spec.scheme_name()
    (True, 'solver', 'edm_stochastic_euler')
    >>> spec.params()
    {'S_churn': 0.0, 'S_min': 0.05, 'S_max': 50.0, 'S_noise': 1.003}
    >>> spec.S_churn = 1.0
    Traceback (most recent call last):
      ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for EDMStochasticEulerSpec
    S_churn
      Instance is frozen ...
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    kind: ClassVar[str] = ""
    #: Fields that must agree with the other schemes of the same family when they are composed
    #: (EDM's ``sigma_data`` in its preconditioner, schedule and weighting): field names, or
    #: ``{field: shared_name}`` where schemes of the family name the same quantity differently.
    #: :class:`MSEDSMLoss` and the denoiser factory raise :class:`PairingError` on a disagreement.
    shared_parameters: ClassVar[tuple[str, ...] | Mapping[str, str]] = ()
    #: The family whose schemes share :attr:`shared_parameters`; empty means the scheme name.
    shared_family: ClassVar[str] = ""
    name: str

    @model_serializer(mode="wrap")
    def _keep_name(self, handler: Any, info: SerializationInfo) -> Any:
        # a "diff from defaults" dump (exclude_defaults / exclude_unset) must still say which scheme it is
        data = handler(self)
        wanted = info.exclude_defaults or info.exclude_unset
        if wanted and isinstance(data, dict) and "name" not in data and "name" not in (info.exclude or ()):
            data = {"name": self.name, **data}
        return data

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> Any:
        # editors show a description as hover help: the one-line summary, not the doctest examples
        if handler.mode == "serialization":  # _keep_name only adds name back: the fields describe the output
            core_schema = _without_model_serializer(core_schema)
        json_schema = handler(core_schema)
        target = handler.resolve_ref_schema(json_schema)
        summary = cls.summary()
        if summary:
            target["description"] = summary
        else:
            target.pop("description", None)
        return json_schema

    @classmethod
    def scheme_name(cls) -> str:
        """The name fixed by the ``Literal`` annotation of ``name``."""
        field = cls.model_fields.get("name")
        annotation = field.annotation if field is not None else None
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) is typing.Literal and len(args) == 1:
            return str(args[0])
        # under `from __future__ import annotations` an unresolved Literal stays a forward reference
        ref = getattr(annotation, "__forward_arg__", "")
        if ref.replace(" ", "") in (f"Literal[{field.default!r}]", f'Literal["{field.default}"]'):
            return str(field.default)
        raise TypeError(
            f"{cls.__qualname__}.name must be annotated as Literal['<scheme-name>'] with exactly "
            f"one value, got {annotation!r}"
        )

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring (empty when there is none)."""
        doc = inspect.getdoc(cls) or ""
        if cls.__doc__ is None or doc == inspect.getdoc(SchemeSpec):
            return ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def params(self) -> dict[str, Any]:
        """The fields other than ``name``, as keyword arguments for the built object."""
        return {k: getattr(self, k) for k in type(self).model_fields if k != "name"}

    def build(self, **kwargs: Any) -> Any:
        """Build the object this spec describes (implemented by each scheme)."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement build()")


def _without_model_serializer(schema: Any) -> Any:
    if schema.get("type") == "model":
        return {k: v for k, v in schema.items() if k != "serialization"}
    if "schema" in schema and str(schema.get("type")).startswith("function"):  # a model validator around it
        return {**schema, "schema": _without_model_serializer(schema["schema"])}
    return schema


class PreconditionerSpec(SchemeSpec):
    """Spec of a preconditioner; ``build(model=...)`` wraps a backbone.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> spec = ds.parse_spec("preconditioner", "edm")
    >>> isinstance(spec, ds.PreconditionerSpec), spec.kind
    (True, 'preconditioner')
    >>> precond = spec.build(model=torch.nn.Identity())
    >>> isinstance(precond, ds.BaseAffinePreconditioner), precond.spec == spec
    (True, True)
    """

    kind: ClassVar[str] = "preconditioner"

    def build(self, model: Any) -> Any:  # pragma: no cover - abstract
        """Wrap ``model`` in the preconditioner this spec describes."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement build(model)")


class NoiseScheduleSpec(SchemeSpec):
    """Spec of a noise schedule; ``build()`` takes no argument.

    >>> import diffusion_schemes as ds
    >>> spec = ds.parse_spec("noise_schedule", "ve")
    >>> isinstance(spec, ds.NoiseScheduleSpec), spec.kind
    (True, 'noise_schedule')
    >>> schedule = spec.build()
    >>> isinstance(schedule, ds.BaseNoiseSchedule), schedule.spec == spec
    (True, True)
    """

    kind: ClassVar[str] = "noise_schedule"


class WeightingSpec(SchemeSpec):
    """Spec of a loss weighting ``w(log_snr, schedule=None)``.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> spec = ds.parse_spec("weighting", "snr")
    >>> isinstance(spec, ds.WeightingSpec), spec.kind
    (True, 'weighting')
    >>> spec.build()(torch.tensor([0.0]))
    tensor([1.])
    """

    kind: ClassVar[str] = "weighting"


class SolverSpec(SchemeSpec):
    """Spec of a sampler; ``build()`` returns an object called by :func:`diffusion_schemes.sample`.

    >>> import diffusion_schemes as ds
    >>> spec = ds.parse_spec("solver", "heun")
    >>> isinstance(spec, ds.SolverSpec), spec.kind
    (True, 'solver')
    >>> spec.build()
    Heun()
    """

    kind: ClassVar[str] = "solver"


class SpecBacked:
    """Mixin for objects that can give back the spec they are (re)built from.

    Set ``spec_class`` to the spec type and implement :meth:`get_config` to return its
    fields (without ``name``); ``obj.spec`` is then the validated spec, so a checkpoint
    can store ``obj.spec.model_dump()`` and rebuild the object by name.

    >>> import diffusion_schemes as ds
    >>> solver = ds.create("solver", {"name": "edm_stochastic_euler", "S_churn": 0})
    >>> isinstance(solver, ds.SpecBacked)
    True
    >>> config = solver.spec.model_dump()
    >>> config
    {'name': 'edm_stochastic_euler', 'S_churn': 0.0, 'S_min': 0.05, 'S_max': 50.0, 'S_noise': 1.003}
    >>> ds.create("solver", config).get_config() == solver.get_config()
    True
    """

    spec_class: ClassVar[type[SchemeSpec] | None] = None

    def get_config(self) -> dict[str, Any]:
        """The spec's fields other than ``name`` (JSON-serialisable)."""
        return {}

    @property
    def spec(self) -> SchemeSpec:
        """The spec that rebuilds this object by name."""
        if self.spec_class is None:
            raise NotImplementedError(
                f"{type(self).__qualname__} has no spec_class, so it cannot be described by name; "
                "set spec_class to the spec type that builds it"
            )
        return self.spec_class.model_validate(self.get_config())
