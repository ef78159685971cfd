"""Shared fixtures: a registry that forgets what a test registered, and plugin packages built with pip."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import diffusion_schemes as ds

_ENV = ("DIFFUSION_SCHEMES_PLUGINS", "DIFFUSION_SCHEMES_DISABLE_PLUGINS", "DIFFUSION_SCHEMES_STRICT_PLUGINS")


@pytest.fixture
def fresh_registry(monkeypatch):
    """The process registry, rediscovered from a clean environment before and after the test."""
    for var in _ENV:
        monkeypatch.delenv(var, raising=False)
    ds.registry.reload()
    yield ds.registry
    monkeypatch.undo()
    ds.registry.reload()


def write_distribution(root: Path, dist: str, module: str, body: str) -> Path:
    """Write a minimal plugin distribution (pyproject + one module) under ``root``; return its folder."""
    folder = root / dist
    (folder / module).mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{dist}"
            version = "1.2.3"
            dependencies = ["diffusion-schemes"]

            [project.entry-points.diffusion_schemes]
            {module} = "{module}"
            """
        )
    )
    (folder / module / "__init__.py").write_text(textwrap.dedent(body))
    return folder


def pip_install_target(folders: list[Path], target: Path) -> None:
    """``pip install --target`` the folders (built with this environment's setuptools, no network)."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
           "--disable-pip-version-check", "--target", str(target), *map(str, folders)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PIP_NO_INDEX": "1"})
    assert proc.returncode == 0, proc.stderr


GOOD = '''
"""A third-party preconditioner, written only against the public contract."""
from typing import Literal
import diffusion_schemes as ds

class IdentitySkipSpec(ds.PreconditionerSpec):
    """Skip-only preconditioner of an outside package."""
    name: Literal["outside_skip"] = "outside_skip"
    scale: float = 1.0

    def build(self, model):
        from outside_good.impl import IdentitySkip
        return IdentitySkip(model, scale=self.scale)

@ds.hookimpl
def register_schemes():
    return [IdentitySkipSpec]
'''

GOOD_IMPL = '''
import torch
import diffusion_schemes as ds
from outside_good import IdentitySkipSpec

class IdentitySkip(ds.BaseAffinePreconditioner):
    spec_class = IdentitySkipSpec

    def __init__(self, model, scale=1.0):
        super().__init__(model)
        self.scale = scale

    def compute_coefficients(self, sigma):
        one = torch.ones_like(sigma)
        return one, sigma.log(), self.scale * sigma, one

    def get_config(self):
        return {"scale": self.scale}
'''

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


@pytest.fixture
def with_outside(outside_site, fresh_registry, monkeypatch):
    """Put the outside distributions on sys.path (and PYTHONPATH for subprocesses) for one test."""
    monkeypatch.syspath_prepend(str(outside_site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(outside_site), os.environ.get("PYTHONPATH", "")]))
    ds.registry.reload()
    yield outside_site
    for name in [m for m in sys.modules if m.startswith("outside_")]:
        del sys.modules[name]
