"""Shared fixtures: a registry that forgets what a test registered, and plugin packages built with pip."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugin_packages import GOOD, GOOD_IMPL, fresh_registry, pip_install_target, with_outside, write_distribution  # noqa: F401

BROKEN_IMPORT = '''
raise ImportError("outside_broken needs a package that is not installed")
'''

BAD_RETURN = '''
import diffusion_schemes as ds

@ds.hookimpl
def register_schemes():
    return ["not a spec class"]
'''

CONFLICT = '''
from typing import Literal
import diffusion_schemes as ds

class OtherEDMSpec(ds.PreconditionerSpec):
    """A second 'edm' preconditioner, to conflict with diffusion-schemes-edm."""
    name: Literal["edm"] = "edm"

    def build(self, model):
        raise RuntimeError("never built")

@ds.hookimpl
def register_schemes():
    return [OtherEDMSpec]
'''


@pytest.fixture(scope="session")
def outside_site(tmp_path_factory) -> Path:
    """A folder holding four plugin distributions installed with pip (not on sys.path by default):

    ``outside-good`` (preconditioner ``outside_skip``), ``outside-broken`` (raises on import),
    ``outside-bad-return`` (returns a non-spec), ``outside-conflict`` (a second ``edm``).
    """
    src = tmp_path_factory.mktemp("outside-src")
    good = write_distribution(src, "outside-good", "outside_good", GOOD)
    (good / "outside_good" / "impl.py").write_text(GOOD_IMPL)
    folders = [
        good,
        write_distribution(src, "outside-broken", "outside_broken", BROKEN_IMPORT),
        write_distribution(src, "outside-bad-return", "outside_bad_return", BAD_RETURN),
        write_distribution(src, "outside-conflict", "outside_conflict", CONFLICT),
    ]
    site = tmp_path_factory.mktemp("outside-site")
    pip_install_target(folders, site)
    return site
