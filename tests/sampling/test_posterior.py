"""Posterior sampling (``ds.Posterior``) against exact posteriors.

References, written here or in ``posterior_reference`` without the library: isotropic Gaussian
data ``N(MU, S^2 I)`` measured by a linear operator with Gaussian noise have a Gaussian posterior
(and ``E[x0 | x, y]`` in closed form); DPS's estimate (Chung et al. 2023, eq. 16 with the step
size ``zeta' / ||y - A(x0_hat)||``) is evaluated from its formula with the Gaussian denoiser's
Jacobian ``S^2 / (S^2 + sigma^2) I`` written out; a Gaussian mixture's posterior is enumerated.
"""

from __future__ import annotations

import math

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes.errors import ArgumentTypeError, GuidanceError
from diffusion_schemes.conformance.mixture import ExactX0, GaussianMixture, oracle_preconditioner
from diffusion_schemes.conformance.posterior import MixturePosterior, denoised_posterior_mean, gaussian_posterior, sliced_w1

DIM = 3
MU = torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64)
S = 0.8
A = torch.tensor([[1.0, 0.5, -0.3], [0.2, -1.0, 0.7]], dtype=torch.float64)
Y = torch.tensor([[0.9, 1.6], [-0.4, 0.3]], dtype=torch.float64)  # two measurements
SCHEDULE = ds.create("noise_schedule", "edm")  # t = sigma


def gaussian_x0(x, t, condition=None):
    """The exact denoiser of N(MU, S^2 I): MU + S^2 / (S^2 + sigma^2) (x - MU)."""
    return MU + S**2 / (S**2 + t[:, None] ** 2) * (x - MU)


def linear(x):
    return x @ A.T


def bound(posterior, x0_predictor=gaussian_x0, batch_size=4):
    return posterior.bind(SCHEDULE.get_denoiser(x0_predictor=x0_predictor), batch_size, SCHEDULE)


def measurements(n):
    """Half the batch measured as Y[0], half as Y[1]."""
    return Y[torch.arange(n) % 2]


@pytest.mark.parametrize("noise_std", [0.3, 0.0])
@pytest.mark.parametrize("sigma", [0.02, 0.5, 3.0, 80.0])
def test_pigdm_denoiser_is_the_exact_posterior_mean_for_gaussian_data(sigma, noise_std):
    x = MU + (S**2 + sigma**2) ** 0.5 * torch.randn(4, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = measurements(4)
    posterior = ds.Posterior(linear, y, noise_std=noise_std, method="pigdm", data_std=S)
    got = bound(posterior).x0_sigma(x, torch.tensor(sigma, dtype=torch.float64))
    want = denoised_posterior_mean(x, sigma, MU, S, A, y, noise_std)
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)


def test_pigdm_takes_data_std_from_the_preconditioner():
    """data_std=None: the EDM preconditioner's sigma_data, here the data's own std, so the estimate is exact."""
    mixture = GaussianMixture([MU.tolist()], [S], [1.0])
    precond = oracle_preconditioner(
        lambda backbone: ds.create("preconditioner", {"name": "edm", "sigma_data": S}, model=backbone),
        mixture, lambda c: torch.exp(4 * c),
    )
    x = torch.randn(4, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2
    y = measurements(4)
    schedule = ds.create("noise_schedule", {"name": "edm", "sigma_data": S})
    denoiser = schedule.get_denoiser(x0_predictor=precond)
    got = ds.Posterior(linear, y, noise_std=0.3, method="pigdm").bind(denoiser, 4, schedule).x0_sigma(x, torch.tensor(1.5))
    torch.testing.assert_close(got, denoised_posterior_mean(x, 1.5, MU, S, A, y, 0.3), rtol=1e-8, atol=1e-8)
    assert bound(ds.Posterior(linear, y, method="pigdm")).data_std == 1.0  # no preconditioner: Song et al.'s 1


def exact_posterior_latents(n, mean, cov, sigma_max, seed):
    """Latents drawn from p(x | y) at sigma_max: N(mean, cov + sigma_max^2 I)."""
    chol = torch.linalg.cholesky(cov + sigma_max**2 * torch.eye(DIM, dtype=torch.float64))
    z = torch.randn(n, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return mean + z @ chol.T


@pytest.mark.parametrize("noise_std", [0.3, 0.0])
def test_pigdm_sampling_reproduces_the_gaussian_posterior(noise_std):
    n = 4000
    mean, cov = gaussian_posterior(MU, S**2 * torch.eye(DIM), A, Y[0], noise_std)
    latents = exact_posterior_latents(n, mean, cov, SCHEDULE.sigma_max, seed=3)
    posterior = ds.Posterior(linear, Y[:1], noise_std=noise_std, method="pigdm", data_std=S)  # batch 1: for all
    samples = ds.sample(gaussian_x0, latents, SCHEDULE, 40, guidance=posterior).samples
    # within sampling error: 5 standard errors of each mean and covariance entry
    se_mean = (cov.diagonal() / n).sqrt()
    assert ((samples.mean(0) - mean).abs() <= 5 * se_mean + 1e-6).all(), (samples.mean(0), mean)
    se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n).sqrt()
    assert ((samples.T.cov() - cov).abs() <= 5 * se_cov + 1e-6).all(), (samples.T.cov(), cov)
    if noise_std == 0:  # the measurement holds exactly
        torch.testing.assert_close(linear(samples), Y[:1].expand(n, 2), rtol=0, atol=1e-6)


def dps_formula(x, sigma, y, operator, operator_jacobian, scale):
    """Chung et al. 2023 in float64: D + sigma^2 zeta J_D^T J_A^T 2 (y - A(D)), zeta = scale / ||y - A(D)||."""
    x = x.to(torch.float64)
    d = MU + S**2 / (S**2 + sigma**2) * (x - MU)
    out = []
    for di, yi in zip(d, y):
        r = yi - operator(di[None])[0]
        zeta = scale / r.norm()
        jd = S**2 / (S**2 + sigma**2)  # J_D = jd I for Gaussian data
        out.append(di + sigma**2 * zeta * jd * operator_jacobian(di).T @ (2 * r))
    return torch.stack(out)


def tanh_operator(x):
    return torch.tanh(x @ A.T)


def tanh_jacobian(d):
    return (1 - torch.tanh(A @ d) ** 2)[:, None] * A


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("operator, jacobian", [(linear, lambda d: A), (tanh_operator, tanh_jacobian)], ids=["linear", "tanh"])
def test_dps_denoiser_equals_its_formula(operator, jacobian, dtype):
    x = (torch.randn(4, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 1.5).to(dtype)
    y = measurements(4)

    def op(v):
        return operator(v.to(torch.float64)).to(v.dtype)

    for sigma in (0.05, 1.0, 20.0):
        got = bound(ds.Posterior(op, y.to(dtype), noise_std=0.1, scale=0.7)).x0_sigma(x, torch.tensor(sigma, dtype=dtype))
        want = dps_formula(x, sigma, y, operator, jacobian, 0.7)
        tol = 1e-10 if dtype == torch.float64 else 2e-5
        torch.testing.assert_close(got.to(torch.float64), want, rtol=tol, atol=tol)


def test_dps_sampling_equals_an_independent_euler_loop():
    """The whole path: Euler in sigma over the EDM grid with D from the formula, in float64, outside the library."""
    n, steps, scale = 6, 12, 0.4
    latents = SCHEDULE.init_latents((n, DIM), generator=torch.Generator().manual_seed(5)).to(torch.float64)
    y = measurements(n)
    got = ds.sample(gaussian_x0, latents, SCHEDULE, steps, solver="euler",
                    guidance=ds.Posterior(linear, y, scale=scale))
    sigmas = SCHEDULE.sigmas(steps).to(torch.float64)
    x = latents.clone()
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        d = dps_formula(x, sigma, y, linear, lambda v: A, scale)
        x = x + (sigma_next - sigma) * (x - d) / sigma
    torch.testing.assert_close(got.samples, x, rtol=1e-9, atol=1e-9)
    assert got.nfe == 2 * steps  # a forward and a backward pass per evaluation


def test_a_batch_one_measurement_equals_it_repeated_and_measurements_are_per_sample():
    latents = SCHEDULE.init_latents((4, DIM), generator=torch.Generator().manual_seed(6)).to(torch.float64)
    for method, extra in (("dps", {}), ("pigdm", {"data_std": S})):
        one = ds.sample(gaussian_x0, latents, SCHEDULE, 8, guidance=ds.Posterior(linear, Y[:1], 0.2, method, **extra))
        rep = ds.sample(gaussian_x0, latents, SCHEDULE, 8, guidance=ds.Posterior(linear, Y[:1].expand(4, 2), 0.2, method, **extra))
        torch.testing.assert_close(one.samples, rep.samples, rtol=0, atol=0)
        both = ds.sample(gaussian_x0, latents, SCHEDULE, 8, guidance=ds.Posterior(linear, measurements(4), 0.2, method, **extra))
        torch.testing.assert_close(both.samples[::2], one.samples[::2], rtol=0, atol=0)  # rows measured as Y[0]
        assert not torch.allclose(both.samples[1::2], one.samples[1::2])


SOLVERS = [info.name for info in ds.list_schemes("solver")]


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_samples_the_posterior_and_counts_the_backward_passes(solver):
    n, noise_std = 512, 0.3
    mean, cov = gaussian_posterior(MU, S**2 * torch.eye(DIM), A, Y[0], noise_std)
    latents = exact_posterior_latents(n, mean, cov, SCHEDULE.sigma_max, seed=7)
    posterior = ds.Posterior(linear, Y[:1], noise_std=noise_std, method="pigdm", data_std=S)
    plain = ds.sample(gaussian_x0, latents, SCHEDULE, 24, solver=solver, generator=torch.Generator().manual_seed(0))
    guided = ds.sample(gaussian_x0, latents, SCHEDULE, 24, solver=solver, guidance=posterior,
                       generator=torch.Generator().manual_seed(0))
    assert guided.nfe == 2 * plain.nfe or (solver == "dpm_adaptive" and guided.nfe % 2 == 0)
    assert torch.isfinite(guided.samples).all()
    # the posterior mean, within 5 standard errors plus the discretisation error of 24 steps
    error = (guided.samples.mean(0) - mean).abs()
    assert (error <= 5 * (cov.diagonal() / n).sqrt() + 0.05).all(), (solver, guided.samples.mean(0), mean)
    assert (plain.samples.mean(0) - mean).abs().max() > 0.3  # the prior's mean is far: the guidance did the work


def class_x0(x, t, condition=None):
    """Gaussian data N(c MU, S^2 I) per class c (a scalar per sample); no condition: N(0, S^2 I)."""
    centre = torch.zeros_like(MU) if condition is None else condition[:, None] * MU
    return centre + S**2 / (S**2 + t[:, None] ** 2) * (x - centre)


def test_classifier_free_guidance_then_posterior_is_the_posterior_of_the_guided_prior():
    """For Gaussian classes D_null + w (D_cond - D_null) is the denoiser of N(w c MU, S^2 I): PiGDM stays exact."""
    n, w = 8, 2.5
    latents = SCHEDULE.init_latents((n, DIM), generator=torch.Generator().manual_seed(8)).to(torch.float64)
    labels = torch.tensor([1.0, -1.0] * (n // 2), dtype=torch.float64)
    posterior = ds.Posterior(linear, measurements(n), noise_std=0.2, method="pigdm", data_std=S)
    got = ds.sample(class_x0, latents, SCHEDULE, 10, condition=labels, guidance=(ds.Guidance(w), posterior))

    def shifted_prior(x, t):
        centre = w * labels[: len(x), None] * MU
        return centre + S**2 / (S**2 + t[:, None] ** 2) * (x - centre)

    want = ds.sample(shifted_prior, latents, SCHEDULE, 10, guidance=posterior)
    torch.testing.assert_close(got.samples, want.samples, rtol=1e-9, atol=1e-9)
    assert got.nfe == 4 * 19 and want.nfe == 2 * 19  # two branches, each forward and backward
    x = latents[:2] / 40
    d = bound(ds.Posterior(linear, measurements(2), noise_std=0.2, method="pigdm", data_std=S),
              x0_predictor=shifted_prior, batch_size=2).x0_sigma(x, torch.tensor(0.7, dtype=torch.float64))
    centre = w * labels[:2, None] * MU
    exact = torch.stack([denoised_posterior_mean(x[i:i + 1], 0.7, centre[i], S, A, measurements(2)[i:i + 1], 0.2)[0]
                         for i in range(2)])
    torch.testing.assert_close(d, exact, rtol=1e-8, atol=1e-8)


def test_mixture_posterior_methods_move_toward_the_enumerated_posterior():
    """Gaussian-mixture data, the first coordinate measured: the posterior, enumerated, has two unequal modes."""
    mixture = GaussianMixture([[-1.0, 1.0], [1.0, -1.0], [1.2, 1.0]], [0.3, 0.3, 0.3], [0.5, 0.3, 0.2])
    a = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    y, noise_std, n = torch.tensor([1.1], dtype=torch.float64), 0.2, 2000
    exact = MixturePosterior(mixture, a, y, noise_std)
    assert exact.weights[0] < 1e-3 and exact.weights[1:].min() > 0.2  # the measurement rules out the first mode
    reference = exact.sample(n, torch.Generator().manual_seed(9))
    floor = sliced_w1(exact.sample(n, torch.Generator().manual_seed(10)), reference, generator=torch.Generator().manual_seed(0))
    latents = SCHEDULE.init_latents((n, 2), generator=torch.Generator().manual_seed(11)).to(torch.float64)
    prior = ExactX0(mixture, SCHEDULE)
    unguided = ds.sample(prior, latents, SCHEDULE, 32).samples
    prior_error = sliced_w1(unguided, reference, generator=torch.Generator().manual_seed(0))
    std = float(mixture.sample(20000, torch.Generator().manual_seed(12)).std())
    for posterior in (ds.Posterior(lambda x: x @ a.T, y[None], noise_std, "pigdm", data_std=std),
                      ds.Posterior(lambda x: x @ a.T, y[None], noise_std, "dps", scale=1.0)):
        samples = ds.sample(prior, latents, SCHEDULE, 32, guidance=posterior).samples
        error = sliced_w1(samples, reference, generator=torch.Generator().manual_seed(0))
        assert floor < error < prior_error / 2, (posterior.method, floor, error, prior_error)
        assert exact.nearest_weights(samples)[0] < 0.05  # almost nothing left in the excluded mode


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"measurement": torch.tensor([[float("nan")]])}, GuidanceError, "measurement holds NaN"),
        ({"noise_std": -0.1}, GuidanceError, "noise_std must be finite and >= 0"),
        ({"noise_std": float("nan")}, GuidanceError, "noise_std must be finite"),
        ({"method": "ddrm"}, GuidanceError, r"method must be one of \('dps', 'pigdm'\)"),
        ({"scale": -1.0}, GuidanceError, "scale must be finite and >= 0"),
        ({"data_std": 1.0}, GuidanceError, "data_std sets PiGDM"),
        ({"method": "pigdm", "data_std": 0.0}, GuidanceError, "data_std must be > 0"),
        ({"operator": "A"}, ArgumentTypeError, "operator must be a callable"),
        ({"measurement": torch.tensor([1, 2])}, ArgumentTypeError, "floating-point"),
        ({"method": "pigdm", "cg_iterations": 0}, GuidanceError, "cg_iterations"),
    ],
)
def test_bad_arguments_raise_errors_naming_them(kwargs, error, match):
    arguments = {"operator": linear, "measurement": Y, **kwargs}
    with pytest.raises(error, match=match):
        ds.Posterior(**arguments)
    assert issubclass(error, ds.DiffusionSchemesError)


def test_mismatched_measurements_and_orders_are_refused():
    latents = SCHEDULE.init_latents((4, DIM), generator=torch.Generator().manual_seed(13)).to(torch.float64)
    with pytest.raises(GuidanceError, match="measurement has batch size 2 .* latents have 4"):
        ds.sample(gaussian_x0, latents, SCHEDULE, 4, guidance=ds.Posterior(linear, Y))
    with pytest.raises(GuidanceError, match=r"operator returns shape \(4, 2\) but the measurement has shape \(4, 3\)"):
        ds.sample(gaussian_x0, latents, SCHEDULE, 4, guidance=ds.Posterior(linear, torch.zeros(4, 3)))
    with pytest.raises(GuidanceError, match="must come first"):
        ds.sample(class_x0, latents, SCHEDULE, 4, condition=torch.ones(4),
                  guidance=(ds.Posterior(linear, measurements(4)), ds.Guidance(2.0)))


def test_sampling_outside_no_grad_leaves_no_gradients_on_the_model():
    net = torch.nn.Linear(DIM, DIM).double()

    def model(x, t, condition=None):
        return net(x) / (1 + t[:, None] ** 2)

    latents = SCHEDULE.init_latents((4, DIM), generator=torch.Generator().manual_seed(14)).to(torch.float64)
    out = ds.sample(model, latents, SCHEDULE, 4, guidance=ds.Posterior(linear, measurements(4), method="pigdm"))
    assert not out.samples.requires_grad and all(p.grad is None for p in net.parameters())
    assert math.isfinite(float(out.samples.sum()))
