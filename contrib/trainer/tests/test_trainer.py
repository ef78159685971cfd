"""The trainer from the command line: a tiny run end to end, sample, compare, and bad input."""

from __future__ import annotations

import json
import re

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes.cli import commands as cli
from diffusion_schemes_trainer import load_config

# A run of a few seconds: small data, small network, few steps.
TINY = ["--steps", "24", "--batch-size", "32", "--sampling-steps", "4", "-q",
        "--set", "data.train_size=512", "--set", "data.eval_size=128", "--set", "model.hidden=16",
        "--set", "model.depth=1", "--set", "projections=32", "--set", "checkpoint_every=8",
        "--set", "log_every=4", "--set", "optimizer.warmup=4"]


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(autouse=True)
def _registry(fresh_registry):
    yield


def test_the_trainer_adds_its_commands_to_the_cli(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert all(f"    {name}" in out for name in ("train", "sample", "compare"))


def test_print_config_shows_the_embedded_default_and_it_is_valid(capsys, tmp_path):
    code, out, _ = run(capsys, "train", "--print-config")
    assert code == 0 and 'preconditioner = { name = "edm"' in out and 'name = "gaussian_mixture"' in out
    (tmp_path / "c.toml").write_text(out)
    code, again, _ = run(capsys, "train", "--config", tmp_path / "c.toml", "--scheme", "vp", "--print-config")
    assert code == 0
    printed = tomllib.loads(again)  # written with tomli-w: TOML that reads back to the validated config
    assert printed["preconditioner"]["name"] == printed["noise_schedule"]["name"] == "vp"
    assert printed["data"] == {"name": "gaussian_mixture", "components": 8, "radius": 0.7, "std": 0.07,
                               "train_size": 100000, "eval_size": 4096}
    assert load_config(tmp_path / "c.toml").model_dump() == load_config().model_dump()


def test_tiny_run_end_to_end(capsys, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", *TINY, "--run-dir", run_dir)
    assert code == 0, err
    for name in ("checkpoint.pt", "metrics.json", "samples.png", "loss.png", "samples.pt"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    final = metrics["final"]
    assert metrics["step"] == 24 and metrics["world_size"] == 1
    assert [s for s, _ in metrics["loss"]] == [4, 8, 12, 16, 20, 24]
    assert final["sw_floor"] > 0 and final["sw_model"] > 0 and final["sw_exact"] > 0
    assert final["nfe"] == 7 and final["num_samples"] == 128  # heun: 2 evaluations a step, Euler on the last
    assert metrics["scheme"]["preconditioner"] == {"name": "edm", "sigma_data": 0.5}
    assert "held-out vs held-out (the floor)" in out and f"{final['sw_floor']:.4f}" in out
    samples = torch.load(run_dir / "samples.pt", weights_only=True)
    assert samples.shape == (128, 2) and bool(torch.isfinite(samples).all())

    code, out, err = run(capsys, "sample", run_dir, "--solver", "euler", "--steps", "5")
    assert code == 0, err
    assert "5 model evaluations" in out and (run_dir / "samples-euler-5.png").is_file()
    bar = [part for part in re.split(r"[\r\n]", err) if part.startswith("sample:")]
    # the progress bar, fed by ds.sample's callback: 5 steps of the model, then 5 of the exact denoiser
    assert bar and "100%" in bar[-1] and " 10/10 " in bar[-1], err
    code, out, err = run(capsys, "sample", run_dir / "checkpoint.pt", "--solver", "edm_stochastic_heun",
                         "--solver-option", "S_churn=10", "--steps", "3", "--num-samples", "10", "--out", tmp_path / "o")
    assert code == 0, err
    assert torch.load(tmp_path / "o" / "samples-edm_stochastic_heun-3.pt", weights_only=True).shape == (10, 2)
    assert "sample: 100%" in err and " 3/3 " in err


@pytest.mark.parametrize("data", ["two_moons", "checkerboard"])
def test_other_point_sets_train(capsys, tmp_path, data):
    code, out, err = run(capsys, "train", *TINY, "--data", data, "--run-dir", tmp_path / data)
    assert code == 0, err
    metrics = json.loads((tmp_path / data / "metrics.json").read_text())
    assert metrics["data"] == data and metrics["final"]["sw_exact"] is None
    assert "exact denoiser" not in out


def test_digits_train_with_the_unet_backbone_and_report_fd_digits(capsys, tmp_path):
    pytest.importorskip("sklearn")
    code, out, err = run(capsys, "train", "--data", "digits", "--steps", "4", "--batch-size", "8", "--sampling-steps", "2",
                         "--set", "data.eval_size=16", "--set", "model.channels=8", "--set", "model.blocks=1",
                         "--set", "projections=8", "--set", "ema_snapshot_every=2", "-q", "--run-dir", tmp_path / "d")
    assert code == 0, err
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    final = metrics["final"]
    assert metrics["config"]["model"]["name"] == "unet" and final["num_samples"] == 16
    assert final["fd_digits"] > final["fd_digits_floor"] > 0 and 0 < final["class_confidence"] <= 1
    assert "class_accuracy" not in final  # unconditional samples have no requested class
    assert sum(final["class_counts"]) == 16
    assert "fd_digits" in out and "within 3x of the floor" in out
    assert (tmp_path / "d" / "samples.png").is_file() and (tmp_path / "d" / "digits_classifier.pt").is_file()
    code, out, err = run(capsys, "sample", tmp_path / "d", "--steps", "2")
    assert code == 0, err
    assert "fd_digits" in out
    code, out, err = run(capsys, "ema", tmp_path / "d", "--sigma-rel", "0.05,0.15", "--sampling-steps", "2")
    assert code == 0, err
    report = json.loads((tmp_path / "d" / "ema.json").read_text())
    assert [r["sigma_rel"] for r in report["rows"]] == [0.05, 0.15] and report["by"] == "fd_digits"
    assert report["best"] == min(report["rows"], key=lambda r: r["fd_digits"])["sigma_rel"]


def test_compare_on_digits_ranks_by_fd_digits(capsys, tmp_path):
    pytest.importorskip("sklearn")
    code, out, err = run(capsys, "compare", "--data", "digits", "--schemes", "edm,vp", "--evals", "1", "--steps", "2",
                         "--batch-size", "8", "--sampling-steps", "2", "--set", "data.eval_size=16",
                         "--set", "model.channels=8", "--set", "model.blocks=1", "--set", "projections=8",
                         "-q", "--run-dir", tmp_path)
    assert code == 0, err
    report = json.loads((tmp_path / "compare.json").read_text())
    fds = [r["fd_digits"] for r in report["schemes"]]
    assert report["ranked_by"] == "fd_digits" and fds == sorted(fds)
    first = report["schemes"][0]["scheme"]
    assert f"| 1 | {first} |" in (tmp_path / "compare.md").read_text() and (tmp_path / "compare.png").is_file()


def test_compare_trains_each_scheme_and_writes_table_json_and_plot(capsys, tmp_path):
    code, out, err = run(capsys, "compare", "--schemes", "edm,vp,edm:vp", "--evals", "2", *TINY, "--run-dir", tmp_path)
    assert code == 0, err
    report = json.loads((tmp_path / "compare.json").read_text())
    assert [r["scheme"] for r in report["schemes"]] == ["edm", "vp", "edm:vp"]
    assert [(r["preconditioner"], r["noise_schedule"]) for r in report["schemes"]][2] == ("edm", "vp")
    for r in report["schemes"]:
        assert [e["step"] for e in r["curve"]] == [12, 24]
        assert r["curve"][-1]["sw"] == r["sw_model"]
    table = (tmp_path / "compare.md").read_text()
    assert "| edm:vp | edm | vp |" in table and (tmp_path / "compare.png").is_file()


def test_a_scheme_from_an_outside_package_trains_and_comes_back_by_name(with_outside, monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFUSION_SCHEMES_PLUGINS", "outside-good,diffusion-schemes-edm,diffusion-schemes-trainer")
    ds.registry.reload()
    from diffusion_schemes_trainer import load_checkpoint, load_config, train
    from diffusion_schemes_trainer.runs import rebuild

    cfg = load_config(overrides=[a for a in TINY if "=" in a] + ["steps=8", "batch_size=32", "sampling_steps=2"],
                      changes={"preconditioner": "outside_skip", "run_dir": str(tmp_path)})
    train(cfg, quiet=True)
    payload = load_checkpoint(tmp_path)
    assert payload["specs"]["preconditioner"] == {"name": "outside_skip", "scale": 1.0}
    _, precond, _ = rebuild(payload)
    assert type(precond).__module__ == "outside_good.impl"


# ---------------------------------------------------------------------- bad input: message, exit 2, nothing lost
def test_unknown_scheme_name(capsys):
    code, _, err = run(capsys, "train", "--preconditioner", "edn", "--print-config")
    assert code == 2 and "no preconditioner named 'edn'" in err and "Did you mean 'edm'?" in err
    code, _, err = run(capsys, "compare", "--schemes", "edm,vq")
    assert code == 2 and "no preconditioner named 'vq'" in err


def test_typo_in_a_config_file(capsys, tmp_path):
    (tmp_path / "c.toml").write_text('steps = 10\n[optimizer]\nlrr = 0.1\n')
    code, _, err = run(capsys, "train", "--config", tmp_path / "c.toml")
    assert code == 2 and "optimizer.lrr: unknown field. Did you mean 'lr'?" in err
    (tmp_path / "bad.toml").write_text("steps = \n")
    code, _, err = run(capsys, "train", "--config", tmp_path / "bad.toml")
    assert code == 2 and "is not valid TOML" in err
    code, _, err = run(capsys, "train", "--config", tmp_path / "missing.toml")
    assert code == 2 and "cannot read the config file" in err


def test_missing_and_corrupt_checkpoints(capsys, tmp_path):
    code, _, err = run(capsys, "sample", tmp_path / "nowhere")
    assert code == 2 and "no checkpoint at" in err
    (tmp_path / "checkpoint.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    for args in (["sample", tmp_path], ["train", "--resume", tmp_path]):
        code, _, err = run(capsys, *args)
        assert code == 2 and "is not a readable checkpoint" in err
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    code, _, err = run(capsys, "sample", tmp_path / "other.pt")
    assert code == 2 and "not a diffusion-schemes-trainer checkpoint" in err


def test_unwritable_run_dir(capsys, tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    code, _, err = run(capsys, "train", *TINY, "--run-dir", tmp_path / "file" / "run")
    assert code == 2 and "cannot write to the run directory" in err


def test_an_existing_run_is_never_overwritten_silently(capsys, tmp_path):
    code, _, err = run(capsys, "train", *TINY, "--steps", "8", "--run-dir", tmp_path)
    assert code == 0, err
    before = (tmp_path / "checkpoint.pt").read_bytes()
    code, _, err = run(capsys, "train", *TINY, "--run-dir", tmp_path)
    assert code == 2 and "already holds a checkpoint" in err and "--resume" in err
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_unknown_solver_for_sampling(capsys, tmp_path):
    code, _, err = run(capsys, "train", *TINY, "--steps", "4", "--run-dir", tmp_path)
    assert code == 0, err
    code, _, err = run(capsys, "sample", tmp_path, "--solver", "hen")
    assert code == 2 and "Did you mean 'heun'?" in err


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--scheme", "flow_matching"], ("flow_matching", "flow_matching")),
        (["--preconditioner", "edm", "--schedule", "cosine"], ("edm", "cosine")),
    ],
)
def test_contrib_schemes_train_by_name(capsys, tmp_path, flags, expected):
    """Flow matching (neither preserving nor exploding) and the cosine schedule, from their own distributions."""
    code, _, err = run(capsys, "train", *TINY, *flags, "--run-dir", tmp_path / "run")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    scheme = metrics["scheme"]
    assert (scheme["preconditioner"]["name"], scheme["noise_schedule"]["name"]) == expected
    samples = torch.load(tmp_path / "run" / "samples.pt", weights_only=True)
    assert bool(torch.isfinite(samples).all())
    code, _, err = run(capsys, "sample", tmp_path / "run", "--solver", "dpmpp_2m", "--steps", "6")
    assert code == 0, err
