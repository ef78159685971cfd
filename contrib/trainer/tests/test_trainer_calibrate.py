"""``sample RUN --calibrate N``: the grid fitted to a tiny run, stored in it, reused, and refused when it cannot be."""

from __future__ import annotations

import json

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes_trainer.evaluation import sample_generator
from diffusion_schemes_trainer.runs import rebuild
from diffusion_schemes_trainer.storage import load_checkpoint
from test_trainer import TINY, _registry, run  # noqa: F401 - the autouse fixture applies here too


def test_calibrate_stores_the_grid_samples_on_it_and_reuses_it(capsys, tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = run(capsys, "train", *TINY, "--run-dir", run_dir)
    assert code == 0, err
    code, out, err = run(capsys, "sample", run_dir, "--calibrate", "16", "--steps", "4", "--solver", "dpmpp_2m", "-q")
    assert code == 0, err
    stored = json.loads((run_dir / "calibrated_grid.json").read_text())
    sigmas = stored["discretization"]["sigmas"]
    assert stored["discretization"]["name"] == "explicit" and stored["num_steps"] == 4 and len(sigmas) == 5
    assert stored["solver"]["name"] == "dpmpp_2m" and stored["calibration_samples"] == 16
    config, precond, schedule = rebuild(load_checkpoint(run_dir))
    default = schedule.sigmas(4).to(torch.float64)
    # the ends of the schedule's grid are kept, the levels in between moved
    assert sigmas[0] == pytest.approx(float(default[0])) and sigmas[3] == pytest.approx(float(default[3]))
    assert sigmas[-1] == 0.0 and all(a > b for a, b in zip(sigmas, sigmas[1:]))
    assert sigmas[1:3] != pytest.approx(default[1:3].tolist(), rel=1e-3)
    assert stored["error_after"] < stored["error_before"] and stored["model_evaluations"] > 0 and stored["seconds"] > 0
    assert stored["seed"] != config.seed + 1  # never the evaluation's latents
    # the metric on both grids, as stored and as printed
    assert stored["metric"] == "sw_model"
    assert f"on the schedule's grid: sw_model {stored['metric_before']:.4f}" in out
    assert f"on the calibrated grid: sw_model {stored['metric_after']:.4f}" in out

    # the samples are dpmpp_2m on exactly the stored grid, from the evaluation's latents (sample i's generator
    # seeded by (seed + 1, i); the 128 samples are one block)
    gens = [sample_generator(config.seed + 1, i) for i in range(128)]
    latents = schedule.init_latents((128, 2), generator=gens)
    grid = torch.tensor(sigmas)
    expected = ds.sample(precond, latents, schedule, solver="dpmpp_2m", sigmas=grid, generator=gens).samples
    first = torch.load(run_dir / "samples-dpmpp_2m-4-calibrated.pt", weights_only=True)
    torch.testing.assert_close(first, expected)

    # reuse: no --steps and no --solver take the stored grid's; the same grid gives the same samples
    (run_dir / "samples-dpmpp_2m-4-calibrated.pt").unlink()
    code, out, err = run(capsys, "sample", run_dir, "--discretization", "calibrated", "-q")
    assert code == 0, err
    assert "4 model evaluations" in out and "on the schedule's grid" not in out
    torch.testing.assert_close(torch.load(run_dir / "samples-dpmpp_2m-4-calibrated.pt", weights_only=True), first)


def test_calibration_errors_exit_2(capsys, tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = run(capsys, "train", *TINY, "--steps", "4", "--run-dir", run_dir)
    assert code == 0, err
    code, _, err = run(capsys, "sample", run_dir, "--discretization", "calibrated", "-q")
    assert code == 2 and "no calibrated_grid.json" in err and "--calibrate N" in err
    code, _, err = run(capsys, "sample", run_dir, "--calibrate", "8", "--solver", "euler_ancestral", "--steps", "3",
                       "-q")
    assert code == 2 and "--calibrate:" in err and "adds noise" in err
    assert not (run_dir / "calibrated_grid.json").exists()
    code, _, err = run(capsys, "sample", run_dir, "--calibrate", "8", "--discretization", "karras", "-q")
    assert code == 2 and "give one of them" in err
    code, _, err = run(capsys, "sample", run_dir, "--calibrate", "0", "-q")
    assert code == 2 and "--calibrate must be >= 1" in err
    code, _, err = run(capsys, "sample", run_dir, "--calibrate", "8", "--steps", "3", "--solver", "dpmpp_2m",
                       "--num-samples", "10", "-q")
    assert code == 0, err
    code, _, err = run(capsys, "sample", run_dir, "--discretization", "calibrated", "--steps", "5", "-q")
    assert code == 2 and "has 3 steps, not the 5 of --steps" in err
    bad = {"discretization": {"name": "explicit", "sigmas": [1.0, 2.0, 0.0]}}  # increasing: not a grid
    (run_dir / "calibrated_grid.json").write_text(json.dumps(bad))
    code, _, err = run(capsys, "sample", run_dir, "--discretization", "calibrated", "-q")
    assert code == 2 and "does not hold a valid calibrated grid" in err
