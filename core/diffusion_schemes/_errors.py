"""The exceptions of diffusion-schemes, documented in one place.

Every error the library raises on bad input derives from :class:`DiffusionSchemesError`
and from the built-in exception a caller would expect (``ValueError``, ``LookupError``,
``TypeError``), so ``except ValueError`` keeps working for code that knows nothing of us.

>>> import diffusion_schemes as ds
>>> issubclass(ds.UnknownSchemeError, LookupError)
True
"""

from __future__ import annotations

__all__ = [
    "ConditionError",
    "DiffusionSchemesError",
    "DomainError",
    "PairingError",
    "PluginError",
    "PluginWarning",
    "SchemeConfigError",
    "SchemeConflictError",
    "UnknownKindError",
    "UnknownSchemeError",
]


class DiffusionSchemesError(Exception):
    """Base class of every error raised by diffusion-schemes."""


class UnknownKindError(DiffusionSchemesError, ValueError):
    """A scheme kind that does not exist (the kinds are fixed by the core)."""


class UnknownSchemeError(DiffusionSchemesError, LookupError):
    """No installed scheme of that kind has that name.

    ``kind``, ``name`` and ``installed`` (the names that do exist) are kept on the
    exception so a caller can show its own message.
    """

    def __init__(self, message: str, *, kind: str, name: str, installed: list[str]):
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.installed = installed

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0])


class SchemeConfigError(DiffusionSchemesError, ValueError):
    """A scheme's configuration does not validate against its spec.

    ``errors`` holds pydantic's structured error list (``loc``, ``msg``, ``type``, ``input``).
    """

    def __init__(self, message: str, *, errors: list[dict] | None = None):
        super().__init__(message)
        self.errors = errors or []


class SchemeConflictError(DiffusionSchemesError, LookupError):
    """Two distributions register the same kind and name; the name cannot be resolved."""

    def __str__(self) -> str:
        return str(self.args[0])


class PluginError(DiffusionSchemesError, RuntimeError):
    """A plugin failed to load or to register (raised only in strict mode)."""


class DomainError(DiffusionSchemesError, ValueError):
    """A time, noise level or log-SNR outside the domain where a formula is defined."""


class PairingError(DiffusionSchemesError, ValueError):
    """A preconditioner and a schedule of the same scheme whose ``sigma(t)`` and noise level disagree."""


class ConditionError(DiffusionSchemesError, ValueError):
    """A condition whose type or batch size does not fit the latent it goes with."""


class PluginWarning(UserWarning):
    """A plugin distribution was skipped because it failed to load or to register."""
