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

import difflib
import inspect
import sys
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializationInfo, ValidationInfo, field_validator, model_serializer, model_validator
from pydantic_core import PydanticCustomError

from diffusion_schemes.errors import ArgumentTypeError, SchemeConfigError

__all__ = [
    "DiscretizationSpec",
    "NoiseScheduleSpec",
    "PreconditionerSpec",
    "SchemeSpec",
    "SolverSpec",
    "SpecBacked",
    "WeightingSpec",
]

#: The kinds of scheme, in the order they are listed.
KINDS: tuple[str, ...] = ("preconditioner", "noise_schedule", "weighting", "solver", "discretization")


class SchemeSpec(BaseModel):
    """Base of every scheme spec: frozen, no unknown fields, a ``Literal`` ``name``.

    Subclass one of the per-kind bases (:class:`PreconditionerSpec`,
    :class:`NoiseScheduleSpec`, :class:`WeightingSpec`, :class:`SolverSpec`,
    :class:`DiscretizationSpec`), declare
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

    # defer_build: a spec's validator is built on its first use, not when its class is made, so importing the
    # library and listing the schemes of every installed plugin builds none of the ~55 (start-up, section 4)
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False,
                              defer_build=True)

    kind: ClassVar[str] = ""
    #: Fields that must agree with the other schemes of the same family when they are composed
    #: (EDM's ``sigma_data`` in its preconditioner, schedule and weighting): field names, or
    #: ``{field: shared_name}`` where schemes of the family name the same quantity differently.
    #: :class:`MSEDSMLoss` and the denoiser factory raise :class:`PairingError` on a disagreement.
    shared_parameters: ClassVar[tuple[str, ...] | Mapping[str, str]] = ()
    #: The family whose schemes share :attr:`shared_parameters`; empty means the scheme name.
    shared_family: ClassVar[str] = ""
    #: The name of the class :meth:`build` constructs, looked up (lazily) in the spec's module.
    builds: ClassVar[str] = ""
    #: Pairs of fields ``(low, high)`` that must satisfy ``low < high`` (when neither is None).
    ordered: ClassVar[tuple[tuple[str, str], ...]] = ()
    name: str

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads True as 1 for an int or float field; a config's `lr = true` is a mistake, not 1.0
        if isinstance(value, bool) and info.field_name is not None:
            field = cls.model_fields.get(info.field_name)
            if field is not None and _wants_number_not_bool(field.annotation):
                raise PydanticCustomError(
                    "bool_not_number",
                    "a boolean is not a number here; give a number (e.g. 1.0 or 0), not true/false",
                )
        return value

    @model_validator(mode="after")
    def _check_ordered(self) -> "SchemeSpec":
        for low, high in self.ordered:
            if getattr(self, low) is None or getattr(self, high) is None:
                continue
            if not getattr(self, low) < getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) must be below {high} ({getattr(self, high)})")
        return self

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
        raise ArgumentTypeError(
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

    def _implementation(self) -> Any:
        """The class named by :attr:`builds`, from the spec's own module (a lazy export imports it)."""
        if not self.builds:
            raise NotImplementedError(
                f"{type(self).__qualname__} does not implement build(); set builds to the name of the "
                "class it constructs (exported by the spec's module) or override build()"
            )
        return getattr(sys.modules[type(self).__module__], self.builds)

    def build(self, **kwargs: Any) -> Any:
        """Build the object this spec describes: ``builds`` called with the spec's fields."""
        return self._implementation()(**kwargs, **self.params())


def _wants_number_not_bool(annotation: Any) -> bool:
    """Whether a field of this type takes numbers (int, float or numeric literals) and no boolean.

    >>> from typing import Literal, Optional
    >>> [_wants_number_not_bool(t) for t in (float, Optional[int], Literal[2, 3], bool, int | bool, str)]
    [True, True, True, False, False, False]
    """
    leaves: list[Any] = []
    pending = [annotation]
    while pending:
        current = pending.pop()
        origin = typing.get_origin(current)
        if origin is typing.Annotated:
            pending.append(typing.get_args(current)[0])
        elif origin is typing.Literal:
            leaves.extend(type(v) for v in typing.get_args(current))
        elif origin is typing.Union or type(current).__name__ == "UnionType":
            pending.extend(typing.get_args(current))
        else:
            leaves.append(current)
    if bool in leaves:
        return False
    return any(leaf in (int, float) for leaf in leaves)


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

    def build(self, model: Any, *, validate: bool = True, meta: Any = None) -> Any:
        """Wrap ``model`` in the preconditioner this spec describes.

        ``validate`` and ``meta`` are the constructor's own switches (not spec fields, so not part
        of a config): ``validate=False`` leaves out the per-call check of the noise levels.

        >>> import torch
        >>> import diffusion_schemes as ds
        >>> ds.parse_spec("preconditioner", "edm").build(model=torch.nn.Identity(), validate=False).validate
        False
        """
        switches = {} if validate is True else {"validate": validate}  # passed on only when set, so a
        if meta is not None:                                            # class without them still builds
            switches["meta"] = meta
        return self._implementation()(model, **self.params(), **switches)


class NoiseScheduleSpec(SchemeSpec):
    """Spec of a noise schedule; ``build()`` takes no argument.

    >>> import diffusion_schemes as ds
    >>> spec = ds.parse_spec("noise_schedule", {"name": "ve", "sigma_max": 50})
    >>> spec.kind, spec.build().domain(), spec.build().spec == spec
    ('noise_schedule', (0.02, 50.0), True)
    """

    kind: ClassVar[str] = "noise_schedule"


class WeightingSpec(SchemeSpec):
    """Spec of a loss weighting ``w(log_snr, schedule=None)``.

    >>> import torch
    >>> import diffusion_schemes as ds
    >>> ds.parse_spec("weighting", "snr").kind, ds.create("weighting", "snr")(torch.tensor([0.0]))
    ('weighting', tensor([1.]))
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


class DiscretizationSpec(SchemeSpec):
    """Spec of a discretization: ``build()`` returns an object whose ``sigmas(N, schedule)`` is a sampler's grid.

    >>> import diffusion_schemes as ds
    >>> spec = ds.parse_spec("discretization", "karras")
    >>> isinstance(spec, ds.DiscretizationSpec), spec.kind
    (True, 'discretization')
    >>> spec.build().sigmas(2, ds.create("noise_schedule", "edm"))
    tensor([8.0000e+01, 2.0000e-03, 0.0000e+00], dtype=torch.float64)
    """

    kind: ClassVar[str] = "discretization"


class SpecBacked:
    """Mixin for objects built from a spec: the spec is the single source of their parameters.

    Set ``spec_class``; the base classes of the core (:class:`BaseAffinePreconditioner`,
    :class:`BaseNoiseSchedule`, :class:`BaseWeighting`) then take the spec's fields as
    constructor arguments (positional in field order, or by keyword), validate them through
    the spec (the same :class:`SchemeConfigError` as :func:`diffusion_schemes.create`), keep
    the spec as ``obj.spec`` and each field as an attribute. ``get_config()`` and ``repr``
    derive from the spec, so a checkpoint can store ``obj.spec.model_dump()`` and rebuild the
    object by name. (A class that writes its own ``get_config`` keeps its own constructor;
    ``obj.spec`` is then validated from that config.)

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
    _spec: SchemeSpec | None = None

    @classmethod
    def _built_from_spec(cls, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether the constructor's arguments are the spec's fields.

        Not for a class that writes its own ``get_config`` (it keeps its own constructor), nor
        for arguments given to a class whose spec has no field (a hand-written base call).
        """
        if cls.spec_class is None or cls.get_config is not SpecBacked.get_config:
            return False
        return len(cls.spec_class.model_fields) > 1 or not (args or kwargs)

    def _bind_spec(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> SchemeSpec:
        """Validate constructor arguments through ``spec_class``; keep the spec and its fields."""
        assert self.spec_class is not None
        fields = [f for f in self.spec_class.model_fields if f != "name"]
        owner = type(self).__qualname__
        if len(args) > len(fields):
            raise ArgumentTypeError(f"{owner} takes at most {len(fields)} positional arguments ({', '.join(fields)}), got {len(args)}")
        config = dict(zip(fields, args))
        twice = sorted(set(config) & set(kwargs))
        if twice:
            raise ArgumentTypeError(f"{owner} got several values for {', '.join(twice)}")
        config.update(kwargs)
        spec = validate_spec(self.spec_class, config)
        for key, value in spec.params().items():
            setattr(self, key, value)
        # an object given for a field (a weighting) is described by its own spec when asked
        self._spec = spec if all(_plain(v) for v in spec.params().values()) else None
        self._config = spec.params()
        return spec

    def get_config(self) -> dict[str, Any]:
        """The spec's fields other than ``name``, JSON-serialisable.

        >>> import diffusion_schemes as ds
        >>> ds.create("noise_schedule", {"name": "ve", "sigma_max": 50}).get_config()
        {'sigma_min': 0.02, 'sigma_max': 50.0, 'weighting': 'default'}
        """
        return {key: _jsonable(value) for key, value in getattr(self, "_config", {}).items()}

    @property
    def spec(self) -> SchemeSpec:
        """The spec that rebuilds this object by name."""
        if self._spec is not None:
            return self._spec
        if self.spec_class is None:
            raise NotImplementedError(
                f"{type(self).__qualname__} has no spec_class, so it cannot be described by name; "
                "set spec_class to the spec type that builds it"
            )
        return self.spec_class.model_validate(self.get_config())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict, tuple))


def _jsonable(value: Any) -> Any:
    """A spec field's value in JSON form; an object built from a spec becomes that spec's config."""
    if isinstance(value, SchemeSpec):
        return value.model_dump(mode="json")
    if _plain(value):
        return value
    try:
        return value.spec.model_dump(mode="json")
    except (AttributeError, NotImplementedError) as exc:
        raise ArgumentTypeError(
            f"{value!r} cannot be described by name, so this object's config cannot be serialised; "
            "pass it by name or config instead"
        ) from exc


def validate_spec(spec_cls: type[SchemeSpec], config: dict[str, Any]) -> SchemeSpec:
    """``spec_cls`` validated from ``config``; a :class:`SchemeConfigError` that names each bad field.

    >>> from diffusion_schemes.weightings.base import SNRWeightingSpec
    >>> validate_spec(SNRWeightingSpec, {"bias": 1})
    Traceback (most recent call last):
      ...
    diffusion_schemes.SchemeConfigError: invalid config for weighting 'snr' (SNRWeightingSpec):
      - bias: unknown field. The fields of 'snr' are: (none)
    ...
    """
    from pydantic import ValidationError

    name = spec_cls.scheme_name()
    try:
        return spec_cls.model_validate({"name": name, **config})
    except ValidationError as exc:
        raise SchemeConfigError(_format_validation(spec_cls.kind, name, spec_cls, exc), errors=exc.errors()) from None


def _format_validation(kind: str, name: str, spec_cls: type[SchemeSpec], exc: Any) -> str:
    fields = [f for f in spec_cls.model_fields if f != "name"]
    lines = [f"invalid config for {kind} {name!r} ({spec_cls.__qualname__}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(config)"
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][-1]), fields, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            lines.append(
                f"  - {loc}: unknown field.{hint} The fields of {name!r} are: {', '.join(fields) or '(none)'}"
            )
        else:
            lines.append(f"  - {loc}: {err['msg']} (got {err.get('input')!r})")
    lines.append(f"Run `diffusion-schemes show {kind} {name}` for the fields, their types, defaults and constraints.")
    return "\n".join(lines)
