"""The flow-matching distribution's own tests: the conformance kit and the rectified-flow identities."""

import pytest
import torch

import diffusion_schemes as ds


@pytest.mark.diffusion_schemes_conformance("noise_schedule", "flow_matching")
@pytest.mark.diffusion_schemes_conformance("preconditioner", "flow_matching")
@pytest.mark.diffusion_schemes_conformance("weighting", "flow_matching_velocity", schedule="flow_matching")
def test_flow_matching_conforms():
    pass


def test_forward_process_is_the_straight_line():
    """alpha = 1 - t and sigma = t, written here from the definition of rectified flow."""
    s = ds.create("noise_schedule", "flow_matching")
    t = torch.linspace(*s.domain(), 33, dtype=torch.float64)
    alpha, sigma = s.get_alpha_sigma(s.get_log_snr(t))
    torch.testing.assert_close(alpha, 1 - t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sigma, t, rtol=1e-12, atol=1e-12)
    x0, eps = torch.randn(33, 2, dtype=torch.float64), torch.randn(33, 2, dtype=torch.float64)
    z = s.add_noise(x0, t, noise=eps)
    torch.testing.assert_close(z, (1 - t[:, None]) * x0 + t[:, None] * eps)


def test_preconditioner_turns_the_true_velocity_into_x0():
    """With F = eps - x0 (the velocity of the straight path) the output is x0 at every time."""
    s = ds.create("noise_schedule", "flow_matching")
    x0, eps = torch.randn(9, 3, dtype=torch.float64), torch.randn(9, 3, dtype=torch.float64)
    t = torch.linspace(0.01, 0.99, 9, dtype=torch.float64)
    seen = {}

    def velocity(z, c_noise, condition=None):
        seen["z"], seen["t"] = z, c_noise
        return eps - x0

    precond = ds.create("preconditioner", "flow_matching", model=velocity)
    x_hat = x0 + s.noise_level(t)[:, None] * eps
    torch.testing.assert_close(precond(x_hat, t), x0)
    torch.testing.assert_close(seen["z"], (1 - t[:, None]) * x0 + t[:, None] * eps)  # the network sees z_t
    torch.testing.assert_close(seen["t"], t)


def test_velocity_weighting_is_uniform_on_the_velocity_loss():
    """||x0 - x0_hat||^2 = t^2 ||v - v_hat||^2, so the x0 weight must be 1 / t^2."""
    s = ds.create("noise_schedule", "flow_matching")
    t = torch.linspace(*s.domain(), 17, dtype=torch.float64)
    torch.testing.assert_close(s.loss_weight(t, "x0"), 1 / t**2, rtol=1e-10, atol=0)


def test_listed_from_its_own_distribution():
    got = {(i.kind, i.name): i.distribution for i in ds.list_schemes() if i.distribution.endswith("flow-matching")}
    assert got == {
        ("preconditioner", "flow_matching"): "diffusion-schemes-flow-matching",
        ("noise_schedule", "flow_matching"): "diffusion-schemes-flow-matching",
        ("weighting", "flow_matching_velocity"): "diffusion-schemes-flow-matching",
    }


def test_sampling_with_the_exact_velocity_reaches_gaussian_data():
    """The whole pipeline on a custom-variance scheme: data N(mu, s^2), the exact velocity, Heun.

    For Gaussian data E[x0 | x] = mu + s^2 / (s^2 + sigma^2) (x - mu) with x = z / (1 - t) and
    sigma = t / (1 - t); the exact velocity is (z - E[x0 | z]) / t. The probability-flow ODE maps
    x(sigma_max) to mu + s (x - mu) / sqrt(s^2 + sigma_max^2), checked on each sample: Heun's
    error must shrink at its second order as the steps double.
    """
    mu, s = 0.5, 0.8
    schedule = ds.create("noise_schedule", "flow_matching")

    def velocity(z, t, condition=None):
        t = t.reshape(-1, 1).to(z.dtype)
        x_hat, sigma = z / (1 - t), t / (1 - t)
        return (z - (mu + s**2 / (s**2 + sigma**2) * (x_hat - mu))) / t

    precond = ds.create("preconditioner", "flow_matching", model=velocity)
    latents = mu + schedule.init_latents((512, 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigma_max = float(schedule.sigmas(2)[0])
    exact = mu + s * (latents - mu) / (s**2 + sigma_max**2) ** 0.5
    errors = []
    for steps in (32, 64, 128):
        samples, nfe = ds.sample(precond, latents, schedule, num_steps=steps, solver="heun")
        assert nfe == 2 * steps - 1
        errors.append(float((samples - exact).abs().max()))
    assert errors[-1] < 2e-3 * s, errors
    assert errors[0] / errors[1] > 3 and errors[1] / errors[2] > 3, errors  # about 4 for second order
