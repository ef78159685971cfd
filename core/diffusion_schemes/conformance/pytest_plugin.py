"""pytest plugin of the conformance kit (registered under the ``pytest11`` entry point).

It gives a scheme author three one-liners; pick whichever fits the test suite:

1. **Marker**: the test fails with the kit's message when the scheme breaks its contract
   (options go to :func:`~diffusion_schemes.conformance.check`; stack several markers freely)::

       @pytest.mark.diffusion_schemes_conformance("noise_schedule", "cosine")
       def test_cosine_conforms(): pass

2. **Fixture** ``conformance``: the :mod:`diffusion_schemes.conformance` module::

       def test_shifted(conformance):
           conformance.check("noise_schedule", {"name": "cosine", "shift": 1.0})

3. **Option** ``--diffusion-schemes-conformance=DIST[,DIST...]``: adds one test per scheme
   that the distribution registers (``conformance[<dist>:<kind>:<name>]``), no code at all::

       pytest --diffusion-schemes-conformance=diffusion-schemes-cosine

Nothing is imported from torch until a check runs, so the plugin costs nothing to sessions
that do not use it.
"""

from __future__ import annotations

from typing import Any

import pytest

MARKER = "diffusion_schemes_conformance"
OPTION = "--diffusion-schemes-conformance"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("diffusion-schemes", "diffusion-schemes conformance kit")
    group.addoption(
        OPTION,
        action="append",
        default=[],
        metavar="DIST",
        help="check every scheme registered by these distributions (comma-separated; may be repeated)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(kind, config, **options): run the diffusion-schemes conformance kit on a scheme "
        "before the test body; the test fails with every broken invariant",
    )


@pytest.fixture
def conformance() -> Any:
    """The :mod:`diffusion_schemes.conformance` module: ``conformance.check(kind, config, **options)``."""
    from diffusion_schemes import conformance as kit

    return kit


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    for mark in item.iter_markers(name=MARKER):
        if len(mark.args) != 2:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.{MARKER} takes (kind, config), e.g. "
                f"@pytest.mark.{MARKER}('noise_schedule', 'cosine'); got {mark.args!r}"
            )
        from diffusion_schemes.conformance import check

        check(*mark.args, **mark.kwargs)


class ConformanceItem(pytest.Item):
    """One generated test: the kit on one scheme of a distribution named on the command line."""

    def __init__(self, *, kind: str, scheme: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind, self.scheme = kind, scheme

    def runtest(self) -> None:
        from diffusion_schemes.conformance import check

        check(self.kind, self.scheme)

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:
        from diffusion_schemes.conformance import ConformanceError

        if isinstance(excinfo.value, ConformanceError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"conformance of {self.kind} {self.scheme!r}"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = [d.strip() for value in config.getoption(OPTION) for d in value.split(",") if d.strip()]
    if not wanted:
        return
    import diffusion_schemes as ds
    from diffusion_schemes.specs.discovery import normalize_distribution

    infos = ds.list_schemes()
    for dist in wanted:
        mine = [i for i in infos if normalize_distribution(i.distribution) == normalize_distribution(dist)]
        if not mine:
            found = sorted({i.distribution for i in infos})
            raise pytest.UsageError(
                f"{OPTION}={dist}: no installed distribution of that name registers a scheme. "
                f"Distributions with schemes: {', '.join(found)}"
            )
        for info in mine:
            name = f"conformance[{info.distribution}:{info.kind}:{info.name}]"
            items.append(ConformanceItem.from_parent(session, name=name, kind=info.kind, scheme=info.name))
