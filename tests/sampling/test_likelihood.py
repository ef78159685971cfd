"""``ds.log_likelihood`` against closed forms: a Gaussian mixture's own density, Gaussian grid cells, autograd.

For a mixture ``sum_k w_k N(mu_k, s_k^2 I)`` the noisy marginal is ``p(x; sigma) = sum_k w_k N(x; mu_k,
(s_k^2 + sigma^2) I)`` and the exact denoiser is known (``diffusion_schemes.conformance.mixture``), so the ODE must give
back ``log p(x; sigma_min)``: what is left is the integrator's error and the prior's, ``log p(.; sigma_max)``
against ``log N(0, sigma_max^2 I)``, which falls like ``1 / sigma_max^2`` (the mixture here has mean 0).
k-diffusion's ``log_likelihood`` (torchdiffeq's dopri5 in sigma, one Rademacher probe) is a second oracle: in
one dimension a Rademacher probe gives the trace exactly, and in two the same probe can be drawn for both.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
from diffusion_schemes.conformance.mixture import ClassConditionalMixture, ExactX0, GaussianMixture, oracle_preconditioner
from benchmarks.kdiffusion_oracle import load_sampling

import diffusion_schemes as ds
from diffusion_schemes.sampling import likelihood as _likelihood

F64 = torch.float64
MIX = GaussianMixture([[-1.0, 0.0], [1.0, 1.0], [1.0, -1.0]], [0.2, 0.4, 0.3], [0.5, 0.25, 0.25])
#: Twelve draws of the mixture and two points off its support (one between modes, one far out).
POINTS = torch.cat([MIX.sample(12, generator=torch.Generator().manual_seed(0)),
                    torch.tensor([[0.0, 0.0], [3.0, -2.5]], dtype=F64)])
MIX_1D = GaussianMixture([[-1.0], [0.8]], [0.3, 0.5], [0.3, 0.7])
EDM_SIGMA_MIN = 0.002


def mixture_log_density(mixture: GaussianMixture, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``log sum_k w_k N(x; mu_k, (s_k^2 + sigma^2) I)`` in float64 (the data convolved with N(0, sigma^2 I))."""
    var = mixture.stds**2 + sigma**2  # (K,)
    sq = ((x[:, None, :] - mixture.means[None]) ** 2).sum(-1)  # (B, K)
    log_normal = -0.5 * sq / var - 0.5 * mixture.dim * torch.log(2 * math.pi * var)
    return torch.logsumexp(mixture.weights.log() + log_normal, dim=1)


def gaussian_prior(latents: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """``log N(latents; 0, sigma_max^2 I)``, what log_likelihood puts at sigma_max."""
    return torch.distributions.Normal(0.0, sigma_max).log_prob(latents).flatten(1).sum(1)


def exact_x0(schedule_name: str, mixture: GaussianMixture = MIX) -> tuple[ExactX0, object]:
    schedule = ds.create("noise_schedule", schedule_name)
    return ExactX0(mixture, schedule).double(), schedule


def must_not_be_called(x, t, condition=None):
    raise AssertionError("the model was called although the arguments were invalid")


# ---------------------------------------------------------------------- the mixture oracle, EDM and VP time
@pytest.mark.slow
def test_edm_time_gives_the_mixture_density_adaptively():
    model, schedule = exact_x0("edm")
    result = ds.log_likelihood(model, POINTS, schedule, sigma_max=1000.0, rtol=1e-7, atol=1e-7)
    error = (result.log_prob - mixture_log_density(MIX, POINTS, EDM_SIGMA_MIN)).abs().max()
    assert error < 1e-4, error
    assert result.log_prob.shape == (POINTS.shape[0],) and result.dim == 2


def test_edm_time_gives_the_mixture_density_with_fixed_steps():
    model, schedule = exact_x0("edm")
    result = ds.log_likelihood(model, POINTS, schedule, sigma_max=1000.0, num_steps=200)
    assert (result.log_prob - mixture_log_density(MIX, POINTS, EDM_SIGMA_MIN)).abs().max() < 1e-4
    assert result.nfe == 800  # four calls a Runge-Kutta step


@pytest.mark.slow
def test_vp_time_gives_the_mixture_density():
    """VP's time ends at sigma(1) = 152, so sigma_max cannot be made large: the integrated part is checked to
    1e-4 with the exact p(.; sigma_max) in place of the Gaussian prior (the prior's own share is the next test's)."""
    model, schedule = exact_x0("vp")
    sigma_min, sigma_max = (float(s) for s in schedule.sigmas(2)[[1, 0]])
    result = ds.log_likelihood(model, POINTS, schedule, rtol=1e-7, atol=1e-7)
    target = mixture_log_density(MIX, POINTS, sigma_min)
    swapped = result.log_prob - gaussian_prior(result.latents, sigma_max) + mixture_log_density(
        MIX, result.latents, sigma_max)
    assert (swapped - target).abs().max() < 1e-4
    # on the twelve draws of the data the Gaussian prior at VP's own sigma_max already costs less than 1e-4
    # (the far point's latent lies ten sigma_max out, where the two priors part)
    assert (result.log_prob - target)[:12].abs().max() < 1e-4


def test_the_prior_mismatch_falls_like_one_over_sigma_max_squared():
    model, schedule = exact_x0("edm")
    target = mixture_log_density(MIX, POINTS, EDM_SIGMA_MIN)
    errors = [ds.log_likelihood(model, POINTS, schedule, sigma_max=s, num_steps=150).log_prob - target
              for s in (40.0, 80.0)]
    ratio = errors[0].abs().mean() / errors[1].abs().mean()
    assert 3.6 < ratio < 4.4, ratio  # 4 up to the 1 / sigma_max^4 term and the integrators' 1e-5


@pytest.mark.parametrize("precond, schedule_name", [("edm", "vp"), ("vp", "edm")])
def test_a_preconditioner_runs_through_the_noise_level_like_in_sample(precond, schedule_name):
    """What ds.sample takes: a preconditioner meets any schedule at the noise level (same D, same density)."""
    beta_d, beta_min, m = 19.9, 0.1, 1000
    if precond == "edm":
        model = oracle_preconditioner(lambda b: ds.create("preconditioner", "edm", model=b), MIX,
                                      lambda c: torch.exp(4 * c))
    else:
        model = oracle_preconditioner(
            lambda b: ds.create("preconditioner", {"name": "vp", "beta_d": beta_d, "beta_min": beta_min, "M": m},
                                model=b),
            MIX, lambda c: torch.sqrt(torch.exp(0.5 * beta_d * (c / (m - 1)) ** 2 + beta_min * c / (m - 1)) - 1))
    reference, schedule = exact_x0(schedule_name)
    kwargs = {"sigma_min": 0.02, "sigma_max": 100.0, "num_steps": 20}
    ours = ds.log_likelihood(model, POINTS, schedule, **kwargs)
    exact = ds.log_likelihood(reference, POINTS, schedule, **kwargs)
    torch.testing.assert_close(ours.log_prob, exact.log_prob, rtol=0, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", [info.name for info in ds.list_schemes("noise_schedule")])
def test_every_installed_schedule_gives_the_density_at_its_own_range(name):
    """Defaults: sigma_min and sigma_max are the first and last level of the schedule's grid; the predictor
    speaks the schedule's time."""
    model, schedule = exact_x0(name)
    sigma_max, sigma_min = (float(s) for s in schedule.sigmas(2)[:2])
    seen = []
    result = ds.log_likelihood(model, POINTS, schedule, num_steps=300, callback=lambda info: seen.append(info["sigma"]))
    assert math.isclose(min(float(s.min()) for s in seen), sigma_min, rel_tol=1e-12)
    assert math.isclose(max(float(s.max()) for s in seen), sigma_max, rel_tol=1e-12)
    swapped = result.log_prob - gaussian_prior(result.latents, sigma_max) + mixture_log_density(
        MIX, result.latents, sigma_max)
    assert (swapped - mixture_log_density(MIX, POINTS, sigma_min)).abs().max() < 1e-4


# ---------------------------------------------------------------------- conditions
def test_a_condition_gives_the_class_density():
    classes = ClassConditionalMixture([0.5, 0.5], [GaussianMixture([[-1.0, 0.5]], [0.3], [1.0]),
                                                   GaussianMixture([[1.0, 0.0], [0.5, -1.0]], [0.4, 0.2], [0.6, 0.4])])
    schedule = ds.create("noise_schedule", "edm")
    model = ExactX0(classes, schedule).double()
    label = torch.tensor([0, 1, 1, 0, 1])
    condition = torch.nn.functional.one_hot(label, 2).to(F64)
    x = POINTS[:5]
    result = ds.log_likelihood(model, x, schedule, condition=condition, sigma_max=1000.0, num_steps=200)
    # a class's mean is not 0, so its off-class points (latents 5 sigma_max out) see the Gaussian prior's error at
    # first order; the class's exact p(.; sigma_max) takes its place
    exact_prior = torch.stack([mixture_log_density(classes.classes[int(k)], result.latents[i:i + 1], 1000.0)[0]
                               for i, k in enumerate(label)])
    swapped = result.log_prob - gaussian_prior(result.latents, 1000.0) + exact_prior
    target = torch.stack([mixture_log_density(classes.classes[int(k)], x[i:i + 1], EDM_SIGMA_MIN)[0]
                          for i, k in enumerate(label)])
    assert (swapped - target).abs().max() < 1e-4
    bound = schedule.get_denoiser(x0_predictor=model, condition=condition)
    again = ds.log_likelihood(bound, x, schedule, sigma_max=1000.0, num_steps=200)
    torch.testing.assert_close(again.log_prob, result.log_prob, rtol=0, atol=0)
    with pytest.raises(ds.ConditionError, match="give it in one place"):
        ds.log_likelihood(bound, x, schedule, condition=condition, num_steps=2)
    with pytest.raises(ds.ConditionError, match="batch size"):
        ds.log_likelihood(model, x, schedule, condition=condition[:3], num_steps=2)


# ---------------------------------------------------------------------- batch invariance
def test_fixed_steps_make_the_same_calls_for_any_batch():
    model, schedule = exact_x0("edm")
    batch = ds.log_likelihood(model, POINTS, schedule, num_steps=5)
    for i in (0, 13):
        alone = ds.log_likelihood(model, POINTS[i:i + 1], schedule, num_steps=5)
        assert alone.nfe == batch.nfe == 20
        assert abs(float(alone.log_prob[0] - batch.log_prob[i])) < 1e-12


@pytest.mark.slow
def test_adaptive_steps_make_a_sample_independent_of_its_batch():
    model, schedule = exact_x0("edm")
    picked = POINTS[[0, 5, 12, 13]]  # two draws, the point between modes and the far one
    batch = ds.log_likelihood(model, picked, schedule, sigma_max=1000.0)
    alone = torch.cat([ds.log_likelihood(model, picked[i:i + 1], schedule, sigma_max=1000.0).log_prob
                       for i in range(picked.shape[0])])
    assert (alone - batch.log_prob).abs().max() < 1e-6


@pytest.mark.slow
def test_the_batch_check_catches_a_shared_step_size():
    """The same check fails for k-diffusion's log_likelihood (torchdiffeq's one step size for the batch), so
    passing it above means something (1-D: its Rademacher probe is exact, the result deterministic)."""
    sampling = load_sampling()
    x = torch.tensor([[0.1], [2.5], [-3.0]], dtype=F64)
    model = lambda x, sigma: MIX_1D.denoise(x, sigma)  # noqa: E731
    batch = sampling.log_likelihood(model, x, EDM_SIGMA_MIN, 80.0)[0]
    alone = torch.cat([sampling.log_likelihood(model, x[i:i + 1], EDM_SIGMA_MIN, 80.0)[0] for i in range(3)])
    assert (alone - batch).abs().max() > 1e-6


# ---------------------------------------------------------------------- k-diffusion as a second oracle
@pytest.mark.slow
def test_kdiffusion_agrees_in_one_dimension_where_its_probe_is_exact():
    sampling = load_sampling()
    x = MIX_1D.sample(6, generator=torch.Generator().manual_seed(1))
    theirs = sampling.log_likelihood(lambda x, s: MIX_1D.denoise(x, s), x, EDM_SIGMA_MIN, 80.0, atol=1e-8,
                                     rtol=1e-8)[0]
    model, schedule = exact_x0("edm", MIX_1D)
    ours = ds.log_likelihood(model, x, schedule, rtol=1e-8, atol=1e-8).log_prob
    assert (ours - theirs).abs().max() < 1e-5
    assert (ours - mixture_log_density(MIX_1D, x, EDM_SIGMA_MIN)).abs().max() < 1e-2  # sigma_max = 80: the prior


@pytest.mark.slow
def test_kdiffusion_agrees_with_hutchinson_on_the_same_probe():
    sampling = load_sampling()
    x = POINTS[:6]
    torch.manual_seed(7)  # k-diffusion draws its probe from the global generator: randint_like(x, 2) * 2 - 1
    theirs = sampling.log_likelihood(lambda x, s: MIX.denoise(x, s), x, EDM_SIGMA_MIN, 80.0, atol=1e-8,
                                     rtol=1e-8)[0]
    model, schedule = exact_x0("edm")
    ours = ds.log_likelihood(model, x, schedule, divergence="hutchinson", generator=torch.Generator().manual_seed(7),
                             rtol=1e-8, atol=1e-8).log_prob
    exact = ds.log_likelihood(model, x, schedule, rtol=1e-8, atol=1e-8).log_prob
    assert (ours - theirs).abs().max() < 1e-5
    assert (ours - exact).abs().max() > 1e-3  # the probe was not exact: the agreement is the probe's, not luck


# ---------------------------------------------------------------------- Hutchinson
REPLICAS = 2000
#: Points where the integrated Jacobian has off-diagonal terms (between modes), so Rademacher probes do spread
#: (for an isotropic Jacobian they would give the trace exactly).
HUTCHINSON_POINTS = POINTS[[3, 4, 12]]


def replicated_hutchinson(num_probes: int, probe: str = "rademacher", seed: int = 0) -> torch.Tensor:
    """``(REPLICAS, 3)`` estimates for three points: each replica its own probes (a batch of copies, which is
    legitimate because a sample's result does not depend on its batch)."""
    model, schedule = exact_x0("edm")
    x = HUTCHINSON_POINTS.repeat(REPLICAS, 1)
    result = ds.log_likelihood(model, x, schedule, sigma_max=100.0, num_steps=4, divergence="hutchinson",
                               num_probes=num_probes, probe=probe, generator=torch.Generator().manual_seed(seed))
    return result.log_prob.reshape(REPLICAS, 3)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe):
    """Fixed steps keep the path independent of the probe, so the mean equals the exact trace's result."""
    model, schedule = exact_x0("edm")
    exact = ds.log_likelihood(model, HUTCHINSON_POINTS, schedule, sigma_max=100.0, num_steps=4).log_prob
    estimates = replicated_hutchinson(1, probe)
    standard_error = estimates.std(0) / math.sqrt(REPLICAS)
    assert bool((standard_error > 1e-3).all())  # the estimator does spread
    assert ((estimates.mean(0) - exact).abs() / standard_error).max() < 4


def test_hutchinson_spread_falls_like_one_over_sqrt_probes():
    """The mean of K independent probes: standard deviation / sqrt(K). With 2000 replicas each standard deviation
    is known to about 2% (more with heavy tails), so the ratios are checked to 12%."""
    spreads = {k: replicated_hutchinson(k, seed=k).std(0) for k in (1, 4, 16)}
    for k in (4, 16):
        ratio = spreads[1] / spreads[k]
        assert ((ratio / math.sqrt(k) - 1).abs() < 0.12).all(), (k, ratio)


def test_hutchinson_probes_come_from_the_generator():
    model, schedule = exact_x0("edm")
    run = lambda seed: ds.log_likelihood(  # noqa: E731
        model, POINTS[:4], schedule, num_steps=3, divergence="hutchinson", num_probes=2,
        generator=torch.Generator().manual_seed(seed)).log_prob
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


# ---------------------------------------------------------------------- the exact trace
class _NumpyDouble(torch.autograd.Function):
    """2x whose backward leaves torch (through numpy): vmap cannot batch it."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        return torch.from_numpy(grad.detach().numpy() * 2)


@pytest.mark.parametrize("chunk_elements", [1, 60, 1 << 24])  # chunks of 1, of 2 (2 + 2 + 1), of all 5
@pytest.mark.parametrize("numpy_backward", [False, True])
def test_exact_trace_matches_the_autograd_jacobian(monkeypatch, chunk_elements, numpy_backward):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5)).double()
    model = (lambda x: net(_NumpyDouble.apply(x))) if numpy_backward else net
    x = torch.randn(6, 5, dtype=F64)
    monkeypatch.setattr(_likelihood, "_TRACE_CHUNK_ELEMENTS", chunk_elements)
    schedule = ds.create("noise_schedule", "edm")
    field = _likelihood._Field(schedule.get_denoiser(x0_predictor=lambda x, t: model(x)), x, True, None, None)
    _, divergence = field(x, torch.full((6,), 1.0, dtype=F64))
    jacobians = [torch.autograd.functional.jacobian(model, x[i]) for i in range(6)]
    expected = torch.stack([5 - torch.trace(j) for j in jacobians])
    torch.testing.assert_close(divergence, expected, rtol=0, atol=1e-12)
    assert field.batched is (not numpy_backward or chunk_elements == 1)  # chunks of one need no vmap


# ---------------------------------------------------------------------- results
def test_bits_per_dim_is_the_probability_of_a_grid_cell():
    """For data N(0, s^2 I) a cell of width w around x has probability prod_d [Phi((x_d + w/2)/s') -
    Phi((x_d - w/2)/s')], s'^2 = s^2 + sigma_min^2; minus its log2 per dimension is bits/dim up to O(w^2)."""
    s, sigma_min, width = 0.5, 1e-3, 1 / 256
    schedule = ds.create("noise_schedule", "edm")
    model = lambda x, t: s**2 / (s**2 + t[:, None] ** 2) * x  # noqa: E731  the exact denoiser of N(0, s^2 I)
    x = torch.tensor([[0.1, -0.3], [0.7, 0.0], [-1.1, 0.4]], dtype=F64)
    result = ds.log_likelihood(model, x, schedule, sigma_min=sigma_min, sigma_max=2000.0, num_steps=200)
    normal = torch.distributions.Normal(0.0, math.sqrt(s**2 + sigma_min**2))
    cell = normal.cdf(x + width / 2) - normal.cdf(x - width / 2)
    expected = -cell.log2().sum(1) / 2
    assert (result.bits_per_dim(width) - expected).abs().max() < 1e-4


def test_nfe_counts_model_calls_and_callback_sees_each():
    model, schedule = exact_x0("edm")
    calls, seen = [], []

    def counting(x, t):
        calls.append(x.shape[0])
        return model(x, t)

    result = ds.log_likelihood(counting, POINTS[:3], schedule, callback=seen.append)
    assert result.nfe == len(calls) == len(seen) > 10
    assert set(calls) == {3}  # every call on the whole batch
    assert [info["nfe"] for info in seen] == list(range(1, result.nfe + 1))
    sigmas = torch.stack([info["sigma"] for info in seen])
    assert sigmas.min() >= EDM_SIGMA_MIN * (1 - 1e-12) and sigmas.max() <= 80 * (1 + 1e-12)


# ---------------------------------------------------------------------- bad input
X = POINTS[:2]
NAN = X.clone()
NAN[0, 1] = float("nan")
INF = X.clone()
INF[1, 0] = float("inf")


@pytest.mark.parametrize("kwargs, named", [
    ({"x": NAN}, "x holds NaN"),
    ({"x": INF}, "x holds NaN or infinite"),
    ({"x": torch.ones(2, 2, dtype=torch.long)}, "x must be a floating-point"),
    ({"x": torch.ones(3)}, "x must be a non-empty batch"),
    ({"sigma_min": 1.0, "sigma_max": 1.0}, "sigma_min must be below sigma_max"),
    ({"sigma_min": 5.0, "sigma_max": 1.0}, "sigma_min must be below sigma_max"),
    ({"sigma_min": -1.0}, "sigma_min must be a positive finite"),
    ({"sigma_max": float("inf")}, "sigma_max must be a positive finite"),
    ({"sigma_max": "80"}, "sigma_max must be a positive number"),
    ({"divergence": "trace"}, "divergence must be one of"),
    ({"num_probes": 0}, "num_probes must be an int >= 1"),
    ({"num_probes": 1.5}, "num_probes must be an int >= 1"),
    ({"probe": "uniform"}, "probe must be one of"),
    ({"num_steps": 0}, "num_steps must be None"),
    ({"rtol": 0.0}, "rtol must be a positive finite"),
    ({"atol": float("nan")}, "atol must be a positive finite"),
])
def test_bad_input_names_the_argument_before_any_model_call(kwargs, named):
    schedule = ds.create("noise_schedule", "edm")
    kwargs = {"x": X, **kwargs}
    with pytest.raises(ds.DiffusionSchemesError, match=named):
        ds.log_likelihood(must_not_be_called, kwargs.pop("x"), schedule, **kwargs)


def test_inference_mode_is_refused_with_what_to_do():
    schedule = ds.create("noise_schedule", "edm")
    with torch.inference_mode(), pytest.raises(ds.DiffusionSchemesError, match="outside torch.inference_mode"):
        ds.log_likelihood(must_not_be_called, X, schedule, num_steps=2)


def test_without_torchode_the_error_names_the_extra_and_fixed_steps_still_work(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchode", None)  # import torchode raises ImportError
    model, schedule = exact_x0("edm")
    with pytest.raises(ds.DiffusionSchemesError, match=r"diffusion-schemes\[likelihood\].*num_steps="):
        ds.log_likelihood(model, X, schedule)
    assert ds.log_likelihood(model, X, schedule, num_steps=2).nfe == 8


def test_a_model_that_returns_nan_stops_the_adaptive_integrator_with_a_clear_error():
    schedule = ds.create("noise_schedule", "edm")
    with pytest.raises(ds.DiffusionSchemesError, match="stopped early for 2 of 2 samples"):
        ds.log_likelihood(lambda x, t: x * float("nan"), X, schedule)
