"""The hooks a plugin implements, marked with :data:`diffusion_schemes.hookimpl`.

A plugin is a module (or any object) exposed under the entry-point group
``diffusion_schemes`` that implements one or both of these hooks:

>>> import diffusion_schemes as ds
>>> @ds.hookimpl
... def register_schemes():
...     return []          # spec classes; the kind comes from each spec's base class

``hookimpl`` marks a plugin's implementation; ``hookspec`` marks the hook declarations
below (for the core only). Both belong to the ``diffusion_schemes`` project of pluggy:

>>> from diffusion_schemes.specs import hooks as _hookspecs
>>> ds.hookimpl.project_name, _hookspecs.hookspec.project_name
('diffusion_schemes', 'diffusion_schemes')
>>> hasattr(register_schemes, "diffusion_schemes_impl")
True
>>> hasattr(_hookspecs.register_schemes, "diffusion_schemes_spec")
True
"""

from __future__ import annotations

from typing import Any

import pluggy

__all__ = ["hookimpl"]

PROJECT = "diffusion_schemes"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_schemes() -> list[type]:
    """Return the spec classes this plugin provides (subclasses of the per-kind spec bases)."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add subcommands to the ``diffusion-schemes`` command line.

    ``cli`` is the ``argparse`` sub-parser collection: call ``cli.add_parser(name, help=...)``,
    add arguments, and ``set_defaults(func=handler)`` where ``handler(args) -> int`` returns
    the exit code.
    """
