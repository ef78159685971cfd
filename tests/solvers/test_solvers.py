"""Solvers against an independent EDM Algorithm 1 and against the data distribution (exact mixture denoiser)."""

from __future__ import annotations

import math

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes.errors import SamplingError
from diffusion_schemes.conformance.mixture import GaussianMixture

MIX_1D = GaussianMixture([-1.0, 1.5], [0.3, 0.5], [0.3, 0.7])
MIX_2D = GaussianMixture([[-1.0, 0.0], [1.0, 1.0], [1.0, -1.0]], [0.2, 0.4, 0.3], [0.5, 0.25, 0.25])


def edm_algorithm_1(denoise, x, num_steps, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """Karras et al. 2022, Algorithm 1 with the time steps of eq. 5, written out in float64."""
    steps = []
    for i in range(num_steps):
        ramp = sigma_max ** (1 / rho) + i / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
        steps.append(ramp**rho)
    steps.append(0.0)
    evaluations = 0
    for i in range(num_steps):
        t_cur, t_next = steps[i], steps[i + 1]
        d_cur = (x - denoise(x, t_cur)) / t_cur
        evaluations += 1
        x_next = x + (t_next - t_cur) * d_cur
        if t_next != 0:
            d_prime = (x_next - denoise(x_next, t_next)) / t_next
            evaluations += 1
            x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
        x = x_next
    return x, evaluations


def test_heun_on_edm_schedule_is_edm_algorithm_1():
    schedule = ds.create("noise_schedule", "edm")
    latents = schedule.init_latents((256, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected, evaluations = edm_algorithm_1(MIX_2D.denoise, latents.clone(), 18)
    denoiser = schedule.get_denoiser(x0_predictor=lambda x, t: MIX_2D.denoise(x, t))  # EDM: t = sigma
    result = ds.sample(denoiser, latents, schedule, num_steps=18, solver="heun")
    assert (result.nfe, evaluations) == (35, 35)
    assert torch.allclose(result.samples, expected, rtol=0, atol=1e-5)
    assert float((result.samples - expected).abs().max()) < 1e-10  # float64 throughout: same arithmetic


def _quantile_latents(n, sigma_max):
    """Quantiles of the noisy data at sigma_max (the mixture with variances s_k^2 + sigma_max^2).

    The 1-D probability-flow map is monotone, so the outputs are the quantiles of what the
    solver samples: no sampling noise, and no prior mismatch at sigma_max.
    """
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    noisy = GaussianMixture(MIX_1D.means, (MIX_1D.stds**2 + sigma_max**2).sqrt(), MIX_1D.weights)
    return noisy.quantile(u)[:, None]


DETERMINISTIC = ["euler", "heun", "dpmpp_2m"]
STOCHASTIC = [
    "euler_maruyama",
    {"name": "edm_stochastic_euler", "S_churn": 10.0},
    {"name": "edm_stochastic_heun", "S_churn": 10.0},
]


@pytest.mark.parametrize("solver", DETERMINISTIC)
def test_deterministic_solvers_converge(solver):
    schedule = ds.create("noise_schedule", "edm")
    latents = _quantile_latents(2000, schedule.sigma_max)
    errors, nfes = [], []
    for n in (4, 8, 16, 32, 64):
        result = ds.sample(lambda x, t: MIX_1D.denoise(x, t), latents, schedule, n, solver=solver)
        errors.append(MIX_1D.wasserstein1(result.samples))
        nfes.append(result.nfe)
    assert nfes == sorted(nfes)
    # strictly better with more evaluations, at the solver's order once in the asymptotic range
    # (measured: euler 0.55 -> 0.031, ratio 2.0; heun 3.0 -> 0.0088, 4.8; dpmpp_2m 0.34 -> 0.0025, 4.5)
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    order = ds.create("solver", solver).order
    assert errors[-2] / errors[-1] > 0.8 * 2**order, errors
    assert errors[-1] < 0.05, errors


@pytest.mark.parametrize("solver", STOCHASTIC, ids=lambda s: s if isinstance(s, str) else s["name"])
def test_stochastic_solvers_converge(solver):
    schedule = ds.create("noise_schedule", "edm")
    errors = []
    for n in (8, 32, 128):
        g = torch.Generator().manual_seed(0)
        latents = schedule.init_latents((4000, 1), generator=g, dtype=torch.float64)
        result = ds.sample(lambda x, t: MIX_1D.denoise(x, t), latents, schedule, n, solver=solver, generator=g)
        errors.append(MIX_1D.wasserstein1(result.samples))
    noise = 0.03  # W1 of 4000 draws from the mixture itself is about 0.01-0.02
    assert all(b < a + noise for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.05, errors


def test_stochastic_solvers_use_the_generator():
    schedule = ds.create("noise_schedule", "edm")
    latents = schedule.init_latents((8, 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    run = lambda seed: ds.sample(  # noqa: E731
        lambda x, t: MIX_1D.denoise(x, t), latents, schedule, 6, solver="euler_maruyama",
        generator=torch.Generator().manual_seed(seed),
    ).samples
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


@pytest.mark.parametrize("second_order, deterministic", [(True, "heun"), (False, "euler")])
def test_edm_stochastic_without_churn_is_the_deterministic_solver(second_order, deterministic):
    schedule = ds.create("noise_schedule", "edm")
    latents = schedule.init_latents((64, 2), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x0 = lambda x, t: MIX_2D.denoise(x, t)  # noqa: E731
    name = "edm_stochastic_heun" if second_order else "edm_stochastic_euler"
    stochastic = ds.sample(x0, latents, schedule, 10, solver=name, solver_options={"S_churn": 0.0})
    reference = ds.sample(x0, latents, schedule, 10, solver=deterministic)
    assert torch.equal(stochastic.samples, reference.samples) and stochastic.nfe == reference.nfe


def test_edm_stochastic_churn_follows_algorithm_2():
    """One step with a known noise draw, against Algorithm 2 written out by hand."""
    solver = ds.create("solver", {"name": "edm_stochastic_euler", "S_churn": 80.0, "S_min": 0.5, "S_max": 10.0})
    gamma = min(80.0 / 10, math.sqrt(2) - 1)  # N = 10 steps
    assert solver.churn(10) == gamma
    schedule = ds.create("noise_schedule", "edm")
    denoiser = schedule.get_denoiser(x0_predictor=lambda x, t: MIX_1D.denoise(x, t))
    x = torch.tensor([[0.7], [-2.0]], dtype=torch.float64)
    eps = torch.tensor([[0.3], [-1.1]], dtype=torch.float64)
    for sigma, sigma_next, churned in ((3.0, 2.0, True), (20.0, 12.0, False), (0.2, 0.1, False)):
        s, s_next = torch.tensor(sigma, dtype=torch.float64), torch.tensor(sigma_next, dtype=torch.float64)
        got, _, _ = solver.step(denoiser, x, s, s_next, gamma, eps)
        sigma_hat = sigma * (1 + gamma) if churned else sigma
        x_hat = x + math.sqrt(sigma_hat**2 - sigma**2) * 1.003 * eps
        expected = x_hat + (sigma_next - sigma_hat) * (x_hat - MIX_1D.denoise(x_hat, sigma_hat)) / sigma_hat
        assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_dpmpp_2m_step_matches_the_multistep_formula():
    """Second step of DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) in lambda = -log sigma, by hand."""
    schedule = ds.create("noise_schedule", "edm")
    denoiser = schedule.get_denoiser(x0_predictor=lambda x, t: MIX_1D.denoise(x, t))
    solver = ds.create("solver", "dpmpp_2m")
    x = torch.tensor([[0.4], [1.9]], dtype=torch.float64)
    sigmas = [5.0, 2.0, 0.7]
    s = [torch.tensor(v, dtype=torch.float64) for v in sigmas]
    x1, _, state = solver.step(denoiser, x, s[0], s[1], solver.start(torch.tensor(sigmas)))
    x2, _, _ = solver.step(denoiser, x1, s[1], s[2], state)
    lam = [-math.log(v) for v in sigmas]
    d0, d1 = MIX_1D.denoise(x, sigmas[0]), MIX_1D.denoise(x1, sigmas[1])
    h0, h1 = lam[1] - lam[0], lam[2] - lam[1]
    assert torch.allclose(x1, sigmas[1] / sigmas[0] * x - math.expm1(-h0) * d0, atol=1e-12)
    r = h0 / h1
    d_eff = (1 + 1 / (2 * r)) * d1 - 1 / (2 * r) * d0
    assert torch.allclose(x2, sigmas[2] / sigmas[1] * x1 - math.expm1(-h1) * d_eff, atol=1e-12)


def test_euler_maruyama_step():
    schedule = ds.create("noise_schedule", "edm")
    denoiser = schedule.get_denoiser(x0_predictor=lambda x, t: MIX_1D.denoise(x, t))
    x = torch.tensor([[0.4], [1.9]], dtype=torch.float64)
    eps = torch.tensor([[1.0], [-0.5]], dtype=torch.float64)
    s, s_next = torch.tensor(2.0, dtype=torch.float64), torch.tensor(1.5, dtype=torch.float64)
    got, _, _ = ds.create("solver", "euler_maruyama").step(denoiser, x, s, s_next, None, eps)
    d = MIX_1D.denoise(x, 2.0)
    # reverse SDE in sigma: dx = 2 (x - D) / sigma dsigma + sqrt(d sigma^2) dW
    expected = x + 2 * (1.5 - 2.0) * (x - d) / 2.0 + math.sqrt(2.0**2 - 1.5**2) * eps
    assert torch.allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize(
    "name, nfe", [("euler", 7), ("heun", 13), ("edm_stochastic_euler", 7), ("edm_stochastic_heun", 13),
                  ("euler_maruyama", 7), ("dpmpp_2m", 7)]
)
def test_no_solver_evaluates_at_noise_level_zero(name, nfe):
    seen = []

    def x0(x, t):
        seen.append(float(t.min()))
        return torch.zeros_like(x)

    schedule = ds.create("noise_schedule", "edm")
    result = ds.sample(x0, torch.randn(3, 2), schedule, 7, solver=name, generator=torch.Generator().manual_seed(0))
    assert result.nfe == nfe == len(seen)
    assert min(seen) > 0


@pytest.mark.parametrize("config", ["euler", "heun", "euler_maruyama", "dpmpp_2m",
                                    {"name": "edm_stochastic_heun", "S_churn": 3.0},
                                    {"name": "edm_stochastic_euler", "S_noise": 1.0}])
def test_solvers_give_back_their_spec(config):
    solver = ds.create("solver", config)
    assert isinstance(solver, ds.BaseSolver)
    assert ds.create("solver", solver.spec.model_dump()).spec == solver.spec
    assert solver.spec == ds.parse_spec("solver", config)


def test_bad_sigmas_are_rejected():
    denoiser = ds.create("noise_schedule", "edm").get_denoiser(x0_predictor=lambda x, t: x)
    with pytest.raises(SamplingError, match="must end at noise level 0"):
        ds.create("solver", "euler")(denoiser, torch.zeros(2, 1), torch.tensor([3.0, 1.0]))
    with pytest.raises(SamplingError, match="1-D"):
        ds.create("solver", "euler")(denoiser, torch.zeros(2, 1), torch.tensor([0.0]))


@pytest.mark.parametrize("name, evaluations", [("heun", 19), ("euler", 10)])
def test_loop_over_a_cpu_grid_takes_its_coefficients_as_numbers_and_agrees_with_its_step(name, evaluations):
    """On the CPU Heun's and Euler's loops compute each step's coefficients from the grid in host memory; each must
    give what its ``step`` (coefficients as tensors, as on any device) gives, step by step, to float32 rounding, and
    show the callback the same steps."""
    schedule = ds.create("noise_schedule", "edm")
    denoiser = schedule.get_denoiser(x0_predictor=lambda x, t: MIX_2D.denoise(x, t))
    latents = schedule.init_latents((64, 2), generator=torch.Generator().manual_seed(3))
    sigmas = schedule.sigmas(10).to(torch.float32)
    solver = ds.create("solver", name)
    seen = []
    fast, nfe = solver(denoiser, latents, sigmas, callback=lambda info: seen.append((info["i"], info["x"].clone())))
    generic, generic_nfe = ds.BaseSolver.solve(solver, denoiser, latents, sigmas, None)
    assert (nfe, generic_nfe) == (evaluations, evaluations)
    torch.testing.assert_close(fast, generic, rtol=1e-6, atol=1e-6)
    x = latents
    for i in range(10):  # the callback saw each step's state as the step gives it
        x, _, _ = solver.step(denoiser, x, sigmas[i], sigmas[i + 1], None, None, i == 9)
        assert seen[i][0] == i
        torch.testing.assert_close(seen[i][1], x, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["heun", "euler"])
def test_loop_over_a_grid_that_requires_grad_gives_the_gradient_of_its_steps(name):
    """The samples' gradient with respect to the grid (what ``ds.calibrate_sigmas`` follows) is that of the generic
    loop of steps, in float64: coefficients taken as numbers would carry none."""
    schedule = ds.create("noise_schedule", "edm")
    denoiser = schedule.get_denoiser(x0_predictor=lambda x, t: MIX_2D.denoise(x, t))
    latents = schedule.init_latents((8, 2), generator=torch.Generator().manual_seed(3)).double()
    solver = ds.create("solver", name)
    grads = []
    for solve in (solver.solve, lambda *a: ds.BaseSolver.solve(solver, *a)):
        sigmas = schedule.sigmas(5).double().requires_grad_(True)
        x, _ = solve(denoiser, latents, sigmas, None)
        (grad,) = torch.autograd.grad(x.square().sum(), [sigmas])
        grads.append(grad)
    assert grads[1][:-1].abs().min() > 0  # every positive level moves the samples
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["heun", "euler"])
def test_subclass_with_its_own_step_and_a_denoiser_told_the_levels_get_the_generic_loop(name):
    schedule = ds.create("noise_schedule", "edm")
    zero = schedule.get_denoiser(x0_predictor=lambda x, t: torch.zeros_like(x))
    sigmas = schedule.sigmas(4).to(torch.float32)

    class Halfway(type(ds.create("solver", name))):
        def step(self, denoiser, x, sigma, sigma_next, state=None, noise=None, last=False):
            return x / 2, x, state

    x, _ = Halfway()(zero, torch.ones(1, 2), sigmas)
    assert torch.equal(x, torch.full((1, 2), 1 / 16))  # its step, 4 times

    class Told:
        def __init__(self):
            self.levels = []

        def x0_sigma(self, x, sigma):
            return torch.zeros_like(x)

        def enter_step(self, levels):
            self.levels.append(levels)

    told = Told()
    ds.create("solver", name)(told, torch.ones(1, 2), sigmas)
    assert [lv.known[0][1] for lv in told.levels[:-1]] == sigmas[:-1].tolist() and told.levels[-1] is None


@pytest.mark.parametrize("name, per_step", [("heun", 5), ("euler", 1)])
def test_loop_over_a_cpu_grid_makes_no_single_number_tensor_operation_per_step(name, per_step):
    """What the loop on the CPU saves: no operation whose tensors are all 0-d (the coefficients' arithmetic), where
    the generic loop makes some per step."""
    from torch.overrides import TorchFunctionMode

    class Scalars(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            tensors = [a for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor)]
            if tensors and all(t.ndim == 0 for t in tensors):
                self.count += 1
            return func(*args, **(kwargs or {}))

    class Half:  # x0 = x / 2, touching no noise level
        def x0_sigma(self, x, sigma):
            return x / 2

    sigmas = ds.create("noise_schedule", "edm").sigmas(6).to(torch.float32)
    solver = ds.create("solver", name)
    counts = []
    for solve in (solver.solve, lambda *a: ds.BaseSolver.solve(solver, *a)):
        with Scalars() as mode:
            solve(Half(), torch.ones(3, 2), sigmas, None)
        counts.append(mode.count)
    assert counts[0] == 0 and counts[1] >= per_step * 6, counts


def _calibratable_solvers() -> list[dict]:
    """Every installed solver config ``ds.calibrate_sigmas`` accepts: it follows its grid and adds no noise, as it
    is or with its noise switched off (``eta=0``, ``S_churn=0``)."""
    from diffusion_schemes.sampling.calibrate import _calibratable

    configs = []
    for info in ds.list_schemes("solver"):
        quiet = {field: 0.0 for field in ("eta", "S_churn") if field in info.spec.model_fields}
        for config in ({"name": info.name}, {"name": info.name, **quiet}) if quiet else ({"name": info.name},):
            try:
                _calibratable(ds.create("solver", config))
            except ds.DiffusionSchemesError:
                continue
            configs.append(config)
    return configs


@pytest.mark.parametrize("config", _calibratable_solvers(), ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_the_gradient_of_the_samples_with_respect_to_the_grid_is_the_finite_difference_one(config):
    """What ``ds.calibrate_sigmas`` follows is the true gradient of the samples with respect to every positive
    level of the grid: autograd through the solver against central finite differences, in float64, with the
    mixture's exact denoiser (smooth in x and sigma). A coefficient taken as a host number carries no gradient."""
    schedule = ds.create("noise_schedule", "edm")
    denoiser = schedule.get_denoiser(x0_predictor=lambda x, t: MIX_2D.denoise(x, t))
    latents = schedule.init_latents((4, 2), generator=torch.Generator().manual_seed(5)).double()
    solver = ds.create("solver", config)
    weights = torch.randn(4, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def objective(levels: torch.Tensor) -> torch.Tensor:
        x, _ = solver.solve(denoiser, latents, levels, None)
        return (weights * x).sum()

    sigmas = schedule.sigmas(6).double()
    leaf = sigmas.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(leaf), [leaf])
    for i in range(sigmas.shape[0] - 1):  # every positive level (the last, 0, ends the grid)
        # a relative step of 1e-3: the truncation error, of order h^2, stays near 1e-7 relative; a smaller step
        # meets the rounding of the samples, which start at sigma_max = 80 (1e-6 of 0.002 gave 5e-5 relative)
        h = 1e-3 * float(sigmas[i])
        up, down = sigmas.clone(), sigmas.clone()
        up[i] += h
        down[i] -= h
        with torch.no_grad():
            finite = (objective(up) - objective(down)) / (2 * h)
        torch.testing.assert_close(grad[i], finite, rtol=1e-5, atol=1e-8, msg=f"{config}: level {i}")
