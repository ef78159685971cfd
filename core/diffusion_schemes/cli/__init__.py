"""The ``diffusion-schemes`` command line: ``list``, ``show``, ``schema``, ``doctor`` and ``plot``,
plus the commands plugins add through the ``register_commands`` hook (the trainer's ``train``,
``sample``, ...). ``main(argv)`` runs it and returns the exit status.
"""

from __future__ import annotations

from diffusion_schemes.cli.commands import main

__all__ = ["main"]
