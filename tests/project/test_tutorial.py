"""docs/tutorial-plugin.md, run the way a reader follows it.

The files the tutorial shows (fenced blocks with ``title="path"``) are written to an empty
folder, the package is pip-installed into a temporary target put on ``sys.path`` (nothing is
installed into the environment), and then: the registry discovers it from its own
distribution, ``diffusion-schemes list`` shows it, the kit passes, the page's usage example
runs, and the package's own test suite (the one-line marker) passes under pytest.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import diffusion_schemes as ds
from diffusion_schemes import cli, conformance

PAGE = Path(__file__).resolve().parents[2] / "docs" / "tutorial-plugin.md"
TITLED = re.compile(r'^```(?P<lang>[\w-]+) title="(?P<path>[^"]+)"\n(?P<body>.*?)^```\s*$', re.M | re.S)
UNTITLED_PYTHON = re.compile(r"^```python\n(?P<body>.*?)^```\s*$", re.M | re.S)
DIST, MODULE = "diffusion-schemes-min-snr", "diffusion_schemes_min_snr"


def tutorial_files() -> dict[str, str]:
    return {m.group("path"): m.group("body") for m in TITLED.finditer(PAGE.read_text())}


def test_the_page_shows_every_file_of_the_package():
    assert sorted(tutorial_files()) == [
        "pyproject.toml",
        f"src/{MODULE}/__init__.py",
        f"src/{MODULE}/_weighting.py",
        "tests/test_min_snr.py",
    ]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """``(package folder, install target)``: the tutorial's package written out and pip-installed."""
    folder = tmp_path_factory.mktemp("tutorial") / DIST
    for path, body in tutorial_files().items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(body)
    site = tmp_path_factory.mktemp("tutorial-site")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
           "--disable-pip-version-check", "--target", str(site), str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PIP_NO_INDEX": "1"})
    assert proc.returncode == 0, proc.stderr
    return folder, site


@pytest.fixture
def installed(built, fresh_registry, monkeypatch):
    """The tutorial's package on sys.path for one test; afterwards it is gone from sys.path and sys.modules."""
    folder, site = built
    monkeypatch.syspath_prepend(str(site))
    ds.registry.reload()
    yield folder, site
    for name in [m for m in sys.modules if m == MODULE or m.startswith(MODULE + ".")]:
        del sys.modules[name]


def test_discovered_listed_and_conforming(installed, capsys):
    (info,) = [i for i in ds.list_schemes("weighting") if i.name == "min_snr"]
    assert (info.distribution, info.version) == (DIST, "0.1.0")
    assert info.summary.startswith("Min-SNR-gamma")

    assert cli.main(["list", "--kind", "weighting"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("weighting  min_snr"))
    assert DIST in row and "0.1.0" in row

    report = conformance.check("weighting", {"name": "min_snr", "gamma": 0.5})
    assert report.ok and "conversions_consistent" in report.passed


def test_usage_example_runs(installed, capsys):
    for m in UNTITLED_PYTHON.finditer(PAGE.read_text()):
        exec(compile(m.group("body"), str(PAGE), "exec"), {})
    assert capsys.readouterr().out.strip() == "MinSNRWeighting(gamma=5.0)"


@pytest.mark.slow
def test_the_packages_own_tests_pass(installed):
    folder, site = installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "tests"]
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


def test_the_failure_shown_on_the_page_is_what_the_kit_prints(installed, monkeypatch):
    """The page shows the kit's message for a weighting that returns log_snr; plant exactly that."""
    from diffusion_schemes_min_snr._weighting import MinSNRWeighting

    monkeypatch.setattr(MinSNRWeighting, "weight", lambda self, log_snr, schedule=None: log_snr)
    with pytest.raises(conformance.ConformanceError) as info:
        conformance.check("weighting", "min_snr")
    shown = re.search(r"```text\n(weighting 'min_snr' fails.*?)\n```", PAGE.read_text(), re.S).group(1)
    assert str(info.value) == shown


def test_nothing_is_left_installed():
    assert "min_snr" not in [i.name for i in ds.list_schemes("weighting")]
    assert MODULE not in sys.modules
