"""The denoiser factory: predictor conversions, the ODE/SDE right-hand side, how predictors are called."""

from __future__ import annotations

from functools import partial

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes.sampling import PREDICTION_TYPES
from diffusion_schemes.sampling import Denoiser, make_denoiser
from diffusion_schemes.conformance.mixture import GaussianMixture

MIX = GaussianMixture([[-1.0, 0.5], [1.0, -0.5]], [0.3, 0.6], [0.4, 0.6])
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


def exact_v(x, t):
    """v = alpha eps - sigma_vp x0 (Salimans & Ho 2022) in expectation, alpha = 1/sqrt(1 + s^2), sigma_vp = s alpha."""
    s = vp_noise_level(t)[:, None]
    alpha, sigma_vp = 1 / (1 + s**2).sqrt(), s / (1 + s**2).sqrt()
    return alpha * exact_eps(x, t) - sigma_vp * exact_x0(x, t)


def autograd_score(x, t):
    """grad_x log p(x; s) of the noisy mixture by autograd: no Tweedie, no posterior mean."""
    s = vp_noise_level(t)[:, None]
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        var = MIX.stds**2 + s**2  # (B, K)
        sq = ((x[:, None, :] - MIX.means[None]) ** 2).sum(-1)
        log_p = torch.logsumexp(MIX.weights.log() - 0.5 * sq / var - 0.5 * MIX.dim * torch.log(2 * torch.pi * var), 1)
        (grad,) = torch.autograd.grad(log_p.sum(), x)
    return grad


@pytest.mark.parametrize("kind, predictor", [("x0", exact_x0), ("epsilon", exact_eps), ("v", exact_v),
                                             ("score", exact_score), ("score", autograd_score)])
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


@pytest.mark.parametrize("schedule_name", ["edm", "vp", "ve", "iddpm"])
@pytest.mark.parametrize("kind", PREDICTION_TYPES)
def test_each_conversion_inverts_the_loss_target_in_float64(schedule_name, kind):
    """Fed the loss's own regression target for a known x0, every denoiser gives that x0 back."""
    schedule = ds.create("noise_schedule", schedule_name)
    loss = ds.MSEDSMLoss(lambda x, t, condition=None: x, schedule, prediction_type=kind)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(5, 2, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(5, 2, 3, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.3, 1.0, 4.0, 20.0], dtype=torch.float64)
    x = x0 + sigma[:, None, None] * noise
    target = loss.target(x0, noise, (-2 * sigma.log())[:, None, None])
    denoiser = schedule.get_denoiser(**{f"{kind}_predictor": lambda x_in, t, condition=None: target})
    assert torch.allclose(denoiser.x0_sigma(x, sigma), x0, rtol=0, atol=1e-10)


def test_wrong_output_shape_is_a_clear_error(vp, x):
    from diffusion_schemes.errors import ModelOutputError

    for name in ("x0_predictor", "epsilon_predictor", "v_predictor", "score_predictor"):
        denoiser = vp.get_denoiser(**{name: lambda x, t: torch.cat([x, x], 1)})  # learned variance: 2x channels
        with pytest.raises(ModelOutputError, match=rf"the {name} returned shape \(6, 4\) but the latent has shape \(6, 2\)"):
            denoiser.x0_sigma(x, 1.0)
    precond = ds.create("preconditioner", "edm", model=lambda x, c, condition=None: x[:, :1])
    with pytest.raises(ModelOutputError, match=r"backbone returned shape \(6, 1\)"):
        precond(x, torch.ones(6))
    assert issubclass(ModelOutputError, ValueError) and issubclass(ModelOutputError, ds.DiffusionSchemesError)


def test_signature_and_output_objects_say_what_to_wrap(vp, x):
    from types import SimpleNamespace

    from diffusion_schemes.errors import ModelSignatureError
    from diffusion_schemes.adapters import BackboneAdapter

    class DiffusersLike(torch.nn.Module):  # UNet2DModel's call and output shape
        def forward(self, sample, timestep, class_labels=None, return_dict=True):
            shift = 0 if class_labels is None else class_labels[:, None]
            return SimpleNamespace(sample=0 * sample + shift)

    precond = ds.create("preconditioner", "edm", model=DiffusersLike())
    with pytest.raises(ModelSignatureError, match=r"returned a SimpleNamespace, not a tensor; wrap the network in diffusion_schemes.adapters.BackboneAdapter"):
        precond(x, torch.ones(6))
    adapted = ds.create("preconditioner", "edm", model=BackboneAdapter(DiffusersLike(), condition="class_labels"))
    labels = torch.arange(6, dtype=torch.float64)
    out = adapted(x, torch.ones(6), labels)  # c_skip x + c_out * label at sigma = 1, sigma_data = 0.5
    assert torch.allclose(out, 0.25 / 1.25 * x + 0.5 / 1.25**0.5 * labels[:, None], rtol=1e-12)

    no_condition = ds.create("preconditioner", "edm", model=lambda x, c: x)
    with pytest.raises(ModelSignatureError, match=r"cannot be called as model\(x, t, condition=...\).*lambda x, t, condition=None"):
        no_condition(x, torch.ones(6))
    with pytest.raises(ModelSignatureError, match=r"the x0_predictor cannot be called as model\(x, t, condition=...\)"):
        vp.get_denoiser(x0_predictor=lambda x, t: x, condition=torch.zeros(6, 1)).x0_sigma(x, 1.0)

    def raises_inside(x, t, condition=None):  # a TypeError from inside a fitting network is not rewritten
        raise TypeError("inner bug")

    with pytest.raises(TypeError, match="inner bug") as info:
        vp.get_denoiser(x0_predictor=raises_inside).x0_sigma(x, 1.0)
    assert not isinstance(info.value, ModelSignatureError)
    assert BackboneAdapter(lambda x, t: (x, None), output=0, condition=False)(x, t=None).shape == x.shape


# ------------------------------------------------------------ the path ds.sample takes on a checked grid

def edm_oracle():
    from diffusion_schemes.conformance.mixture import oracle_preconditioner

    return oracle_preconditioner(lambda backbone: ds.create("preconditioner", "edm", model=backbone), MIX,
                                 lambda c: torch.exp(4 * c))


@pytest.mark.parametrize("kind", ["preconditioner", "partial", "callable"])
def test_the_checked_levels_path_gives_the_exact_denoiser(vp, x, kind):
    """``on_checked_levels`` reaches a preconditioner (or a partial of one) through ``precondition`` and any
    other predictor through ``x0_given``; both give the mixture's exact D at the noise level (EDM's
    preconditioner on VP's schedule: they meet at the noise level)."""
    seen = []
    precond = edm_oracle()

    def with_scale(x_in, c_noise, condition=None, scale=None):  # the oracle backbone of an EDM preconditioner
        seen.append(scale)
        return precond.model(x_in, c_noise, condition)

    predictor = {"preconditioner": precond, "callable": exact_x0,
                 "partial": partial(ds.create("preconditioner", "edm", model=with_scale), scale=2.0)}[kind]
    evaluate = vp.get_denoiser(x0_predictor=predictor).on_checked_levels(x)
    for sigma in (torch.tensor(0.7, dtype=torch.float64), torch.linspace(0.1, 3.0, 6, dtype=torch.float64)):
        expected = MIX.denoise(x, sigma.expand(6))
        assert torch.allclose(evaluate(x, sigma), expected, rtol=1e-10, atol=1e-12)
    assert seen == ([2.0, 2.0] if kind == "partial" else [])


def test_a_compiled_preconditioner_whose_time_is_the_noise_level_gets_the_noise_level(vp):
    """``torch.compile(precond)`` hides the preconditioner; one whose time is the noise level (EDM's) is called
    with the noise level, so it samples with any schedule (on VP's, the schedule's time would be wrong)."""
    precond = edm_oracle()
    compiled = torch.compile(precond, backend="eager")
    latents = vp.init_latents((16, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eager = ds.sample(precond, latents, vp, 6, solver="heun").samples
    assert torch.allclose(ds.sample(compiled, latents, vp, 6, solver="heun").samples, eager, rtol=0, atol=1e-12)
    sigma = torch.tensor(0.7, dtype=torch.float64)
    assert torch.allclose(vp.get_denoiser(x0_predictor=compiled).x0_sigma(latents, sigma),
                          MIX.denoise(latents, sigma.expand(16)), rtol=1e-10, atol=1e-12)


def test_a_plugin_solver_keeps_the_per_evaluation_check(vp):
    """Only solvers whose levels provably follow from the grid skip the preconditioner's check: a plugin's
    evaluation at noise level 0 is still refused with the preconditioner's error."""
    class ToZero(ds.BaseSolver):
        def step(self, denoiser, x, sigma, sigma_next, state=None, noise=None, last=False):
            denoised = denoiser.x0_sigma(x, sigma_next)  # at 0 on the last step: a bug of this solver
            return denoised, denoised, state

    latents = vp.init_latents((4, 2), generator=torch.Generator().manual_seed(0))
    assert not ToZero.levels_from_grid
    with pytest.raises(ds.DomainError, match="noise levels > 0"):
        ds.sample(edm_oracle(), latents, vp, 3, solver=ToZero())
