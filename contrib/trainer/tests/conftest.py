"""The fixtures the trainer's tests share: a registry that forgets what a test registered, and one outside
plugin distribution (a preconditioner ``outside_skip``) installed with pip, to train by name."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import diffusion_schemes as ds

_ENV = ("DIFFUSION_SCHEMES_PLUGINS", "DIFFUSION_SCHEMES_DISABLE_PLUGINS", "DIFFUSION_SCHEMES_STRICT_PLUGINS")

OUTSIDE = '''
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

OUTSIDE_IMPL = '''
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


@pytest.fixture
def fresh_registry(monkeypatch):
    """The process registry, rediscovered from a clean environment before and after the test."""
    for var in _ENV:
        monkeypatch.delenv(var, raising=False)
    ds.registry.reload()
    yield ds.registry
    monkeypatch.undo()
    ds.registry.reload()


@pytest.fixture(scope="session")
def outside_site(tmp_path_factory) -> Path:
    """A folder holding the distribution ``outside-good`` (module ``outside_good``), installed with pip."""
    folder = tmp_path_factory.mktemp("trainer-outside-src") / "outside-good"
    (folder / "outside_good").mkdir(parents=True)
    (folder / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "outside-good"
        version = "1.2.3"
        dependencies = ["diffusion-schemes"]

        [project.entry-points.diffusion_schemes]
        outside_good = "outside_good"
    """))
    (folder / "outside_good" / "__init__.py").write_text(OUTSIDE)
    (folder / "outside_good" / "impl.py").write_text(OUTSIDE_IMPL)
    site = tmp_path_factory.mktemp("trainer-outside-site")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
           "--disable-pip-version-check", "--target", str(site), str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PIP_NO_INDEX": "1"})
    assert proc.returncode == 0, proc.stderr
    return site


@pytest.fixture
def with_outside(outside_site, fresh_registry, monkeypatch):
    """Put the outside distribution on sys.path (and PYTHONPATH for subprocesses) for one test."""
    monkeypatch.syspath_prepend(str(outside_site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(outside_site), os.environ.get("PYTHONPATH", "")]))
    ds.registry.reload()
    yield outside_site
    for name in [m for m in sys.modules if m.startswith("outside_")]:
        del sys.modules[name]
