"""The ``discrete`` schedule and preconditioner: the conformance kit, the table against closed forms and
against diffusers' own tables, and the timestep map (exact on the table, interpolating between)."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler

import diffusion_schemes as ds
from diffusers_nets import _one_thread  # noqa: F401 - the fixture: one thread for tiny networks
from diffusion_schemes_diffusers import DiffusersBridgeError, from_diffusers

SCALED = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


@pytest.mark.diffusion_schemes_conformance("noise_schedule", "discrete")
def test_discrete_conforms():
    pass


@pytest.mark.parametrize("config", [
    {"beta_schedule": "squaredcos_cap_v2", "rescale_betas_zero_snr": True, "interpolation": "log_sigma"},
    {**SCALED, "precision": "float32"},
    {"num_train_timesteps": 40, "trained_betas": [0.01 + 0.005 * j for j in range(40)]},
    {"num_train_timesteps": 40, "alphas_cumprod": [0.99 * 0.9**j for j in range(40)]},
])
def test_tables_conform(conformance, config):
    # (a table of a few entries would fail the kit's quantile check: its draws are atoms of mass 1 / T,
    # rounded to float32 by sample_time, so some land just above the float64 quantile they equal)
    conformance.check("noise_schedule", {"name": "discrete", **config})


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_preconditioner_conforms(conformance, prediction_type):
    conformance.check("preconditioner", {"name": "discrete", "prediction_type": prediction_type})


def _product(betas):
    """alpha_bar_j = prod (1 - beta_i), as a sum of logs in Python floats."""
    out, total = [], 0.0
    for b in betas:
        total += math.log1p(-b)
        out.append(math.exp(total))
    return torch.tensor(out, dtype=torch.float64)


def test_linear_and_scaled_linear_tables_are_the_products_of_their_betas():
    """Ho et al. 2020: beta_j evenly spaced; scaled_linear: sqrt(beta_j) evenly spaced (float64 tables)."""
    T = 1000
    for config, betas in [
        ({}, [1e-4 + j * (0.02 - 1e-4) / (T - 1) for j in range(T)]),
        (SCALED, [(0.00085**0.5 + j * (0.012**0.5 - 0.00085**0.5) / (T - 1)) ** 2 for j in range(T)]),
    ]:
        s = ds.create("noise_schedule", {"name": "discrete", **config})
        torch.testing.assert_close(s.alphas_cumprod, _product(betas), rtol=1e-12, atol=0)
        torch.testing.assert_close(s.table_sigmas, ((1 - _product(betas)) / _product(betas)).sqrt(), rtol=1e-9, atol=0)


def test_cosine_table_telescopes_to_f_ratio():
    """Nichol & Dhariwal 2021, eq. 17: without the 0.999 cap, alpha_bar_j = f((j + 1) / T) / f(0)."""
    s = ds.create("noise_schedule", {"name": "discrete", "beta_schedule": "squaredcos_cap_v2", "precision": "float64"})
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    want = torch.tensor([f((j + 1) / 1000) / f(0) for j in range(1000)], dtype=torch.float64)
    capped = 1 - s.alphas_cumprod[1:] / s.alphas_cumprod[:-1] >= 0.999 - 1e-12
    assert int(capped.sum()) == 1 and bool(capped[-1])  # only the last beta is capped
    torch.testing.assert_close(s.alphas_cumprod[:-1], want[:-1], rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("config", [{}, SCALED, {"beta_schedule": "squaredcos_cap_v2"},
                                    {**SCALED, "rescale_betas_zero_snr": True}])
def test_float32_tables_equal_diffusers_bit_for_bit(config):
    ours = ds.create("noise_schedule", {"name": "discrete", "precision": "float32", **config}).alphas_cumprod
    theirs = EulerDiscreteScheduler(**config).alphas_cumprod
    assert theirs.dtype == torch.float32 and torch.equal(ours, theirs.to(torch.float64))


def test_zero_terminal_snr_rescale():
    """Lin et al. 2024, Algorithm 1: sqrt(alpha_bar) shifted to end at 0, scaled to keep its first value."""
    plain = ds.create("noise_schedule", {"name": "discrete", **SCALED, "precision": "float64"}).alphas_cumprod.sqrt()
    s = ds.create("noise_schedule", {"name": "discrete", **SCALED, "rescale_betas_zero_snr": True})
    want = (plain - plain[-1]) * plain[0] / (plain[0] - plain[-1])
    torch.testing.assert_close(s.alphas_cumprod[:-1].sqrt(), want[:-1], rtol=1e-9, atol=0)
    assert float(s.alphas_cumprod[-1]) == 2.0**-24 and round(s.domain()[1]) == 4096


@pytest.mark.parametrize("interpolation", ["linear", "log_sigma"])
def test_timestep_map_is_exact_on_the_table(interpolation):
    s = ds.create("noise_schedule", {"name": "discrete", "interpolation": interpolation})
    j = torch.arange(1000, dtype=torch.float64)
    assert torch.equal(s.timestep(s.table_sigmas), j)
    assert torch.equal(s.sigma_at_timestep(j), s.table_sigmas)


def test_timestep_map_interpolates_between_entries_and_inverts():
    lin = ds.create("noise_schedule", "discrete")
    log = ds.create("noise_schedule", {"name": "discrete", "interpolation": "log_sigma"})
    a, b = lin.table_sigmas[100], lin.table_sigmas[101]
    t = torch.tensor(100.25, dtype=torch.float64)
    torch.testing.assert_close(lin.sigma_at_timestep(t), 0.75 * a + 0.25 * b, rtol=1e-14, atol=0)
    torch.testing.assert_close(log.sigma_at_timestep(t), a**0.75 * b**0.25, rtol=1e-14, atol=0)
    sigma = torch.exp(torch.linspace(math.log(0.0101), math.log(157.0), 301, dtype=torch.float64))
    for s in (lin, log):
        torch.testing.assert_close(s.sigma_at_timestep(s.timestep(sigma)), sigma, rtol=1e-12, atol=0)
    assert lin.timestep(torch.tensor([1e-4, 1e4])).tolist() == [0.0, 999.0]  # clamped to the table


def test_log_sigma_map_equals_diffusers_karras_timesteps():
    """diffusers' Euler maps its Karras sigmas back to timesteps in log sigma."""
    euler = EulerDiscreteScheduler(use_karras_sigmas=True, **SCALED)
    euler.set_timesteps(12)
    _, schedule = from_diffusers(torch.nn.Identity(), euler)
    assert schedule.interpolation == "log_sigma"
    ours = schedule.timestep(euler.sigmas[:-1].to(torch.float64))
    torch.testing.assert_close(ours, euler.timesteps.to(torch.float64), rtol=0, atol=2e-4)


def test_training_draws_table_entries_uniformly():
    s = ds.create("noise_schedule", "discrete")
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    j = s.timestep(s.time_from_uniform(u))
    assert torch.equal(j, j.round())  # every draw is an entry of the table
    counts = torch.bincount(j.long(), minlength=1000).to(torch.float64)
    assert abs(float(counts[:500].sum()) / 20000 - 0.5) < 5 * math.sqrt(0.25 / 20000)


def test_add_noise_is_ddpm_forward_process():
    s = ds.create("noise_schedule", {"name": "discrete", "precision": "float64"})
    x0, noise = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    j = torch.tensor([0, 500, 999])
    a = s.alphas_cumprod[j][:, None]
    torch.testing.assert_close(s.add_noise(x0, s.table_sigmas[j], noise), a.sqrt() * x0 + (1 - a).sqrt() * noise,
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("config, message", [
    ({"trained_betas": [0.1] * 1000, "alphas_cumprod": [0.5] * 1000}, "not both"),
    ({"trained_betas": [0.1, 0.2]}, "num_train_timesteps=2"),
    ({"num_train_timesteps": 2, "alphas_cumprod": [0.5, 0.6]}, "decrease strictly"),
    ({"beta_schedule": "sigmoid"}, "beta_schedule"),
])
def test_bad_tables_are_refused(config, message):
    with pytest.raises(ds.SchemeConfigError, match=message):
        ds.create("noise_schedule", {"name": "discrete", **config})


def test_from_diffusers_refuses_what_it_cannot_bridge():
    with pytest.raises(DiffusersBridgeError, match="not supported"):
        from_diffusers(torch.nn.Identity(), DDPMScheduler(beta_schedule="sigmoid"))
    with pytest.raises(DiffusersBridgeError, match="'epsilon', 'v_prediction' or 'sample'"):
        from_diffusers(torch.nn.Identity(), {"beta_schedule": "linear", "prediction_type": "flow_prediction"})
    with pytest.raises(DiffusersBridgeError, match="no noise table"):
        from_diffusers(torch.nn.Identity(), {"sigma_min": 0.002, "sigma_max": 80.0})


def test_mismatched_tables_do_not_pair():
    precond, _ = from_diffusers(torch.nn.Identity(), DDPMScheduler(num_train_timesteps=500))
    with pytest.raises(ds.PairingError, match="num_train_timesteps"):
        ds.MSEDSMLoss(precond, ds.create("noise_schedule", "discrete"))
