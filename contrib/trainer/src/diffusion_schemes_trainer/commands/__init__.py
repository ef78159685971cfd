"""The trainer's commands, one module each, holding its arguments (``add_parser``) and its work (``run``).

Exit codes: 0 success; 2 bad input (unknown scheme, invalid config, missing or corrupt file,
unwritable run directory, a request that cannot fit in memory), printed as ``error: ...`` by
``diffusion-schemes``; 130 interrupted.

Adding a command is one module here with ``add_parser(cli)`` returning its argparse
parser and ``run(args)`` returning the exit code, listed in :data:`COMMANDS`.

>>> import argparse
>>> from diffusion_schemes_trainer.commands import add_commands
>>> parser = argparse.ArgumentParser(prog="diffusion-schemes")
>>> add_commands(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["sample", "runs/x", "--steps", "10"])
>>> args.func.__name__, args.steps
('cmd_sample', 10)
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import compare, ema, nll, sample, train

__all__ = ["COMMANDS", "EXIT_INTERRUPTED", "add_commands"]

EXIT_INTERRUPTED = 130
#: The command modules, in the order ``diffusion-schemes --help`` lists them.
COMMANDS = (train, sample, nll, ema, compare)


def add_commands(cli: Any) -> None:
    """Add the trainer's commands to an argparse sub-parser collection."""
    for command in COMMANDS:
        parser = command.add_parser(cli)
        parser.set_defaults(func=_handler(command))


def _handler(command: Any) -> Any:
    def handler(args: argparse.Namespace) -> int:
        try:
            return command.run(args)
        except KeyboardInterrupt as exc:
            print(f"\n{getattr(exc, 'message', 'interrupted')}", file=sys.stderr)
            return EXIT_INTERRUPTED

    handler.__name__ = f"cmd_{command.__name__.rsplit('.', 1)[-1]}"
    return handler
