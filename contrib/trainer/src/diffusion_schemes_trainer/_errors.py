"""The trainer's error: bad input from a user (config, checkpoint, run directory).

It derives from the public :class:`diffusion_schemes.DiffusionSchemesError`, so the
``diffusion-schemes`` command line prints it as ``error: ...`` and exits with status 2.

>>> import diffusion_schemes as ds
>>> from diffusion_schemes_trainer import TrainerError
>>> issubclass(TrainerError, ds.DiffusionSchemesError)
True
"""

from __future__ import annotations

import diffusion_schemes as ds

__all__ = ["TrainerError"]


class TrainerError(ds.DiffusionSchemesError, ValueError):
    """A config, checkpoint or run directory the trainer cannot use; the message says what to do."""
