"""``ds.sample``: mixed preconditioner/schedule pairs give the matched pair's distribution; clear errors."""

from __future__ import annotations

from functools import partial

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes.sampling import SampleResult
from diffusion_schemes.conformance.mixture import ExactX0, GaussianMixture, oracle_preconditioner

MIX = GaussianMixture([[-1.0, 0.0], [1.0, 1.0], [1.0, -1.0]], [0.2, 0.4, 0.3], [0.5, 0.25, 0.25])
BETA_D, BETA_MIN, M = 19.9, 0.1, 1000


def vp_noise_level(t):
    """Karras et al. 2022, Table 1 (VP): sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)."""
    return torch.sqrt(torch.exp(0.5 * BETA_D * t**2 + BETA_MIN * t) - 1)


def edm_oracle():
    """EDM preconditioner whose output is the exact denoiser (its c_noise = ln(sigma) / 4)."""
    return oracle_preconditioner(
        lambda backbone: ds.create("preconditioner", "edm", model=backbone), MIX, lambda c: torch.exp(4 * c)
    )


def vp_oracle():
    """VP preconditioner whose output is the exact denoiser (its c_noise = (M - 1) t)."""
    return oracle_preconditioner(
        lambda backbone: ds.create(
            "preconditioner", {"name": "vp", "beta_d": BETA_D, "beta_min": BETA_MIN, "M": M}, model=backbone
        ),
        MIX,
        lambda c: vp_noise_level(c / (M - 1)),
    )


def mixture_moments():
    mean = (MIX.weights[:, None] * MIX.means).sum(0)
    second = sum(
        w * (s**2 * torch.eye(2, dtype=torch.float64) + torch.outer(mu, mu))
        for w, mu, s in zip(MIX.weights, MIX.means, MIX.stds)
    )
    return mean, second - torch.outer(mean, mean)


@pytest.fixture(scope="module")
def schedules():
    return {"edm": ds.create("noise_schedule", "edm"), "vp": ds.create("noise_schedule", "vp")}


@pytest.mark.parametrize("schedule_name", ["edm", "vp"])
def test_mixed_pairs_sample_the_matched_pairs_distribution(schedules, schedule_name):
    schedule = schedules[schedule_name]
    latents = schedule.init_latents((2000, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    own = {"edm": edm_oracle, "vp": vp_oracle}[schedule_name]()
    other = {"edm": vp_oracle, "vp": edm_oracle}[schedule_name]()
    matched = ds.sample(own, latents, schedule, 32).samples
    mixed = ds.sample(other, latents, schedule, 32).samples
    plain = ds.sample(ExactX0(MIX, schedule), latents, schedule, 32).samples  # a plain model gets the schedule's t
    # the same exact denoiser reached through the noise level: the same samples, so the same distribution
    assert float((mixed - matched).abs().max()) < 1e-9  # measured 6e-15 (float64)
    assert float((plain - matched).abs().max()) < 1e-9
    mean, cov = mixture_moments()
    assert torch.allclose(matched.mean(0), mean, atol=0.06)  # 2000 draws: standard error about 0.02
    assert torch.allclose(torch.cov(matched.T), cov, atol=0.08)


def test_schedule_time_given_to_another_schemes_sigma_is_wrong(schedules):
    """The negative control: VP time fed to the EDM preconditioner's own sigma(t) = t samples something else."""
    schedule = schedules["vp"]
    latents = schedule.init_latents((500, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    edm = edm_oracle()
    right = ds.sample(edm, latents, schedule, 16).samples
    wrong = ds.sample(lambda x, t: edm(x, t), latents, schedule, 16).samples  # plain callable: gets VP's t
    assert float((right - wrong).abs().max()) > 0.1


def test_sample_result_and_predictor_forms(schedules):
    schedule = schedules["edm"]
    latents = schedule.init_latents((16, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    precond = edm_oracle()
    direct = ds.sample(precond, latents, schedule, 8)
    assert isinstance(direct, SampleResult) and direct.nfe == 15
    samples, nfe = direct
    via_partial = ds.sample(schedule.get_denoiser(x0_predictor=partial(precond, condition=None)), latents, schedule, 8)
    by_spec = ds.sample(precond, latents, schedule, 8, solver=ds.parse_spec("solver", "heun"))
    by_object = ds.sample(precond, latents, schedule, 8, solver=ds.create("solver", "heun"))
    for other in (via_partial, by_spec, by_object):
        assert torch.equal(other.samples, samples) and other.nfe == nfe
    assert not latents.requires_grad and not samples.requires_grad


@pytest.mark.parametrize("num_steps", [0, -3])
def test_num_steps_below_one(schedules, num_steps):
    with pytest.raises(ValueError, match="num_steps must be an int >= 1"):
        ds.sample(lambda x, t: x, torch.zeros(2, 2), schedules["edm"], num_steps)


@pytest.mark.parametrize("num_steps", [2.5, True, "8"])
def test_num_steps_not_an_int(schedules, num_steps):
    with pytest.raises(TypeError, match="num_steps must be an int"):
        ds.sample(lambda x, t: x, torch.zeros(2, 2), schedules["edm"], num_steps)


def test_unknown_solver_lists_installed_ones(schedules):
    with pytest.raises(ds.UnknownSchemeError) as info:
        ds.sample(lambda x, t: x, torch.zeros(2, 2), schedules["edm"], 4, solver="heunn")
    message = str(info.value)
    assert "Did you mean 'heun'?" in message
    for name in ("euler", "heun", "edm_stochastic_euler", "edm_stochastic_heun", "euler_maruyama", "dpmpp_2m"):
        assert name in message


def test_solver_option_typo_is_a_config_error(schedules):
    with pytest.raises(ds.SchemeConfigError, match="Did you mean 'S_churn'"):
        ds.sample(lambda x, t: x, torch.zeros(2, 2), schedules["edm"], 4,
                  solver="edm_stochastic_heun", solver_options={"S_chrun": 1.0})
    with pytest.raises(ValueError, match="cannot be applied to the solver object"):
        ds.sample(lambda x, t: x, torch.zeros(2, 2), schedules["edm"], 4,
                  solver=ds.create("solver", "heun"), solver_options={"S_churn": 1.0})


def test_latents_on_another_device_than_the_model(schedules):
    schedule = schedules["edm"]
    model = ExactX0(MIX, schedule).to("meta")
    with pytest.raises(ValueError, match=r"latents are on cpu but the model's parameters are on meta"):
        ds.sample(model, torch.zeros(2, 2), schedule, 4)
    precond = ds.create("preconditioner", "edm", model=torch.nn.Linear(2, 2)).to("meta")
    with pytest.raises(ValueError, match="on meta"):
        ds.sample(schedule.get_denoiser(x0_predictor=partial(precond, condition=None)), torch.zeros(2, 2), schedule, 4)


def test_condition_batch_checked_when_sampling(schedules):
    schedule = schedules["edm"]
    precond = ds.create("preconditioner", "edm", model=lambda x, c, condition=None: x)
    denoiser = schedule.get_denoiser(x0_predictor=partial(precond, condition=torch.zeros(3, 4)))
    with pytest.raises(ds.ConditionError, match="batch size is 3 but the latent's is 2"):
        ds.sample(denoiser, torch.zeros(2, 2), schedule, 4)


def test_latents_must_be_floating(schedules):
    with pytest.raises(TypeError, match="init_latents"):
        ds.sample(lambda x, t: x, torch.zeros(2, 2, dtype=torch.long), schedules["edm"], 4)


def test_float32_latents_sample_in_float32(schedules):
    schedule = schedules["vp"]
    latents = schedule.init_latents((500, 2), generator=torch.Generator().manual_seed(0))
    result = ds.sample(vp_oracle(), latents, schedule, 32)
    reference = ds.sample(vp_oracle(), latents.double(), schedule, 32)
    assert result.samples.dtype == torch.float32
    assert float((result.samples.double() - reference.samples).abs().max()) < 1e-4  # measured 2.4e-6
