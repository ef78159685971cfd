"""Plugin distributions for tests, built and installed with pip the way a third party's would be: used by
the fixtures of ``tests/conftest.py`` and of the trainer's tests (one definition of the outside plugin)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import diffusion_schemes as ds

ENV = ("DIFFUSION_SCHEMES_PLUGINS", "DIFFUSION_SCHEMES_DISABLE_PLUGINS", "DIFFUSION_SCHEMES_STRICT_PLUGINS")


@pytest.fixture
def fresh_registry(monkeypatch):
    """The process registry, rediscovered from a clean environment before and after the test."""
    for var in ENV:
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


@pytest.fixture
def with_outside(outside_site, fresh_registry, monkeypatch):
    """Put the outside distributions (the calling conftest's ``outside_site``) on sys.path, and on
    PYTHONPATH for subprocesses, for one test."""
    monkeypatch.syspath_prepend(str(outside_site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(outside_site), os.environ.get("PYTHONPATH", "")]))
    ds.registry.reload()
    yield outside_site
    for name in [m for m in sys.modules if m.startswith("outside_")]:
        del sys.modules[name]
