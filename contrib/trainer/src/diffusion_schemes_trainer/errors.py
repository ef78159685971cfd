"""The trainer's errors: bad input from a user (config, file, run directory) and an interrupted run.

:class:`TrainerError` derives from the public :class:`diffusion_schemes.DiffusionSchemesError`, so the
``diffusion-schemes`` command line prints it as ``error: ...`` and exits with status 2.

>>> import diffusion_schemes as ds
>>> from diffusion_schemes_trainer import TrainerError
>>> issubclass(TrainerError, ds.DiffusionSchemesError)
True
"""

from __future__ import annotations

import diffusion_schemes as ds

__all__ = ["RunInterrupted", "TrainerError"]


class TrainerError(ds.DiffusionSchemesError, ValueError):
    """A config, file or run directory the trainer cannot use; the message says what to do."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with a message that says which checkpoint is intact and how to continue."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
