"""The adversarial tries, kept: a conflicting plugin, non-finite and out-of-domain values, command-line
failures. Each fails loudly and clearly, and the rest keeps working. (The trainer's own tries, a diverged
run, two processes on one run directory, a flipped bit, Ctrl-C inside a checkpoint write, are in
contrib/trainer/tests/test_trainer_adversarial.py.)"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import Literal

import pytest
import torch
from conftest import pip_install_target, write_distribution
from pydantic import BaseModel

import diffusion_schemes as ds
from diffusion_schemes.cli import commands as cli
from diffusion_schemes.errors import InvalidArgumentError
from diffusion_schemes_trainer import load_config, train

SMALL = ["steps=4", "batch_size=16", "sampling_steps=2", "data.train_size=128", "data.eval_size=32",
         "model.hidden=8", "model.depth=1", "projections=8", "checkpoint_every=2", "log_every=1",
         "optimizer.warmup=0"]
CLI_SMALL = ["-q", *(a for item in SMALL for a in ("--set", item))]

SECOND_EDM = '''
from typing import Literal
import diffusion_schemes as ds

class AnotherEDMScheduleSpec(ds.NoiseScheduleSpec):
    """A second 'edm' noise schedule, to conflict with diffusion-schemes-edm."""
    name: Literal["edm"] = "edm"

    def build(self):
        raise RuntimeError("never built")

@ds.hookimpl
def register_schemes():
    return [AnotherEDMScheduleSpec]
'''

ESCAPING_NAME = '''
from typing import Literal
import diffusion_schemes as ds

class EscapeSpec(ds.PreconditionerSpec):
    """A name that would make a run directory escape runs/."""
    name: Literal["../../../elsewhere/x"] = "../../../elsewhere/x"

@ds.hookimpl
def register_schemes():
    return [EscapeSpec]
'''


@pytest.fixture(scope="module")
def adversarial_site(tmp_path_factory):
    src = tmp_path_factory.mktemp("adversarial-src")
    folders = [write_distribution(src, "second-edm", "second_edm", SECOND_EDM),
               write_distribution(src, "escaping-name", "escaping_name", ESCAPING_NAME)]
    site = tmp_path_factory.mktemp("adversarial-site")
    pip_install_target(folders, site)
    return site


@pytest.fixture
def with_plugin(adversarial_site, fresh_registry, monkeypatch):
    def use(dists: str) -> dict[str, str]:
        monkeypatch.syspath_prepend(str(adversarial_site))
        env = {"PYTHONPATH": os.pathsep.join([str(adversarial_site), os.environ.get("PYTHONPATH", "")]),
               "DIFFUSION_SCHEMES_PLUGINS": dists}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        ds.registry.reload()
        return env

    yield use
    for name in [m for m in sys.modules if m.startswith(("second_edm", "escaping_name"))]:
        del sys.modules[name]


def _cli(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffusion_schemes", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300, cwd=cwd)


# ---------------------------------------------------------------------------------------------- plugins
def test_a_conflicting_name_is_left_out_and_raises_only_when_used(with_plugin):
    env = with_plugin("second-edm,diffusion-schemes-edm,diffusion-schemes-vp,diffusion-schemes-ve,"
                      "diffusion-schemes-trainer")
    with pytest.warns(ds.PluginWarning, match=r"noise_schedule 'edm' is registered by several distributions"):
        ds.list_schemes()

    class Config(BaseModel):
        schedule: ds.spec_type("noise_schedule") = "vp"

    assert Config(schedule="vp").schedule.name == "vp"
    schema = json.dumps(ds.json_schema("noise_schedule"))  # builds, with every schedule but the conflicting one
    assert "VPNoiseScheduleSpec" in schema and "VENoiseScheduleSpec" in schema
    assert "EDMNoiseScheduleSpec" not in schema and "AnotherEDMScheduleSpec" not in schema
    with pytest.raises(ds.SchemeConflictError, match="diffusion-schemes-edm, second-edm"):
        Config(schedule="edm")
    with pytest.raises(ds.SchemeConflictError, match="diffusion-schemes-edm, second-edm"):
        ds.create("noise_schedule", "edm")
    assert ds.create("preconditioner", "edm", model=torch.nn.Identity()).sigma_data == 0.5  # another kind

    printed = _cli("train", "--scheme", "vp", "--print-config", env=env)
    assert printed.returncode == 0, printed.stderr
    assert 'name = "vp"' in printed.stdout
    assert _cli("schema", "noise_schedule", env=env).returncode == 0
    used = _cli("train", "--print-config", env=env)  # the default config names edm
    assert used.returncode == 2 and "error:" in used.stderr and "second-edm" in used.stderr
    assert "Traceback" not in used.stderr
    doctor = _cli("doctor", env=env)
    assert doctor.returncode == 1
    assert "noise_schedule 'edm': registered by diffusion-schemes-edm, second-edm" in doctor.stdout


def test_a_name_with_path_characters_is_a_broken_plugin(with_plugin):
    with_plugin("escaping-name,diffusion-schemes-edm")
    with pytest.warns(ds.PluginWarning, match=r"'escaping-name'.*no path separator"):
        names = [i.name for i in ds.list_schemes("preconditioner")]
    assert names == ["edm"]
    assert {p.distribution: p.status for p in ds.registry.plugins()}["escaping-name"] == "failed"

    class Dotted(ds.WeightingSpec):
        name: Literal["a.b"] = "a.b"

    with pytest.raises(InvalidArgumentError, match="'a.b'"):
        ds.registry.register(Dotted)


def test_doctor_counts_blocked_distributions_apart(fresh_registry):
    doctor = _cli("doctor", env={"DIFFUSION_SCHEMES_DISABLE_PLUGINS": "diffusion-schemes-ve"})
    assert doctor.returncode == 0, doctor.stdout
    assert ", 1 blocked, 0 failed, 0 conflict(s)" in doctor.stdout
    loaded = sum(p.status == "loaded" for p in ds.registry.plugins())
    assert f"{loaded - 1} plugin distribution(s) ok" in doctor.stdout  # ve is blocked in the subprocess


# ---------------------------------------------------------------------------------------------- values
NON_FINITE = [
    ("preconditioner", {"name": "edm", "sigma_data": math.inf}),
    ("noise_schedule", {"name": "edm", "sigma_max": math.inf}),
    ("noise_schedule", {"name": "edm", "rho": math.inf}),
    ("noise_schedule", {"name": "edm", "P_mean": math.nan}),
    ("noise_schedule", {"name": "vp", "beta_d": math.inf}),
    ("preconditioner", {"name": "vp", "beta_min": math.nan}),
    ("noise_schedule", {"name": "ve", "sigma_min": -math.inf}),
    ("noise_schedule", {"name": "iddpm", "C_2": math.inf}),
    ("noise_schedule", {"name": "iddpm", "C_2": 1e300}),  # finite, but the table divides by zero
    ("noise_schedule", {"name": "cosine", "shift": math.nan}),
    ("weighting", {"name": "sigmoid", "bias": math.inf}),
    ("solver", {"name": "edm_stochastic_heun", "S_noise": math.nan}),
]


@pytest.mark.parametrize(("kind", "config"), NON_FINITE, ids=lambda v: str(v))
def test_non_finite_and_out_of_range_spec_values_are_refused(kind, config):
    kwargs = {"model": torch.nn.Identity()} if kind == "preconditioner" else {}
    with pytest.raises(ds.SchemeConfigError):
        ds.create(kind, config, **kwargs)


def test_json_schema_states_the_ranges():
    props = ds.json_schema("noise_schedule")["$defs"]
    iddpm = next(v for v in props.values() if v.get("properties", {}).get("name", {}).get("const") == "iddpm")
    assert iddpm["properties"]["C_2"]["maximum"] == 1 and iddpm["properties"]["C_2"]["minimum"] == 0


def _backbone(x, c_noise, condition=None):
    return torch.zeros_like(x)


OUT_OF_DOMAIN = [
    ("vp schedule t=2", lambda: ds.create("noise_schedule", "vp").get_log_snr(torch.tensor([2.0]))),
    ("vp schedule t=0", lambda: ds.create("noise_schedule", "vp").noise_level(torch.tensor([0.0]))),
    ("vp preconditioner t=2",
     lambda: ds.create("preconditioner", "vp", model=_backbone)(torch.ones(1, 2), torch.tensor([2.0]))),
    ("flow matching schedule t=1", lambda: ds.create("noise_schedule", "flow_matching").get_log_snr(torch.tensor([1.0]))),
    ("flow matching preconditioner t=1",
     lambda: ds.create("preconditioner", "flow_matching", model=_backbone)(torch.ones(1, 2), torch.tensor([1.0]))),
    ("edm schedule t=inf", lambda: ds.create("noise_schedule", "edm").noise_level(torch.tensor([math.inf]))),
    ("edm preconditioner t=inf",
     lambda: ds.create("preconditioner", "edm", model=_backbone)(torch.ones(1, 2), torch.tensor([math.inf]))),
    ("edm preconditioner sigma=nan",
     lambda: ds.create("preconditioner", "edm", model=_backbone).forward_sigma(torch.ones(1, 2), math.nan)),
]


@pytest.mark.parametrize(("what", "call"), OUT_OF_DOMAIN, ids=[w for w, _ in OUT_OF_DOMAIN])
def test_times_outside_the_domain_raise_domain_error(what, call):
    with pytest.raises(ds.DomainError):
        call()


def test_the_edges_of_the_domains_stay_finite():
    vp = ds.create("noise_schedule", "vp")
    assert math.isfinite(float(vp.get_log_snr(torch.tensor([1.0]))))  # t = 1 belongs to VP's (0, 1]
    out = ds.create("preconditioner", "vp", model=_backbone)(torch.ones(1, 2), torch.tensor([1.0]))
    assert bool(torch.isfinite(out).all())


def test_bad_arguments_keep_their_builtin_base_and_the_library_base():
    schedule = ds.create("noise_schedule", "edm")
    for call, base in [(lambda: ds.sample(_backbone, schedule.init_latents((1, 2)), schedule, num_steps=0), ValueError),
                       (lambda: ds.sample(_backbone, schedule.init_latents((1, 2)), schedule, num_steps=1.5), TypeError),
                       (lambda: ds.create("solver", "heun")(lambda x, s: x, torch.ones(1, 2), torch.tensor([1.0, 2.0, 0.0])),
                        ValueError),
                       (lambda: schedule.sigmas(0), ValueError)]:
        with pytest.raises(ds.DiffusionSchemesError) as info:
            call()
        assert isinstance(info.value, base)


# ---------------------------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("small-run") / "run"
    train(load_config(overrides=[*SMALL, f"run_dir='{run_dir}'"]), quiet=True)
    return run_dir


def _main(capsys, *argv) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def test_command_line_failures_are_one_error_line(small_run, tmp_path, capsys):
    not_utf8 = tmp_path / "latin1.toml"
    not_utf8.write_bytes(b"steps = 3\n# caf\xe9\n")
    a_string = tmp_path / "string.pt"
    torch.save("not a checkpoint", a_string)
    cases = [
        ("sample", small_run, "--steps", "0"),
        ("sample", small_run, "--steps", "-1"),
        ("sample", small_run, "--num-samples", "0"),
        ("sample", small_run, "--num-samples", "-1"),
        ("sample", a_string),
        ("plot", "noise_schedule", "vp", "--steps", "0", "--out", tmp_path),
        ("plot", "noise_schedule", "vp", "--dpi", "0", "--out", tmp_path),
        ("plot", "noise_schedule", "vp", "--out", "/proc/no/such/folder"),
        ("train", "-c", not_utf8, "--print-config"),
        ("train", "--set", "threads=100000", "--print-config"),
        ("train", "--set", "seed=99999999999999999999", "--print-config"),
        ("train", "--set", "optimizer.betas=[2.0, -1.0]", "--print-config"),
        ("train", "--set", "optimizer.lr=inf", "--print-config"),
        ("train", "--weighting", "-1", "--print-config"),
        ("train", "--weighting", "0", "--print-config"),
        ("train", "--resume", small_run, "--scheme", "vp"),
    ]
    for argv in cases:
        code, err = _main(capsys, *argv)
        assert code == 2, (argv, err)
        assert err.startswith("error: ") and "Traceback" not in err, (argv, err)


def test_strict_plugin_mode_is_an_error_line_not_a_traceback(with_plugin, capsys, monkeypatch):
    with_plugin("escaping-name")
    monkeypatch.setenv("DIFFUSION_SCHEMES_STRICT_PLUGINS", "1")
    ds.registry.reload()
    code, err = _main(capsys, "doctor")
    assert code == 2 and err.startswith("error: ") and "escaping-name" in err


def test_an_unexpected_failure_is_one_line_with_a_log(capsys, monkeypatch):
    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "cmd_list", broken)
    code, err = _main(capsys, "list")
    assert code == cli.EXIT_CRASH
    assert len(err.strip().splitlines()) == 1 and "ZeroDivisionError: a bug" in err
    log = err.split("the full traceback is in ")[1].split(". Please")[0]
    text = open(log, encoding="utf-8").read()
    os.remove(log)
    assert "Traceback" in text and "raise ZeroDivisionError" in text
