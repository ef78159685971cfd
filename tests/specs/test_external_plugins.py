"""Packages that live outside the repository, installed with pip, found through the entry point."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import diffusion_schemes as ds

OUTSIDE = "outside-good,diffusion-schemes-edm"


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "diffusion_schemes", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120,
    )


def test_outside_package_is_listed_built_by_name_and_gives_its_spec_back(with_outside, monkeypatch):
    monkeypatch.setenv("DIFFUSION_SCHEMES_PLUGINS", OUTSIDE)
    ds.registry.reload()
    info = [i for i in ds.list_schemes("preconditioner") if i.name == "outside_skip"]
    assert [(i.distribution, i.version, i.summary) for i in info] == [
        ("outside-good", "1.2.3", "Skip-only preconditioner of an outside package.")
    ]
    backbone = lambda x, c_noise, condition=None: torch.ones_like(x)  # noqa: E731
    precond = ds.create("preconditioner", {"name": "outside_skip", "scale": 2.0}, model=backbone)
    x, sigma = torch.zeros(3, 2), torch.tensor([0.5, 1.0, 2.0])
    torch.testing.assert_close(precond(x, sigma), 2.0 * sigma[:, None].expand(3, 2))
    assert precond.spec.model_dump() == {"name": "outside_skip", "scale": 2.0}
    rebuilt = ds.create("preconditioner", precond.spec.model_dump(), model=backbone)
    assert rebuilt.spec == precond.spec


def test_outside_package_shows_in_cli_list_and_doctor(with_outside):
    env = {"DIFFUSION_SCHEMES_PLUGINS": OUTSIDE}
    listed = _cli("list", "--kind", "preconditioner", env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "outside_skip" in line)
    assert "outside-good" in row and "1.2.3" in row
    doctor = _cli("doctor", env=env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert any("outside-good" in line and "loaded" in line for line in doctor.stdout.splitlines())


def test_plugin_raising_on_import_is_reported_and_the_rest_keeps_working(with_outside, monkeypatch):
    monkeypatch.setenv("DIFFUSION_SCHEMES_PLUGINS", "outside-good,outside-broken,diffusion-schemes-edm")
    ds.registry.reload()
    with pytest.warns(ds.PluginWarning, match=r"'outside-broken'.*ImportError: outside_broken needs"):
        names = [i.name for i in ds.list_schemes("preconditioner")]
    assert {"edm", "outside_skip"} <= set(names)
    assert ds.create("preconditioner", "edm", model=torch.nn.Identity()).sigma_data == 0.5
    status = {p.distribution: p for p in ds.registry.plugins()}
    assert status["outside-broken"].status == "failed"
    assert "ImportError" in status["outside-broken"].error
    doctor = _cli("doctor", env={"DIFFUSION_SCHEMES_PLUGINS": "outside-good,outside-broken,diffusion-schemes-edm"})
    assert doctor.returncode == 1
    assert any("outside-broken" in line and "failed" in line for line in doctor.stdout.splitlines())
    listed = _cli("list", env={"DIFFUSION_SCHEMES_PLUGINS": "outside-good,outside-broken,diffusion-schemes-edm"})
    assert listed.returncode == 0 and "outside_skip" in listed.stdout


def test_strict_mode_makes_a_broken_plugin_raise(with_outside, monkeypatch):
    monkeypatch.setenv("DIFFUSION_SCHEMES_PLUGINS", "outside-broken")
    monkeypatch.setenv("DIFFUSION_SCHEMES_STRICT_PLUGINS", "1")
    ds.registry.reload()
    with pytest.raises(ds.PluginError, match="outside-broken"):
        ds.list_schemes()


def test_hook_returning_a_non_spec_skips_that_plugin(with_outside, monkeypatch):
    monkeypatch.setenv("DIFFUSION_SCHEMES_PLUGINS", "outside-bad-return,outside-good")
    ds.registry.reload()
    with pytest.warns(ds.PluginWarning, match=r"'outside-bad-return'.*not a SchemeSpec subclass"):
        names = [i.name for i in ds.list_schemes()]
    assert "outside_skip" in names


def test_conflict_names_both_distributions_and_only_that_name_fails(with_outside, monkeypatch):
    monkeypatch.setenv("DIFFUSION_SCHEMES_PLUGINS", "outside-conflict,diffusion-schemes-edm,outside-good")
    ds.registry.reload()
    with pytest.warns(ds.PluginWarning, match="preconditioner 'edm' is registered by several distributions"):
        conflicts = ds.registry.conflicts()
    assert conflicts == {("preconditioner", "edm"): ["diffusion-schemes-edm", "outside-conflict"]}
    with pytest.raises(ds.SchemeConflictError, match="diffusion-schemes-edm, outside-conflict"):
        ds.create("preconditioner", "edm", model=torch.nn.Identity())
    # the rest keeps working, the same distribution's other schemes included
    assert ds.create("noise_schedule", "edm").sigma_max == 80.0
    ds.create("preconditioner", "outside_skip", model=torch.nn.Identity())
    doctor = _cli("doctor", env={"DIFFUSION_SCHEMES_PLUGINS": "outside-conflict,diffusion-schemes-edm"})
    assert doctor.returncode == 1
    assert "preconditioner 'edm': registered by diffusion-schemes-edm, outside-conflict" in doctor.stdout


@pytest.mark.parametrize(
    ("allow", "block", "expected", "blocked"),
    [
        ("outside-good", None, {"outside_skip"}, {"diffusion-schemes-edm"}),
        ("", None, set(), {"outside-good", "diffusion-schemes-edm"}),
        (None, "Outside_Good", {"edm"}, {"outside-good"}),
    ],
)
def test_environment_allow_and_block_lists(with_outside, monkeypatch, allow, block, expected, blocked):
    monkeypatch.setenv("DIFFUSION_SCHEMES_DISABLE_PLUGINS", ",".join(filter(None, [block, "outside-broken",
                                                                                  "outside-bad-return",
                                                                                  "outside-conflict"])))
    if allow is not None:
        monkeypatch.setenv("DIFFUSION_SCHEMES_PLUGINS", allow)
    ds.registry.reload()
    names = {i.name for i in ds.list_schemes("preconditioner")}
    assert expected <= names
    status = {p.distribution: p.status for p in ds.registry.plugins()}
    for dist in blocked:
        assert status[dist] == "blocked"
        assert not {i.name for i in ds.list_schemes() if i.distribution == dist}
    # the core's own registrations are never filtered
    assert "heun" in {i.name for i in ds.list_schemes("solver")}
