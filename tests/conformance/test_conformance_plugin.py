"""The pytest plugin of the conformance kit, run the way a scheme author runs it (pytester)."""

from __future__ import annotations

import importlib.metadata as metadata

import pytest

pytest_plugins = ["pytester"]

PLANTED = '''
from typing import Literal
import pytest
import torch
import diffusion_schemes as ds


class NegativeWeighting(ds.BaseWeighting):
    loss_type = "epsilon"

    def weight(self, log_snr, schedule=None):
        return log_snr


class NegativeSpec(ds.WeightingSpec):
    """A weighting that goes negative."""
    name: Literal["negative"] = "negative"

    def build(self):
        return NegativeWeighting()


NegativeWeighting.spec_class = NegativeSpec


@pytest.fixture(autouse=True)
def _negative_registered():
    with ds.registry.registered(NegativeSpec):
        yield
'''


@pytest.fixture(autouse=True, scope="module")
def _implementations_imported():
    """Import every scheme's implementation module before pytester snapshots sys.modules.

    pytester's in-process runs drop the modules first imported inside them; a plugin package
    imported again would hold new spec classes that the process registry does not know.
    """
    import diffusion_schemes as ds

    backbone = {"model": lambda x, c, condition=None: x}
    for info in ds.list_schemes():
        if any(f.is_required() for n, f in info.spec.model_fields.items() if n != "name"):
            continue  # no config without its fields (the explicit grid); its module is the spec's, imported already
        ds.create(info.kind, info.name, **(backbone if info.kind == "preconditioner" else {}))


def run(pytester, *args):
    # hypothesis' plugin costs a second per in-process session and is not needed here
    return pytester.runpytest("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-W", "ignore::UserWarning", *args)


def test_registered_under_pytest11():
    module = "diffusion_schemes.conformance.pytest_plugin"
    eps = [e for e in metadata.entry_points(group="pytest11") if e.value == module]
    assert [e.name for e in eps] == ["diffusion_schemes_conformance"]


def test_marker_passes_a_conforming_scheme_and_fails_a_broken_one(pytester):
    pytester.makeconftest(PLANTED)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.diffusion_schemes_conformance("weighting", "snr")
        def test_snr():
            pass

        @pytest.mark.diffusion_schemes_conformance("weighting", "negative")
        def test_negative():
            pass
        """
    )
    result = run(pytester, "--strict-markers")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*weighting 'negative' fails 1 of * conformance invariants*", "*- finite_non_negative: *"]
    )


def test_marker_runs_before_the_body_and_takes_options(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.diffusion_schemes_conformance("weighting", "likelihood_weighting", schedule="edm")
        def test_body_runs():
            raise RuntimeError("the body ran")
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*RuntimeError: the body ran*"])


def test_marker_with_wrong_arguments_is_a_usage_error(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.diffusion_schemes_conformance("weighting")
        def test_half():
            pass
        """
    )
    result = run(pytester)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*takes (kind, config)*"])


def test_fixture(pytester):
    pytester.makeconftest(PLANTED)
    pytester.makepyfile(
        """
        def test_check(conformance):
            assert conformance.check("weighting", "snr").ok
            report = conformance.check("weighting", "negative", raise_on_failure=False)
            assert report.failed() == ["finite_non_negative"]
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_option_checks_every_scheme_of_a_distribution(pytester):
    pytester.makepyfile("def test_nothing(): pass")
    result = run(pytester, "--diffusion-schemes-conformance=diffusion-schemes-cosine,diffusion-schemes-sigmoid", "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "*conformance?diffusion-schemes-cosine:noise_schedule:cosine? PASSED*",
        "*conformance?diffusion-schemes-sigmoid:weighting:sigmoid? PASSED*",
    ])


def test_option_reports_a_broken_scheme_by_invariant(pytester):
    conftest = PLANTED[: PLANTED.index("@pytest.fixture")]  # registered at configure time instead
    pytester.makeconftest(conftest + """
def pytest_configure(config):
    ds.registry.register(NegativeSpec, distribution="my-weightings")


def pytest_unconfigure(config):
    ds.registry.unregister(NegativeSpec)
""")
    result = run(pytester, "--diffusion-schemes-conformance=my-weightings")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*- finite_non_negative: w(lambda) = *"])


def test_option_with_an_unknown_distribution_is_a_usage_error(pytester):
    result = run(pytester, "--diffusion-schemes-conformance=no-such-dist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no-such-dist: no installed distribution of that name registers a scheme*"])
