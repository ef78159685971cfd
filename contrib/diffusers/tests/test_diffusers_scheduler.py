"""as_diffusers_scheduler: diffusers' scheduler interface around our solvers, schedules and grids."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler, HeunDiscreteScheduler

import diffusion_schemes as ds
from diffusers_nets import _one_thread  # noqa: F401 - the fixture: one thread for tiny networks
from diffusion_schemes_diffusers import DiffusersBridgeError, DiffusionSchemesScheduler, as_diffusers_scheduler

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers and numpy 2 (np.array copy=False)


def loop(scheduler, model, z, generator=None):
    for t in scheduler.timesteps:
        z = scheduler.step(model(scheduler.scale_model_input(z, t), t), t, z, generator=generator).prev_sample
    return z


def _per_sample(t, x):
    """A timestep (scalar from a pipeline, one per sample from a preconditioner) shaped to broadcast with x."""
    t = torch.as_tensor(t, dtype=x.dtype)
    return t.reshape(-1, *[1] * (x.ndim - 1)) if t.ndim else t


def eps_model(x, t):
    """A smooth epsilon prediction depending on the input and the timestep."""
    return torch.tanh(x) * (1 + _per_sample(t, x) / 1000)


def test_order_and_timesteps_are_diffusers_heuns():
    ours = as_diffusers_scheduler({"name": "discrete", "precision": "float32"}, "heun", "linspace")
    ours.set_timesteps(7)
    theirs = HeunDiscreteScheduler(beta_start=0.0001, beta_end=0.02)   # the DDPM table, our default
    theirs.set_timesteps(7)
    assert ours.order == theirs.order == 2 and len(ours.timesteps) == 2 * 7 - 1
    assert torch.equal(ours.timesteps, theirs.timesteps)
    torch.testing.assert_close(ours.sigmas, theirs.sigmas, rtol=1e-6, atol=0)


def test_latent_convention_is_the_scaled_latent():
    scheduler = as_diffusers_scheduler("discrete", "euler", "leading")
    scheduler.set_timesteps(5)
    sigma_0 = float(ds.create("discretization", "leading").sigmas(5, ds.create("noise_schedule", "discrete"))[0])
    assert scheduler.init_noise_sigma == pytest.approx(sigma_0 / (1 + sigma_0**2) ** 0.5, rel=1e-12)
    z = torch.randn(2, 3, dtype=torch.float64)
    torch.testing.assert_close(scheduler.scale_model_input(z, scheduler.timesteps[0]), z, rtol=1e-14, atol=0)
    edm = as_diffusers_scheduler("edm", "euler", "karras")               # variance exploding: alpha = 1
    edm.set_timesteps(4)
    assert edm.init_noise_sigma == pytest.approx(80.0) and edm.timesteps[0] == pytest.approx(0.25 * torch.log(torch.tensor(80.0)))


def test_any_schedule_and_preconditioner_run_like_ds_sample():
    """An EDM-preconditioned network in a diffusers-style loop equals ds.sample (c_in, c_noise, c_skip, c_out)."""
    network = lambda x, c_noise: torch.sin(x) * torch.cos(_per_sample(c_noise, x))  # noqa: E731
    scheduler = as_diffusers_scheduler("edm", "dpmpp_2m", "karras")
    scheduler.set_timesteps(8)
    noise = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = loop(scheduler, network, noise * scheduler.init_noise_sigma)
    precond = ds.create("preconditioner", "edm", model=lambda x, t, condition=None: network(x, t))
    want = ds.sample(precond, noise * 80.0, ds.create("noise_schedule", "edm"), 8, solver="dpmpp_2m", discretization="karras")
    # timesteps are float32, as diffusers keeps them: the network sees c_noise rounded (measured 2e-9 here)
    torch.testing.assert_close(got, want.samples, rtol=0, atol=1e-7)


def test_set_timesteps_from_sigmas_or_timesteps():
    schedule = ds.create("noise_schedule", "discrete")
    grid = ds.create("discretization", "trailing").sigmas(6, schedule)
    a, b, c = (as_diffusers_scheduler("discrete", "euler", "trailing") for _ in range(3))
    a.set_timesteps(6)
    b.set_timesteps(sigmas=grid[:-1].tolist())
    c.set_timesteps(timesteps=ds.create("discretization", "trailing").timesteps(6, schedule).long().tolist())
    for other in (b, c):
        assert torch.equal(other.timesteps, a.timesteps) and torch.equal(other.sigmas, a.sigmas)
    with pytest.raises(DiffusersBridgeError, match="exactly one"):
        a.set_timesteps(6, sigmas=[1.0])
    with pytest.raises(DiffusersBridgeError, match="decrease strictly"):
        a.set_timesteps(sigmas=[1.0, 2.0])


def test_add_noise_equals_ddpm_scheduler():
    ours, theirs = as_diffusers_scheduler({"name": "discrete", "precision": "float32"}), DDPMScheduler()
    x0, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([0, 417, 999])
    torch.testing.assert_close(ours.add_noise(x0, noise, t), theirs.add_noise(x0, noise, t), rtol=1e-5, atol=1e-6)


def test_save_and_load_round_trip(tmp_path):
    scheduler = as_diffusers_scheduler({"name": "discrete", **{"beta_schedule": "squaredcos_cap_v2"}},
                                       {"name": "dpmpp_2m_sde", "eta": 0.5}, "karras",
                                       {"name": "discrete", "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"})
    scheduler.save_pretrained(tmp_path)
    loaded = DiffusionSchemesScheduler.from_pretrained(tmp_path)
    assert dict(loaded.config) == dict(scheduler.config)
    assert loaded.solver.spec == scheduler.solver.spec and loaded.preconditioner.prediction_type == "v_prediction"
    results = []
    for s in (scheduler, loaded):
        s.set_timesteps(5)
        z = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
        results.append(loop(s, eps_model, z, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(*results)


def test_begin_index_starts_mid_grid_like_img2img():
    schedule = ds.create("noise_schedule", "discrete")
    scheduler = as_diffusers_scheduler(schedule, "heun", "linspace")
    scheduler.set_timesteps(6)
    begin = 2 * 2                            # step 2 of heun starts at evaluation 4 (two a step before it)
    scheduler.set_begin_index(begin)
    x0, noise = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    z = scheduler.add_noise(x0, noise, scheduler.timesteps[begin:begin + 1])
    for t in scheduler.timesteps[begin:]:
        z = scheduler.step(eps_model(scheduler.scale_model_input(z, t), t), t, z).prev_sample
    grid = ds.create("discretization", "linspace").sigmas(6, schedule)[2:]
    precond = ds.create("preconditioner", "discrete", model=lambda x, t, condition=None: eps_model(x, t))
    want = ds.sample(precond, x0 + grid[0] * noise, schedule, sigmas=grid, solver="heun")
    torch.testing.assert_close(z, want.samples, rtol=0, atol=1e-6)
    scheduler.set_timesteps(6)
    scheduler.set_begin_index(3)             # the second evaluation of a heun step
    with pytest.raises(DiffusersBridgeError, match="first evaluation"):
        scheduler.step(torch.zeros(2, 3), scheduler.timesteps[2], torch.zeros(2, 3))


def test_misuse_is_refused_clearly():
    with pytest.raises(DiffusersBridgeError, match="dpm_adaptive.*fixed steps"):
        as_diffusers_scheduler("discrete", "dpm_adaptive")
    with pytest.raises(DiffusersBridgeError, match="set_timesteps"):
        as_diffusers_scheduler("discrete").step(torch.zeros(1), 999, torch.zeros(1))
    with pytest.raises(DiffusersBridgeError, match="preconditioner="):
        as_diffusers_scheduler("cosine")
    scheduler = as_diffusers_scheduler("discrete")
    scheduler.set_timesteps(2)
    loop(scheduler, eps_model, torch.zeros(1, 2))
    with pytest.raises(DiffusersBridgeError, match="set_timesteps again"):
        scheduler.step(torch.zeros(1, 2), scheduler.timesteps[-1], torch.zeros(1, 2))
