"""The trainer's commands, one module each, holding its arguments (``add_parser``) and its work (``run``).

Exit codes: 0 success; 2 bad input (unknown scheme, invalid config, missing or corrupt file,
unwritable run directory, a request that cannot fit in memory), printed as ``error: ...`` by
``diffusion-schemes``; 130 interrupted.

Adding a command is one module here with ``add_parser(cli)`` returning its argparse
parser and ``run(args)`` returning the exit code, listed in :data:`COMMANDS`. A command that
shares its work among processes under ``torchrun`` sets ``DISTRIBUTED = True`` in its module;
the others refuse to start under ``torchrun`` (each process would do the whole job and write the
same files).

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

from ..errors import TrainerError
from ..training import launched_world_size
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
    name = command.__name__.rsplit(".", 1)[-1]

    def handler(args: argparse.Namespace) -> int:
        world = launched_world_size()
        if not getattr(command, "DISTRIBUTED", False) and world > 1:
            runs_on = ", ".join(c.__name__.rsplit(".", 1)[-1] for c in COMMANDS if getattr(c, "DISTRIBUTED", False))
            raise TrainerError(
                f"`{name}` runs on one process, but this is one of {world} started by torchrun; start it without "
                f"torchrun (the commands that share their work among processes: {runs_on})"
            )
        try:
            return command.run(args)
        except KeyboardInterrupt as exc:
            print(f"\n{getattr(exc, 'message', 'interrupted')}", file=sys.stderr)
            return EXIT_INTERRUPTED

    handler.__name__ = f"cmd_{name}"
    return handler
