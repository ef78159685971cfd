"""The vocabulary of the kit: one named invariant, its failure, the report and the error.

An invariant is a small function ``fn(ctx) -> str | None`` registered for one kind with
:func:`invariant`; it returns ``None`` when it holds and a sentence with the values seen when
it does not (raising is also a failure: the exception text becomes the message). Keeping one
function per invariant is what lets a message name the defect.

>>> from diffusion_schemes.conformance import ConformanceError, ConformanceReport, Failure
>>> report = ConformanceReport("weighting", "snr", passed=["finite"], failures=[Failure("non_negative", "w=-1 at 0")])
>>> print(ConformanceError(report))  # doctest: +NORMALIZE_WHITESPACE
weighting 'snr' fails 1 of 2 conformance invariants:
  - non_negative: w=-1 at 0
>>> issubclass(ConformanceError, AssertionError)
True
"""

# no `from __future__ import annotations`: the examples below define pydantic specs, which
# resolve their annotations in this module's namespace
import dataclasses
from collections.abc import Callable
from typing import Any

from diffusion_schemes.errors import DiffusionSchemesError
from diffusion_schemes.specs.base import KINDS

__all__ = ["CHECKS", "ConformanceError", "ConformanceReport", "Failure", "Invariant", "invariant"]


@dataclasses.dataclass(frozen=True)
class Invariant:
    """One named property every scheme of ``kind`` must have; ``doc`` says what it means.

    >>> from diffusion_schemes.conformance import CHECKS
    >>> CHECKS["noise_schedule"]["inverse_roundtrip"].doc
    '``get_t_from_log_snr`` inverts ``get_log_snr`` (t -> lambda -> t and lambda -> t -> lambda).'
    """

    kind: str
    name: str
    fn: Callable[[Any], str | None]
    doc: str


#: The invariants of each kind, in the order they run: ``CHECKS[kind][name]``.
CHECKS: dict[str, dict[str, Invariant]] = {kind: {} for kind in KINDS}


CheckFn = Callable[[Any], "str | None"]


def invariant(kind: str, name: str | None = None) -> Callable[[CheckFn], CheckFn]:
    """Register ``fn(ctx) -> str | None`` as the invariant ``name`` (default: the function's name) of ``kind``.

    The kit's own invariants are registered this way; a project can add its own (they run for
    every scheme of the kind, so keep them to properties the whole kind must have). ``ctx.obj``
    is the built scheme, ``ctx.spec`` its spec, ``ctx.schedule`` the paired schedule.

    >>> import torch
    >>> from diffusion_schemes.conformance import CHECKS, check, invariant
    >>> @invariant("weighting", "at_most_a_million")
    ... def _at_most_a_million(ctx):
    ...     w = ctx.obj(torch.linspace(-5, 5, 11), schedule=ctx.schedule)
    ...     return None if bool((w <= 1e6).all()) else f"w reaches {float(w.max()):g}"
    >>> "at_most_a_million" in check("weighting", "snr").passed
    True
    >>> del CHECKS["weighting"]["at_most_a_million"]
    """

    def register(fn: CheckFn) -> CheckFn:
        key = name or fn.__name__.lstrip("_")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        CHECKS[kind][key] = Invariant(kind, key, fn, doc)
        return fn

    return register


@dataclasses.dataclass(frozen=True)
class Failure:
    """A failed invariant: its name and what was seen.

    >>> Failure("log_snr_decreasing", "lambda(0.5) = 1 but lambda(0.6) = 2").invariant
    'log_snr_decreasing'
    """

    invariant: str
    message: str


@dataclasses.dataclass
class ConformanceReport:
    """What :func:`~diffusion_schemes.conformance.check` found: the invariants that held, failed or were skipped.

    >>> from diffusion_schemes.conformance import check
    >>> report = check("preconditioner", "ve", compile=False)
    >>> report.ok, report.skipped
    (True, {'compiles_fullgraph': 'compile=False'})
    """

    kind: str
    name: str
    passed: list[str] = dataclasses.field(default_factory=list)
    failures: list[Failure] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no invariant failed."""
        return not self.failures

    def failed(self) -> list[str]:
        """The names of the failed invariants."""
        return [f.invariant for f in self.failures]

    def __str__(self) -> str:
        lines = [f"{self.kind} {self.name!r}: {len(self.passed)} invariants hold"]
        lines += [f"  - FAILED {f.invariant}: {f.message}" for f in self.failures]
        lines += [f"  - skipped {k}: {why}" for k, why in self.skipped.items()]
        return "\n".join(lines)


class ConformanceError(DiffusionSchemesError, AssertionError):
    """A scheme breaks the contract of its kind; ``report.failures`` names every broken invariant.

    It is an ``AssertionError`` (a test calling ``check`` fails, not errors) and a
    :class:`~diffusion_schemes.DiffusionSchemesError`.

    >>> from typing import Literal
    >>> import torch
    >>> import diffusion_schemes as ds
    >>> from diffusion_schemes.conformance import ConformanceError, check
    >>> class Flipped(ds.BaseWeighting):
    ...     loss_type = "epsilon"
    ...     def weight(self, log_snr, schedule=None):
    ...         return -torch.ones_like(log_snr)
    >>> class FlippedSpec(ds.WeightingSpec):
    ...     '''Minus one everywhere.'''
    ...     name: Literal["flipped"] = "flipped"
    ...     def build(self):
    ...         return Flipped()
    >>> Flipped.spec_class = FlippedSpec
    >>> with ds.registry.registered(FlippedSpec):
    ...     try:
    ...         check("weighting", "flipped")
    ...     except ConformanceError as exc:
    ...         print(exc.report.failed())
    ['finite_non_negative']
    """

    def __init__(self, report: ConformanceReport) -> None:
        self.report = report
        total = len(report.passed) + len(report.failures)
        head = f"{report.kind} {report.name!r} fails {len(report.failures)} of {total} conformance invariants:"
        body = "\n".join(f"  - {f.invariant}: {f.message}" for f in report.failures)
        super().__init__(f"{head}\n{body}")
