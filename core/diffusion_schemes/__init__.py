"""diffusion-schemes: pluggable diffusion-model schemes for PyTorch.

Preconditioners, noise schedules, loss weightings and solvers are *schemes*, picked by
name from the installed plugin distributions:

>>> import diffusion_schemes as ds
>>> ds.create("solver", "heun").spec.name
'heun'

Each private module owns its ``__all__``; this package re-exports the public ones, so
every public name prints as ``diffusion_schemes.<name>``. See ``docs/`` for the concepts,
every scheme's formulas and how to write a plugin.
"""

from __future__ import annotations

from . import _conditioning, _config, _epsilon_preconditioner, _errors, _hookspecs, _preconditioner
from . import _protocols, _registry, _schedule, _sigma_time, _specs, _uniform_time, _weighting
from ._conditioning import *  # noqa: F403
from ._config import *  # noqa: F403
from ._epsilon_preconditioner import *  # noqa: F403
from ._errors import *  # noqa: F403
from ._hookspecs import *  # noqa: F403
from ._preconditioner import *  # noqa: F403
from ._protocols import *  # noqa: F403
from ._registry import *  # noqa: F403
from ._schedule import *  # noqa: F403
from ._sigma_time import *  # noqa: F403
from ._specs import *  # noqa: F403
from ._uniform_time import *  # noqa: F403
from ._weighting import *  # noqa: F403
from .lazy import lazy_exports

# The pipeline (loss, solvers, sampling) is imported on first use.
_LAZY = {"MSEDSMLoss": "._loss", "BaseSolver": "._solvers", "Guidance": "._guidance", "sample": "._sampling",
         "calibrate_sigmas": "._calibrate"}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

_EAGER = [_conditioning, _config, _epsilon_preconditioner, _errors, _hookspecs, _preconditioner,
          _protocols, _registry, _schedule, _sigma_time, _specs, _uniform_time, _weighting]
__all__ = sorted({name for module in _EAGER for name in module.__all__} | set(_LAZY))

# Errors and the spec bases print under the package's name (``diffusion_schemes.UnknownSchemeError``).
for _name in [*_errors.__all__, *(n for n in _specs.__all__ if n.endswith("Spec"))]:
    globals()[_name].__module__ = __name__
del _name, _EAGER
