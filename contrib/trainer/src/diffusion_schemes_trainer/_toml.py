"""Write a config back as TOML (the standard library reads TOML but does not write it).

Top-level values first, a scheme as an inline table, other tables as ``[sections]``;
``None`` is left out (TOML has no null; the field's default applies). What it writes,
``tomllib`` reads back to the same dict.

>>> from diffusion_schemes_trainer._toml import dumps
>>> print(dumps({"steps": 10, "solver": {"name": "heun"}, "run_dir": None, "model": {"name": "mlp", "hidden": 8}}))
steps = 10
solver = { name = "heun" }
<BLANKLINE>
[model]
name = "mlp"
hidden = 8
<BLANKLINE>
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["dumps"]

#: Tables written inline (one line) at the top level.
INLINE = ("preconditioner", "noise_schedule", "weighting", "solver")


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return "nan" if math.isnan(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        items = [f"{k} = {_value(x)}" for k, x in v.items() if x is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} as TOML")


def dumps(config: Mapping[str, Any]) -> str:
    """``config`` as TOML text."""
    top, tables = [], []
    for key, value in config.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and key not in INLINE:
            body = [f"{k} = {_value(v)}" for k, v in value.items() if v is not None]
            tables.append("\n".join([f"[{key}]", *body]) + "\n")
        else:
            top.append(f"{key} = {_value(value)}")
    return "\n".join(top) + "\n" + ("\n" + "\n".join(tables) if tables else "")
