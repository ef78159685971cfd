"""The held-out likelihood: the data sets' own densities, the NLL against closed forms, and the ``nll`` command."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes.cli import commands as cli
from diffusion_schemes_trainer import Checkerboard, Digits, MixtureData, TwoMoons
from diffusion_schemes_trainer.evaluation import exact_predictor
from diffusion_schemes_trainer.likelihood import CHUNK, chunk_generator, held_out_nll

TINY = ["--steps", "24", "--batch-size", "32", "--sampling-steps", "4", "-q",
        "--set", "data.train_size=512", "--set", "data.eval_size=128", "--set", "model.hidden=16",
        "--set", "model.depth=1", "--set", "projections=32", "--set", "checkpoint_every=8",
        "--set", "log_every=4", "--set", "optimizer.warmup=4", "--set", "nll_samples=64", "--set", "nll_steps=4"]


def _grid_integral(log_prob, lo, hi, n=150):
    """The integral of ``exp(log_prob)`` over ``[lo, hi]^2`` by the midpoint rule."""
    h = (hi - lo) / n
    axis = lo + (torch.arange(n, dtype=torch.float64) + 0.5) * h
    xx, yy = torch.meshgrid(axis, axis, indexing="ij")
    return float(log_prob(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)).exp().sum() * h * h)


@pytest.mark.parametrize("data", [TwoMoons(noise=0.05), Checkerboard(squares=4, size=2.0)], ids=["moons", "board"])
@pytest.mark.parametrize("sigma", [0.0, 0.05])
def test_the_point_sets_densities_integrate_to_one_and_match_their_samples(data, sigma):
    log_prob = data.log_prob
    if isinstance(data, TwoMoons):
        log_prob = functools.partial(data.log_prob, nodes=400)  # spaced pi / 400, well below the jitter 0.05
        sigma = sigma or 0.01
    assert _grid_integral(lambda x: log_prob(x, sigma), -2.5, 2.5) == pytest.approx(1.0, abs=2e-3)
    # the mass of a box by the density against the fraction of (noised) samples in it
    g = torch.Generator().manual_seed(0)
    x = data.sample(20_000, g).double() + sigma * torch.randn(20_000, 2, generator=g, dtype=torch.float64)
    lo, hi = torch.tensor([-0.2, -0.6]), torch.tensor([0.7, 0.3])
    inside = ((x >= lo) & (x <= hi)).all(1).double().mean()
    h = 0.9 / 60
    ax, ay = (lo[i] + (torch.arange(60, dtype=torch.float64) + 0.5) * h for i in range(2))
    xx, yy = torch.meshgrid(ax, ay, indexing="ij")
    mass = float(log_prob(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1), sigma).exp().sum() * h * h)
    assert abs(float(inside) - mass) < 4 * math.sqrt(mass * (1 - mass) / 20_000) + 2e-3


def test_the_checkerboard_density_is_uniform_on_the_dark_squares():
    board = Checkerboard(squares=4, size=4.0)  # unit squares; dark where column + row is even
    x = torch.tensor([[-1.5, -1.5], [-0.5, -1.5], [0.5, 0.5]])
    assert board.log_prob(x).exp().tolist() == pytest.approx([2 / 16, 0.0, 2 / 16], rel=1e-14)


def test_the_mixture_density_is_the_core_oracle_convolved():
    data = MixtureData(means=[[-0.5, 0.0], [0.5, 0.0]], stds=[0.1, 0.2])
    x = torch.randn(5, 2, dtype=torch.float64)
    v = torch.tensor([0.1, 0.2], dtype=torch.float64) ** 2 + 0.3**2
    direct = torch.logsumexp(-0.5 * ((x[:, None] - data.mixture.means[None]) ** 2).sum(-1) / v
                             - torch.log(2 * math.pi * v) + math.log(0.5), dim=1)
    torch.testing.assert_close(data.log_prob(x, 0.3), direct)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["edm", "vp"])
def test_the_exact_denoiser_reaches_the_floor(scheme):
    data = MixtureData(means=[[-0.5, 0.0], [0.5, 0.0]], stds=[0.1, 0.1])
    points = data.splits(train_size=10, eval_size=CHUNK + 4, seed=1).eval_a
    schedule = ds.create("noise_schedule", scheme)
    r = held_out_nll(exact_predictor(data.mixture, schedule), schedule, data, points, num_steps=32)
    assert r["nll_num_samples"] == CHUNK + 4 and r["nll_divergence"] == "exact"
    assert r["nll_nfe"] == 2 * 4 * 32  # two chunks, 4 calls per RK4 step
    # with the data's own denoiser the model density is the data's: the KL estimate vanishes
    assert abs(r["nll_bpd"] - r["nll_bpd_floor"]) < 2e-3
    # and the floor is the closed form at sigma_min in bits per dimension (bin width 1)
    sigma_min = float(schedule.sigmas(2)[1])
    assert r["nll_sigma_min"] == sigma_min
    floor = -data.mixture.log_prob(points.double(), sigma_min).mean() / (2 * math.log(2))
    assert r["nll_bpd_floor"] == pytest.approx(float(floor), rel=1e-12)


class _GaussianDigits(Digits):
    """Digits' grid (bin width 1/8, 64 dimensions) on Gaussian data, whose denoiser is known."""

    s = 0.5


def test_digits_are_dequantised_with_their_grid_and_reported_in_bits_per_dimension():
    data = _GaussianDigits()
    g = torch.Generator().manual_seed(0)
    points = ((torch.randn(20, 1, 8, 8, generator=g, dtype=torch.float64) * 0.5 + 1) * 8).round().clamp(0, 16) / 8 - 1
    schedule = ds.create("noise_schedule", "edm")
    s = data.s
    model = lambda x, t: s**2 / (s**2 + t.reshape(-1, 1, 1, 1) ** 2) * x  # noqa: E731 - N(0, s^2) data
    r = held_out_nll(model, schedule, data, points, num_steps=64, divergence="exact", seed=3)
    assert r["nll_bpd_floor"] is None  # digits have no known density
    sigma_min = float(schedule.sigmas(2)[1])
    x = points + (torch.rand(points.shape, generator=chunk_generator(3, 0), dtype=torch.float64) - 0.5) / 8  # the same dequantisation
    var = s**2 + sigma_min**2
    log_p = (-0.5 * x.double().pow(2) / var - 0.5 * math.log(2 * math.pi * var)).sum((1, 2, 3))
    expected = -(log_p + 64 * math.log(1 / 8)) / (64 * math.log(2))
    assert r["nll_bpd"] == pytest.approx(float(expected.mean()), abs=1e-4)  # RK4 error at 64 steps


def test_the_result_does_not_depend_on_how_chunks_are_shared_among_ranks():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    model = lambda x, t: net(torch.cat([x, t.log()[:, None]], 1))  # noqa: E731
    data = MixtureData(means=[[-0.5, 0.0], [0.5, 0.0]], stds=[0.1, 0.1])
    points = data.sample(CHUNK * 2 + 17, torch.Generator().manual_seed(2))
    schedule = ds.create("noise_schedule", "edm")
    kw = dict(num_steps=3, divergence="hutchinson", num_probes=2, seed=5)
    alone = held_out_nll(model, schedule, data, points, **kw)
    handed = []
    assert held_out_nll(model, schedule, data, points, rank=1, world_size=2,
                        gather=lambda mine: handed.append(mine) or [], **kw) == {}  # rank 1 returns nothing
    got = held_out_nll(model, schedule, data, points, rank=0, world_size=2, gather=lambda mine: [mine, handed[0]], **kw)
    assert got["nll_bpd"] == alone["nll_bpd"] and got["nll_bpd_floor"] == alone["nll_bpd_floor"]
    assert got["nll_nfe"] == alone["nll_nfe"] == 3 * 4 * 3


def test_train_records_the_nll_beside_its_floor_and_the_nll_command_recomputes_it(capsys, tmp_path, fresh_registry):
    run_dir = tmp_path / "run"
    assert cli.main(["train", *TINY, "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert final["nll_num_samples"] == 64 and final["nll_steps"] == 4 and final["nll_divergence"] == "exact"
    assert math.isfinite(final["nll_bpd"]) and math.isfinite(final["nll_bpd_floor"])
    assert f"{final['nll_bpd']:.4f}" in out and "the data's own density (floor)" in out
    assert cli.main(["nll", str(run_dir), "-q"]) == 0
    out = capsys.readouterr().out
    again = json.loads((run_dir / "nll.json").read_text())
    assert again["nll_bpd"] == pytest.approx(final["nll_bpd"], abs=1e-9)  # same points, steps and weights
    assert again["nll_bpd_floor"] == final["nll_bpd_floor"] and f"{again['nll_bpd']:.4f}" in out
    assert cli.main(["nll", str(run_dir), "-q", "--probes", "3", "--num-samples", "40"]) == 0
    hutch = json.loads((run_dir / "nll.json").read_text())
    assert (hutch["nll_divergence"], hutch["nll_probes"], hutch["nll_num_samples"]) == ("hutchinson", 3, 40)
    assert cli.main(["nll", str(run_dir), "--num-samples", "129"]) == 2
    assert "--num-samples must be in [1, 128]" in capsys.readouterr().err
