"""Invariants every kind shares: the object gives its spec back, the spec is documented and has a valid JSON Schema.

A config names a scheme and a checkpoint records ``obj.spec``; these invariants make sure
that what is recorded rebuilds the same object and that downstream tools can read the schema.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import create_model

from diffusion_schemes.specs.config import json_schema, spec_type
from diffusion_schemes.specs.discovery import registry
from diffusion_schemes.specs.base import KINDS
from ._report import invariant

__all__: list[str] = []


def _for_every_kind(fn: Any) -> Any:
    for kind in KINDS:
        invariant(kind)(fn)
    return fn


@_for_every_kind
def spec_roundtrip(ctx: Any) -> str | None:
    """``obj.spec`` equals the spec it was built from, survives JSON, and rebuilds an object with the same spec."""
    try:
        back = ctx.obj.spec
    except NotImplementedError as exc:
        return f"the built object cannot give its spec back: {exc}"
    if back != ctx.spec:
        return f"obj.spec is {back!r}, but the object was built from {ctx.spec!r}; check get_config()"
    dumped = json.loads(json.dumps(back.model_dump(mode="json")))
    reparsed = registry.parse_spec(ctx.kind, dumped)
    if reparsed != ctx.spec:
        return f"the spec's JSON {dumped!r} parses back to {reparsed!r}, not {ctx.spec!r}"
    kwargs = {"model": ctx.probe} if ctx.kind == "preconditioner" else {}
    rebuilt = reparsed.build(**kwargs).spec
    if rebuilt != ctx.spec:
        return f"rebuilding from the JSON config gives spec {rebuilt!r}, not {ctx.spec!r}"
    return None


@_for_every_kind
def json_schema_valid(ctx: Any) -> str | None:
    """The spec's JSON Schema names the scheme, lists its fields, and the installed schema of the kind holds it."""
    cls = type(ctx.spec)
    schema = cls.model_json_schema()
    json.dumps(schema)
    props = schema.get("properties", {})
    missing = [f for f in cls.model_fields if f not in props]
    if missing:
        return f"the JSON Schema of {cls.__qualname__} lacks the fields {missing}"
    name_prop = props["name"]
    if name_prop.get("const", (name_prop.get("enum") or [None])[0]) != ctx.name:
        return f"the schema's 'name' property is {name_prop!r}; expected the constant {ctx.name!r}"
    whole = json_schema(ctx.kind)
    mapping = whole["anyOf"][-1].get("discriminator", {}).get("mapping", {})  # the config form of the kind
    ref = mapping.get(ctx.name, "")
    described = whole.get("$defs", {}).get(ref.rsplit("/", 1)[-1], {}).get("properties", {}).get("name", {})
    if described.get("const") != ctx.name:
        return f"ds.json_schema({ctx.kind!r}) does not map {ctx.name!r} to the schema of {cls.__qualname__}: {mapping}"
    # the way a downstream framework embeds it: as the type of a field of its own config
    holder = create_model("DownstreamConfig", scheme=(spec_type(ctx.kind), ...))
    via_union = holder.model_validate_json(f'{{"scheme": {ctx.spec.model_dump_json()}}}').scheme
    if via_union != ctx.spec:
        return f"validating the spec's JSON through ds.spec_type({ctx.kind!r}) gives {via_union!r}, not {ctx.spec!r}"
    return None


@_for_every_kind
def documented(ctx: Any) -> str | None:
    """The spec has a one-line summary (its docstring) and every field a description."""
    cls = type(ctx.spec)
    problems = []
    if not cls.summary():
        problems.append(f"{cls.__qualname__} has no docstring, so `diffusion-schemes list` shows no summary")
    bare = [f for f, info in cls.model_fields.items() if f != "name" and not info.description]
    if bare:
        problems.append(f"fields without a description (use Field(..., description=...)): {bare}")
    return "; ".join(problems) or None
