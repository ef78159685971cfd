"""The ``diffusion-schemes`` command line: ``list``, ``show``, ``schema``, ``doctor`` and ``plot``,
plus the commands plugins add through the ``register_commands`` hook (the trainer's ``train``,
``sample``, ...). ``main(argv)`` runs it and returns the exit status; ``build_parser()`` gives its
argument parser (the documentation's tests parse every command line they show with it).
"""

from __future__ import annotations

from diffusion_schemes.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
