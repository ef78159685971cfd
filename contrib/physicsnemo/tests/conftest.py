"""The ``figure`` fixture: a test records a measured difference, and the run ends with a table of them.

``make physicsnemo-test`` prints the table (PhysicsNeMo against this library on the same inputs);
docs/migrating-from-physicsnemo.md quotes it.
"""

from __future__ import annotations

import pytest

_FIGURES: dict[str, float] = {}


@pytest.fixture
def figure():
    def record(name: str, value: float) -> float:
        _FIGURES[name] = max(float(value), _FIGURES.get(name, 0.0))
        return float(value)

    return record


def pytest_terminal_summary(terminalreporter):
    if not _FIGURES:
        return
    terminalreporter.section("PhysicsNeMo against diffusion-schemes (largest difference on the same inputs)")
    width = max(len(name) for name in _FIGURES)
    for name in sorted(_FIGURES):
        terminalreporter.write_line(f"{name:<{width}}  {_FIGURES[name]:.2e}")
