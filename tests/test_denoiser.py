"""The denoiser factory: predictor conversions, the ODE/SDE right-hand side, how predictors are called."""

from __future__ import annotations

from functools import partial

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes._denoiser import Denoiser, make_denoiser
from gaussian_mixture import GaussianMixture

MIX = GaussianMixture([0.4, 0.6], [[-1.0, 0.5], [1.0, -0.5]], [0.3, 0.6])
BETA_D, BETA_MIN = 19.9, 0.1


def vp_noise_level(t):
    """Karras et al. 2022, Table 1 (VP), written independently of the plugin."""
    return torch.sqrt(torch.exp(0.5 * BETA_D * t**2 + BETA_MIN * t) - 1)


@pytest.fixture(scope="module")
def vp():
    return ds.create("noise_schedule", "vp")


@pytest.fixture
def x():
    return torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2


def exact_x0(x, t):
    return MIX.denoise(x, vp_noise_level(t))


def exact_eps(x, t):
    sigma = vp_noise_level(t)[:, None]
    return (x - MIX.denoise(x, sigma[:, 0])) / sigma


def exact_score(x, t):  # score of the unscaled latent (Tweedie: D = x + sigma^2 score)
    sigma = vp_noise_level(t)[:, None]
    return (MIX.denoise(x, sigma[:, 0]) - x) / sigma**2


@pytest.mark.parametrize("kind, predictor", [("x0", exact_x0), ("epsilon", exact_eps), ("score", exact_score)])
def test_every_predictor_gives_the_same_denoiser(vp, x, kind, predictor):
    denoiser = vp.get_denoiser(**{f"{kind}_predictor": predictor})
    assert denoiser.prediction_type == kind
    t = torch.full((6,), 0.4, dtype=torch.float64)
    sigma = vp_noise_level(t)
    expected = MIX.denoise(x, sigma)
    assert torch.allclose(denoiser.x0(x, t), expected, rtol=1e-10, atol=1e-12)
    assert torch.allclose(denoiser.x0_sigma(x, sigma), expected, rtol=1e-10, atol=1e-12)
    assert torch.allclose(denoiser.x0_sigma(x, sigma[0]), expected, rtol=1e-10, atol=1e-12)  # scalar sigma


def test_plain_callable_gets_the_schedules_time(vp, x):
    seen = []

    def model(x, t):
        seen.append(t)
        return torch.zeros_like(x)

    sigma = torch.tensor(3.0, dtype=torch.float64)
    vp.get_denoiser(x0_predictor=model).x0_sigma(x, sigma)
    (t,) = seen
    assert t.shape == (6,)
    assert torch.allclose(vp_noise_level(t), sigma.expand(6), rtol=1e-10)


def test_preconditioner_gets_the_noise_level_and_partial_keeps_its_arguments(vp, x):
    seen = {}

    def backbone(x_in, c_noise, condition=None, scale=1.0):
        seen.update(c_noise=c_noise, condition=condition, scale=scale)
        return torch.zeros_like(x_in)

    precond = ds.create("preconditioner", "edm", model=backbone)
    condition = torch.ones(6, 3)
    denoiser = vp.get_denoiser(x0_predictor=partial(precond, condition=condition, scale=2.0))
    sigma = torch.tensor(0.7, dtype=torch.float64)
    out = denoiser.x0_sigma(x, sigma)
    assert torch.allclose(seen["c_noise"], torch.log(sigma).expand(6) / 4)  # EDM's c_noise of the noise level
    assert seen["condition"] is condition and seen["scale"] == 2.0
    assert torch.allclose(out, 0.25 / (0.7**2 + 0.25) * x)  # c_skip x when F = 0


@pytest.mark.parametrize("denoising_type, factor", [("ode", 1.0), ("sde", 2.0)])
def test_right_hand_side_in_schedule_time(vp, x, denoising_type, factor):
    denoiser = vp.get_denoiser(x0_predictor=exact_x0, denoising_type=denoising_type)
    t = torch.full((6,), 0.3, dtype=torch.float64)
    # sigma'(t) by autograd of the independent VP formula
    tt = t.clone().requires_grad_(True)
    (dsigma,) = torch.autograd.grad(vp_noise_level(tt).sum(), tt)
    sigma = vp_noise_level(t)
    score = (MIX.denoise(x, sigma) - x) / sigma[:, None] ** 2
    # probability flow: dx/dt = -sigma' sigma score; reverse-SDE drift: twice that
    expected = -factor * (dsigma * sigma)[:, None] * score
    assert torch.allclose(denoiser(x, t), expected, rtol=1e-8, atol=1e-10)
    # the same from the forward SDE of the scaled latent: dx_hat/dt = -g^2 / (2 alpha^2) score (times 2 for the SDE)
    log_snr = vp.get_log_snr(t)
    g2 = vp.get_drift_diffusion(log_snr)
    alpha, _ = vp.get_alpha_sigma(log_snr)
    assert torch.allclose(denoiser(x, t), -factor * (g2 / (2 * alpha**2))[:, None] * score, rtol=1e-8, atol=1e-10)
    # g^2 of the unscaled latent's SDE: d sigma^2 / dt
    assert torch.allclose(denoiser.diffusion(t), 2 * sigma * dsigma, rtol=1e-10)


def test_scalar_time_right_hand_side(x):
    edm = ds.create("noise_schedule", "edm")
    denoiser = edm.get_denoiser(x0_predictor=lambda x, t: MIX.denoise(x, t))
    t = torch.tensor(1.5, dtype=torch.float64)
    assert torch.allclose(denoiser(x, t), (x - MIX.denoise(x, 1.5)) / 1.5)  # EDM: sigma = t, sigma' = 1


@pytest.mark.parametrize("given", [{}, {"x0_predictor": exact_x0, "epsilon_predictor": exact_eps}])
def test_exactly_one_predictor(vp, given):
    with pytest.raises(ValueError, match=f"exactly one predictor, got {len(given)}"):
        vp.get_denoiser(**given)


def test_bad_denoising_type_and_predictor(vp):
    with pytest.raises(ValueError, match="denoising_type must be one of"):
        vp.get_denoiser(x0_predictor=exact_x0, denoising_type="flow")
    with pytest.raises(TypeError, match="must be callable"):
        vp.get_denoiser(x0_predictor=3.0)
    with pytest.raises(TypeError):
        vp.get_denoiser(exact_x0)  # keyword-only, so the predictor's kind is always named


def test_make_denoiser_is_the_schedules_factory(vp):
    denoiser = make_denoiser(vp, score_predictor=exact_score, denoising_type="sde")
    assert isinstance(denoiser, Denoiser)
    assert (denoiser.prediction_type, denoiser.denoising_type, denoiser.schedule) == ("score", "sde", vp)
    assert "score" in repr(denoiser)
