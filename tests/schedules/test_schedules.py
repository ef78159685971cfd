"""The four built-in noise schedules against float64 closed forms, autograd and round trips."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scheme_reference import F64, IDDPM, REFS, SCHEMES, U, dkw_bound, ks_statistic, time_grid

import diffusion_schemes as ds

RTOL = 1e-12


def schedule(name, **kw):
    return ds.create("noise_schedule", {"name": name, **kw})


def times(name):
    return torch.cat([time_grid(name, 97), time_grid(name, 97, training=True)])


@pytest.mark.parametrize("name", SCHEMES)
def test_noise_level_log_snr_and_alpha_sigma_match_closed_forms(name):
    s, ref, t = schedule(name), REFS[name], times(name)
    torch.testing.assert_close(s.noise_level(t), ref.sigma(t), rtol=RTOL, atol=0)
    for training in (False, True):
        torch.testing.assert_close(s.get_log_snr(t, training), ref.log_snr(t), rtol=RTOL, atol=1e-12)
    alpha, sigma = s.get_alpha_sigma(s.get_log_snr(t))
    torch.testing.assert_close(alpha, ref.alpha(t), rtol=RTOL, atol=0)
    torch.testing.assert_close(sigma, ref.forward_sigma(t), rtol=RTOL, atol=0)
    assert s.variance_type == ("preserving" if name == "vp" else "exploding")


@pytest.mark.parametrize("name", SCHEMES)
def test_log_snr_and_noise_level_together_match_closed_forms(name):
    """What a training step asks of t in one call (one domain check): the same closed forms as apart."""
    s, ref, t = schedule(name), REFS[name], times(name)
    for training in (False, True):
        log_snr, level = s.log_snr_and_noise_level(t, training)
        torch.testing.assert_close(log_snr, ref.log_snr(t), rtol=RTOL, atol=1e-12)
        torch.testing.assert_close(level, ref.sigma(t), rtol=1e-10, atol=0)
    if name != "vp":  # the time is the noise level: returned exactly, not through exp(-lambda / 2)
        assert torch.equal(s.log_snr_and_noise_level(t)[1], t)
    with pytest.raises(ds.DomainError, match=r"diffusion time t=\[-1.0\] is outside"):
        s.log_snr_and_noise_level(torch.tensor([0.5, -1.0], dtype=F64), training=True)


@pytest.mark.parametrize("name", SCHEMES)
def test_domains(name):
    s, ref = schedule(name), REFS[name]
    for training in (False, True):
        np.testing.assert_allclose(s.domain(training), ref.training if training else ref.sampling, rtol=1e-12)


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("num_steps", [1, 2, 18, 256])
def test_timesteps_and_sigmas(name, num_steps):
    s, ref = schedule(name), REFS[name]
    steps = s.timesteps(num_steps)
    assert steps.dtype == F64 and steps.shape == (num_steps + 1,) and float(steps[-1]) == 0
    np.testing.assert_allclose(steps[:-1].numpy(), ref.timesteps(num_steps), rtol=1e-13, atol=0)
    assert bool((steps[1:] < steps[:-1]).all())
    lo, hi = s.domain()
    assert lo * (1 - 1e-12) <= float(steps[-2]) and float(steps[0]) <= hi * (1 + 1e-12)
    sig = s.sigmas(num_steps)
    torch.testing.assert_close(sig[:-1], ref.sigma(steps[:-1]), rtol=RTOL, atol=0)
    assert float(sig[-1]) == 0


@pytest.mark.parametrize("name", SCHEMES)
def test_timesteps_reject_zero_steps(name):
    with pytest.raises(ValueError, match="num_steps"):
        schedule(name).timesteps(0)


@pytest.mark.parametrize("name", ["edm", "ve", "vp"])
def test_training_distribution_ks(name):
    """KS distance to the closed-form CDF under the DKW bound (chance failure 1e-6)."""
    n = 20000
    draws = schedule(name).sample_time(n, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (n,) and draws.dtype == torch.float32
    assert ks_statistic(draws.numpy(), REFS[name].train_cdf) < dkw_bound(n)


def test_edm_training_moments():
    """ln sigma ~ N(-1.2, 1.2^2): mean within 6 standard errors, std within 6 of its standard errors."""
    n = 20000
    log_sigma = schedule("edm").sample_time(n, generator=torch.Generator().manual_seed(3)).double().log()
    assert abs(float(log_sigma.mean()) + 1.2) < 6 * 1.2 / n**0.5
    assert abs(float(log_sigma.std()) - 1.2) < 6 * 1.2 / (2 * n) ** 0.5


def test_iddpm_training_draws_table_levels_uniformly():
    n, M = 20000, IDDPM["M"]
    draws = schedule("iddpm").sample_time(n, generator=torch.Generator().manual_seed(0))
    table = torch.tensor(U[:M], dtype=torch.float32)
    j = (draws[:, None] == table[None, :]).int().argmax(1)
    assert torch.equal(table[j], draws), "every training noise level is some u_j with j < M"
    ecdf = np.cumsum(np.bincount(j.numpy(), minlength=M)) / n
    assert np.abs(ecdf - np.arange(1, M + 1) / M).max() < dkw_bound(n)


def test_iddpm_table_satisfies_its_recurrence():
    """u_M = 0 and (u_{j-1}^2 + 1) max(abar(j-1)/abar(j), C_1) = u_j^2 + 1, checked on the library's table."""
    from diffusion_schemes_iddpm import noise_level_table

    u = noise_level_table().numpy()
    M, C_1, C_2 = IDDPM["M"], IDDPM["C_1"], IDDPM["C_2"]
    j = np.arange(M + 1)
    abar = np.sin(np.pi / 2 * j / (M * (C_2 + 1))) ** 2
    ratio = np.maximum(abar[:-1] / np.where(abar[1:] > 0, abar[1:], 1), C_1)
    np.testing.assert_allclose((u[:-1] ** 2 + 1) * ratio, u[1:] ** 2 + 1, rtol=1e-12)
    assert u[M] == 0 and np.all(np.diff(u) < 0)
    np.testing.assert_allclose(u, U, rtol=1e-13)
    assert abs(u[999] - 0.00643) < 5e-6 and abs(u[0] - 20291) < 1


@pytest.mark.parametrize("name", SCHEMES)
def test_dlog_snr_dt_matches_autograd_of_closed_form(name):
    s, ref = schedule(name), REFS[name]
    t = times(name).requires_grad_(True)
    (want,) = torch.autograd.grad(ref.log_snr(t).sum(), t)
    for training in (False, True):
        torch.testing.assert_close(s.dlog_snr_dt(t.detach(), training), want, rtol=1e-10, atol=0)
    torch.testing.assert_close(s.noise_level_derivative(t.detach()), torch.autograd.grad(ref.sigma(t).sum(), t)[0],
                               rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", SCHEMES)
def test_derivative_log_snr_is_beta(name):
    """beta(t) = d/dt log(1 + exp(-lambda(t))), by autograd of the closed form."""
    s, ref = schedule(name), REFS[name]
    t = times(name).requires_grad_(True)
    (want,) = torch.autograd.grad(torch.log1p(torch.exp(-ref.log_snr(t))).sum(), t)
    torch.testing.assert_close(s.derivative_log_snr(s.get_log_snr(t.detach())), want, rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", SCHEMES)
def test_drift_and_diffusion_from_the_forward_process(name):
    """f = (d log alpha/dt) z and g^2 = d sigma^2/dt - 2 (d log alpha/dt) sigma^2, by autograd of alpha(t), sigma(t)."""
    s, ref = schedule(name), REFS[name]
    t = times(name).requires_grad_(True)
    # (+ 0 * t keeps a constant alpha in the graph, so autograd gives its zero derivative)
    (dlog_alpha,) = torch.autograd.grad((torch.log(ref.alpha(t)) + 0 * t).sum(), t)
    sigma_f = ref.forward_sigma(t)
    (dsigma2,) = torch.autograd.grad((sigma_f**2).sum(), t)
    g2_want = dsigma2 - 2 * dlog_alpha * sigma_f.detach() ** 2
    log_snr = s.get_log_snr(t.detach())[:, None]
    x = torch.randn(len(t), 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    f, g2 = s.get_drift_diffusion(log_snr, x=x)
    torch.testing.assert_close(f, dlog_alpha[:, None] * x, rtol=1e-9, atol=1e-300)
    torch.testing.assert_close(g2[:, 0], g2_want, rtol=1e-9, atol=0)
    torch.testing.assert_close(s.get_drift_diffusion(log_snr[:, 0]), g2_want, rtol=1e-9, atol=0)
    if name != "vp":  # variance exploding: the seed's shortcut g^2 = beta would be wrong
        assert not torch.allclose(g2_want, s.derivative_log_snr(log_snr[:, 0]), rtol=1e-3)


@pytest.mark.parametrize("name", SCHEMES)
def test_inverse_round_trip(name):
    s, t = schedule(name), times(name)
    for training in (False, True):
        torch.testing.assert_close(s.get_t_from_log_snr(s.get_log_snr(t, training), training), t, rtol=RTOL, atol=0)
    lam = torch.linspace(-25, 25, 101, dtype=F64)
    if s.t_limits[1] < math.inf:  # a bounded time (VP's (0, 1]): the log-SNRs its times reach
        lam = lam[lam >= float(s.get_log_snr(torch.tensor(math.nextafter(s.t_limits[1], 0), dtype=F64)))]
    torch.testing.assert_close(s.get_log_snr(s.get_t_from_log_snr(lam)), lam, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", SCHEMES)
def test_add_noise_and_init_latents(name):
    s, ref = schedule(name), REFS[name]
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 4, generator=g, dtype=F64), torch.randn(5, 4, generator=g, dtype=F64)
    t = time_grid(name, 5)
    z = s.add_noise(x0, t, noise=eps)
    torch.testing.assert_close(z, ref.alpha(t)[:, None] * x0 + ref.forward_sigma(t)[:, None] * eps, rtol=RTOL, atol=0)
    latents = s.init_latents((4096,), generator=torch.Generator().manual_seed(0), dtype=F64)
    sigma0 = float(ref.sigma(torch.tensor(ref.timesteps(2)[0], dtype=F64)))
    assert abs(float(latents.std()) / sigma0 - 1) < 6 / (2 * 4096) ** 0.5


WEIGHTINGS = ["default", None, "sigmoid", {"name": "sigmoid", "bias": 1.0}, "likelihood_weighting", "snr"]


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("weighting", WEIGHTINGS, ids=str)
def test_config_round_trip(name, weighting):
    s = schedule(name, weighting=weighting)
    config = s.get_config()
    assert json.loads(json.dumps(config)) == config
    rebuilt = type(s).from_config(config)
    assert rebuilt == s and rebuilt.get_config() == config
    assert ds.create("noise_schedule", s.spec.model_dump()) == s
    assert s != schedule(name, weighting="edm" if weighting != "edm" else None)


def test_config_round_trip_keeps_non_default_parameters():
    for name, kw in [("edm", {"sigma_max": 40.0, "rho": 5.0}), ("ve", {"sigma_min": 0.01}),
                     ("vp", {"beta_d": 10.0, "epsilon_s": 1e-2}), ("iddpm", {"M": 500, "j0": 4})]:
        s = schedule(name, **kw)
        assert type(s).from_config(s.get_config()) == s
        assert all(s.get_config()[k] == v for k, v in kw.items())
        assert s != schedule(name)


@pytest.mark.parametrize("name", SCHEMES)
def test_validate_passes(name):
    schedule(name).validate()


def test_validate_reports_a_non_monotone_log_snr():
    from diffusion_schemes_ve import VENoiseSchedule

    class Bumpy(VENoiseSchedule):
        def get_log_snr(self, t, training=False):
            t = self._t(t, training)
            return -2 * t.log() + 0.5 * t**2  # increases for t > sqrt(2)

    with pytest.raises(ValueError, match=r"noise schedule 've' is invalid:(.|\n)*lambda\(t\) is not decreasing"):
        Bumpy().validate()


def test_validate_reports_an_inconsistent_inverse():
    from diffusion_schemes_vp import VPNoiseSchedule

    class Skewed(VPNoiseSchedule):
        def get_t_from_log_snr(self, log_snr, training=False):
            return 1.01 * super().get_t_from_log_snr(log_snr, training)

    with pytest.raises(ValueError, match=r"get_t_from_log_snr\(get_log_snr\(t\)\) differs from t"):
        Skewed().validate()


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_time_outside_domain_is_a_clear_error(name, bad):
    s = schedule(name)
    t = torch.tensor([0.5, bad])
    for call in (s.get_log_snr, s.noise_level, s.dlog_snr_dt, lambda t: s.add_noise(torch.zeros(2, 3), t)):
        with pytest.raises(ds.DomainError, match=r"diffusion time t=\[.*\] is outside \(0, (inf\)|1\])"):
            call(t)


@pytest.mark.parametrize("name", SCHEMES)
def test_nan_log_snr_is_a_clear_error(name):
    with pytest.raises(ds.DomainError, match="log_snr contains NaN"):
        schedule(name).get_t_from_log_snr(torch.tensor([0.0, float("nan")]))


@pytest.mark.parametrize(
    "config, match",
    [
        ({"name": "ve", "sigma_min": 200.0}, "sigma_min"),
        ({"name": "vp", "epsilon_t": 0.0}, "epsilon_t"),
        ({"name": "vp", "epsilon_s": 1.0}, "epsilon_s"),
        ({"name": "iddpm", "j0": 999}, "j0"),
        ({"name": "vp", "weighting": "sigmod"}, "sigmoid"),
    ],
)
def test_invalid_schedule_configs(config, match):
    with pytest.raises(ds.SchemeConfigError, match=match):
        ds.create("noise_schedule", config)


def test_validate_reports_a_wrong_closed_form_derivative():
    from diffusion_schemes_vp import VPNoiseSchedule

    class WrongSlope(VPNoiseSchedule):
        def dlog_snr_dt(self, t, training=False):
            return 1.5 * super().dlog_snr_dt(t, training)

    with pytest.raises(ValueError, match=r"dlog_snr_dt differs from autograd of get_log_snr"):
        WrongSlope().validate()


@pytest.mark.parametrize("name", SCHEMES)
def test_infinite_log_snr_is_not_nan(name):
    """The NaN check on a log-SNR (run on the device) lets the infinities of the ends through."""
    s = schedule(name)
    t = s.get_t_from_log_snr(torch.tensor([math.inf], dtype=torch.float64))
    assert not torch.isnan(t).any()


@pytest.mark.parametrize("name", SCHEMES)
def test_the_time_check_compares_bounds_exactly_in_float32(name):
    """A float32 time at the top of the domain passes; the bad value is named as given."""
    s = schedule(name)
    lo, hi = s.domain(training=True)
    s.get_log_snr(torch.tensor([lo, hi], dtype=torch.float32), training=True)
    with pytest.raises(ds.DomainError, match=r"t=\[-0.5\]"):
        s.get_log_snr(torch.tensor([hi, -0.5], dtype=torch.float32), training=True)


@pytest.mark.parametrize("sigma", [torch.ones(3), torch.ones(2, 1), torch.ones(1, 4)])
def test_init_latents_refuses_a_per_sample_sigma_of_the_wrong_shape(sigma):
    schedule = ds.create("noise_schedule", "edm")
    with pytest.raises(ds.DiffusionSchemesError, match=r"sigma must be a scalar or one value per sample \(4,\)"):
        schedule.init_latents((4, 2), sigma=sigma)
    assert schedule.init_latents((4, 2), sigma=torch.full((4,), 2.0)).shape == (4, 2)
