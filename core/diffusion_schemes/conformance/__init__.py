"""The conformance kit: does a scheme honour the contract of its kind?

``check(kind, config)`` builds the scheme by name, exactly as a user would, and runs every
invariant registered for its kind (``CHECKS[kind]``: one small named function each). All
failures are gathered into one :class:`ConformanceError` (an ``AssertionError``, so a test
that calls ``check`` fails with the list) naming each broken invariant and the values seen.

>>> from diffusion_schemes import conformance
>>> sorted(conformance.CHECKS["weighting"])[:3]
['conversions_consistent', 'documented', 'finite_non_negative']
>>> conformance.check("weighting", "snr").ok
True

A scheme author runs it from pytest with one line (see :mod:`.pytest_plugin`)::

    @pytest.mark.diffusion_schemes_conformance("noise_schedule", "cosine")
    def test_cosine_conforms(): ...

Declaring properties: a preconditioner class may set ``unit_variance = ("input", "target")``
(see :mod:`diffusion_schemes.conformance._preconditioner`); a solver class sets ``order``
(its order of convergence on the probability-flow ODE) and ``stochastic``. A discretization is
checked on the ``schedule=`` given, or on the kit's reference schedule.
"""

from __future__ import annotations

from . import _common, _discretization, _noise_schedule, _preconditioner, _solver, _weighting  # noqa: F401 - register the invariants
from ._check import check
from ._preconditioner import UNIT_VARIANCE_PROPERTIES
from ._report import CHECKS, ConformanceError, ConformanceReport, Failure, Invariant, invariant

__all__ = sorted(
    [
        "CHECKS",
        "ConformanceError",
        "ConformanceReport",
        "Failure",
        "Invariant",
        "UNIT_VARIANCE_PROPERTIES",
        "check",
        "invariant",
    ]
)
