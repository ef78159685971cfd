"""Lazy exports for a package's ``__init__``: names imported from their module on first access.

A plugin's entry module stays light: it declares its specs and exports its
implementations lazily, so listing the installed schemes never imports them.

>>> import sys, types
>>> from diffusion_schemes.lazy import lazy_exports
>>> package = types.ModuleType("demo")
>>> package.__getattr__, package.__dir__ = lazy_exports("demo", {"sqrt": "math", "dumps": "json"})
>>> sys.modules["demo"] = package
>>> package.sqrt(4.0), "dumps" in dir(package)
(2.0, True)
>>> package.nope
Traceback (most recent call last):
  ...
AttributeError: module 'demo' has no attribute 'nope'
>>> del sys.modules["demo"]
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, names: Mapping[str, str], rename_module: bool = False
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` that import each of ``names`` from its module on first use.

    ``names`` maps an exported name to the module holding it (relative to ``package`` when it
    starts with a dot). A name, once loaded, is cached in the package's namespace. With
    ``rename_module`` a loaded class or function gets ``__module__ = package``, so it prints
    under the package's public name.
    """
    table = dict(names)

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name], package), name)
        if rename_module and hasattr(value, "__module__") and not isinstance(value, str):
            value.__module__ = package
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(table))

    return __getattr__, __dir__
