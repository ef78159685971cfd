"""Every solver: nfe counts the calls made, noise comes through ``noise_sampler``, the callback sees
each step; UniPC's order, dpm_adaptive's tolerance, ``lower_order_final`` on VP, and our best
solver against k-diffusion's best at 10, 20 and 50 evaluations (exact ring-mixture denoiser, float64).
"""

from __future__ import annotations

import math

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes.conformance._solver import GaussianProblem
from benchmarks.kdiffusion_oracle import load_sampling
from test_solvers_kdiffusion import RING, RecordingNoise, k_model

SOLVERS = [i.name for i in ds.list_schemes("solver")]
NOISE_ON_LAST_STEP = {"edm_stochastic_euler", "edm_stochastic_heun"}  # Karras et al. 2022, Algorithm 2
EDM = ds.create("noise_schedule", "edm")
DENOISER = EDM.get_denoiser(x0_predictor=lambda x, t: RING.denoise(x, t))  # EDM: t = sigma


def _latents(schedule, n=256, seed=0):
    sigma_max = float(schedule.sigmas(1)[0])
    return sigma_max * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _reference(x, sigma_max, sigma_min, steps=3000):
    """The converged probability-flow ODE solution from ``x``: Heun on 3000 geometric steps, then D at sigma_min."""
    grid = torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64).exp()
    return ds.create("solver", "heun")(DENOISER, x.clone(), torch.cat([grid, grid.new_zeros(1)]))[0]


def _error(samples, reference):
    return float((samples - reference).pow(2).sum(1).sqrt().mean())


@pytest.mark.parametrize("name", SOLVERS)
def test_nfe_noise_and_callback(name):
    calls, steps = [], []

    def x0(x, t):
        calls.append(float(t.min()))
        return RING.denoise(x, t)

    sigmas = EDM.sigmas(7).to(torch.float64)
    noise = RecordingNoise((32, 2))
    solver = ds.create("solver", name)
    x, nfe = solver(EDM.get_denoiser(x0_predictor=x0), _latents(EDM, 32), sigmas, noise_sampler=noise,
                    callback=lambda info: steps.append(info))
    assert nfe == len(calls) and min(calls) > 0 and torch.isfinite(x).all()
    assert all(set(info) == {"i", "sigma", "sigma_next", "x", "denoised"} for info in steps)
    assert [info["i"] for info in steps] == list(range(len(steps)))
    assert torch.equal(steps[-1]["x"], x)
    if solver.adaptive:
        assert float(steps[-1]["sigma_next"]) == 0 and noise.calls == []
        return
    assert len(steps) == 7 and nfe == solver.nfe(7)
    assert [float(info["sigma_next"]) for info in steps] == sigmas[1:].tolist()
    if not solver.stochastic:
        assert noise.calls == []
    else:  # once per step where noise is added, with that step's noise levels
        expected = [(a, b) for a, b in zip(sigmas[:-1].tolist(), sigmas[1:].tolist())]
        # Algorithm 2 churns before every step, the last included; every other solver adds none on the step to 0
        assert noise.calls == (expected if name in NOISE_ON_LAST_STEP else expected[:-1])


def test_default_noise_comes_from_the_generator():
    run = lambda seed: ds.create("solver", "dpmpp_2m_sde")(  # noqa: E731
        DENOISER, _latents(EDM, 8), EDM.sigmas(6), generator=torch.Generator().manual_seed(seed))[0]
    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))


@pytest.mark.parametrize("order", [1, 2])
def test_unipc_converges_with_order_p_plus_1(order):
    """UniP-p with UniC has order p + 1 (Zhao et al. 2023, Theorem 3.3), on the exact Gaussian map."""
    p = GaussianProblem()
    x_T = p.latents(9)
    want = p.exact_map(x_T)
    solver = ds.create("solver", {"name": "unipc", "order": order})
    errors = [float((p.solve(solver, x_T, n)[0] - want).abs().max()) for n in (32, 64, 128)]
    observed = math.log2(errors[-2] / errors[-1])
    assert solver.order == order + 1 and abs(observed - (order + 1)) < 0.25, errors


def test_unipc_order_3_beats_order_2_at_few_steps():
    p = GaussianProblem()
    x_T = p.latents(9)
    want = p.exact_map(x_T)
    for n in (16, 32, 64):
        e2, e3 = (float((p.solve(ds.create("solver", {"name": "unipc", "order": k}), x_T, n)[0] - want).abs().max())
                  for k in (2, 3))
        assert e3 < e2


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("tol", [1e-3, 1e-4])
def test_dpm_adaptive_reaches_the_requested_tolerance(tol, order):
    """With rtol = atol = tol the error to the converged ODE solution is of the order of tol.

    The tolerance bounds each step's local error estimate, not the global error; measured
    max/tol is 0.9-2.6 and the mean error is below tol, with fewer evaluations for looser tol.
    """
    x = _latents(EDM)
    sigmas = EDM.sigmas(10).to(torch.float64)
    reference = _reference(x, float(sigmas[0]), float(sigmas[-2]))
    solver = ds.create("solver", {"name": "dpm_adaptive", "rtol": tol, "atol": tol, "order": order})
    out, nfe = solver(DENOISER, x.clone(), sigmas)
    assert float((out - reference).abs().max()) < 3 * tol
    assert float((out - reference).abs().mean()) < tol
    _, loose_nfe = ds.create("solver", {"name": "dpm_adaptive", "rtol": 10 * tol, "atol": 10 * tol, "order": order})(
        DENOISER, x.clone(), sigmas)
    assert loose_nfe < nfe


@pytest.mark.parametrize("steps", [5, 10, 20, 50, 100])
def test_lower_order_final_makes_dpmpp_2m_on_vp_no_worse_than_euler(steps):
    vp = ds.create("noise_schedule", "vp")
    x = _latents(vp, 1000)
    sigmas = vp.sigmas(steps).to(torch.float64)
    reference = _reference(x, float(sigmas[0]), float(sigmas[-2]))
    run = lambda config: _error(ds.create("solver", config)(DENOISER, x.clone(), sigmas)[0], reference)  # noqa: E731
    euler, plain, lower = run("euler"), run("dpmpp_2m"), run({"name": "dpmpp_2m", "lower_order_final": True})
    assert lower <= euler, (lower, euler, plain)
    if 10 <= steps <= 20:
        assert plain > euler  # the case the option is for
    ode_error = run({"name": "unipc", "lower_order_final": True})
    assert ode_error <= 1.05 * euler


OURS = ["euler", "heun", "dpm_2", "lms", {"name": "lms", "startup": "k-diffusion"}, "dpmpp_2m", {"name": "dpmpp_2m", "lower_order_final": True}, "unipc",
        {"name": "unipc", "lower_order_final": True}, {"name": "unipc", "order": 3},
        {"name": "unipc", "order": 3, "lower_order_final": True}]
K_DETERMINISTIC = {"sample_euler": (1, 0), "sample_heun": (2, -1), "sample_dpm_2": (2, -1), "sample_lms": (1, 0),
                   "sample_dpmpp_2m": (1, 0)}  # nfe = a N + b for N steps


@pytest.mark.parametrize("schedule_name", ["edm", "vp"])
def test_our_best_solver_is_at_least_as_accurate_as_k_diffusions_best(schedule_name):
    """Deterministic solvers at 10, 20 and 50 evaluations, error to the converged ODE solution."""
    sampling = load_sampling()
    schedule = ds.create("noise_schedule", schedule_name)
    x = _latents(schedule, 1000)
    ends = schedule.sigmas(2).to(torch.float64)
    reference = _reference(x, float(ends[0]), float(ends[1]))
    for budget in (10, 20, 50):
        ours = []
        for config in OURS:
            solver = ds.create("solver", config)
            n = max(k for k in range(1, budget + 1) if solver.nfe(k) <= budget)
            ours.append(_error(solver(DENOISER, x.clone(), schedule.sigmas(n).to(torch.float64))[0], reference))
        theirs = []
        for function, (a, b) in K_DETERMINISTIC.items():
            n = max(k for k in range(1, budget + 1) if a * k + b <= budget)
            out = getattr(sampling, function)(k_model, x.clone(), schedule.sigmas(n).to(torch.float64), disable=True)
            theirs.append(_error(out, reference))
        assert min(ours) <= min(theirs) * (1 + 1e-9), (budget, ours, theirs)


@pytest.mark.parametrize("schedule_name", ["edm", "vp"])
@pytest.mark.parametrize("lower_order_final", [False, True])
def test_dpmpp_2m_is_the_2m_sde_solver_without_noise(schedule_name, lower_order_final):
    """DPM-Solver++(2M) is DPM-Solver++(2M) SDE with eta = 0 and the midpoint correction (Lu et al. 2022b):
    ``e^{-a} = sigma_{i+1} / sigma_i`` and ``c / r = (1 - e^{-h}) / (2 r)``. Both draw no noise and agree
    to float64 rounding (each is compared with k-diffusion in test_solvers_kdiffusion.py)."""
    schedule = ds.create("noise_schedule", schedule_name)
    sigmas = schedule.sigmas(12).to(torch.float64)
    x = _latents(schedule, 64)
    ode = ds.create("solver", {"name": "dpmpp_2m", "lower_order_final": lower_order_final})
    sde = ds.create("solver", {"name": "dpmpp_2m_sde", "eta": 0.0, "lower_order_final": lower_order_final})
    noise = RecordingNoise(x.shape)
    ode_x, ode_nfe = ode(DENOISER, x.clone(), sigmas, noise_sampler=noise)
    sde_x, sde_nfe = sde(DENOISER, x.clone(), sigmas, noise_sampler=noise)
    assert noise.calls == [] and ode_nfe == sde_nfe == 12 and not ode.stochastic
    torch.testing.assert_close(ode_x, sde_x, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("config", ["dpmpp_2m", {"name": "dpmpp_3m_sde", "eta": 0.0}, "unipc", {"name": "unipc", "order": 3}])
def test_lower_order_final_keeps_equal_steps_at_the_higher_order(config):
    """On steps equal in log sigma no step grows, so only the step to 0 could drop to first order, and these
    solvers take that one from ``D`` anyway: the option changes nothing (whatever the rounding of the ratios)."""
    config = {"name": config} if isinstance(config, str) else config
    grid = torch.linspace(math.log(80.0), math.log(0.002), 25, dtype=torch.float64).exp()
    sigmas = torch.cat([grid, grid.new_zeros(1)])
    x = _latents(EDM, 64)
    plain = ds.create("solver", config)(DENOISER, x.clone(), sigmas)[0]
    lower = ds.create("solver", {**config, "lower_order_final": True})(DENOISER, x.clone(), sigmas)[0]
    assert torch.equal(plain, lower)


def _lms(order=4, startup="runge-kutta"):
    return ds.create("solver", {"name": "lms", "order": order, "startup": startup})


@pytest.mark.parametrize("startup", ["runge-kutta", "k-diffusion"])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_lms_counts_the_evaluations_of_its_start_up(order, startup):
    """N steps cost N evaluations, plus ``p - 2`` on each of the first ``min(p - 2, N - 1)`` steps with the
    Runge-Kutta start of order ``p - 1`` (none for ``p <= 2``); never at noise level 0."""
    for steps in (1, 2, 3, 4, 7):
        calls = []

        def x0(x, t):
            calls.append(float(t.min()))
            return RING.denoise(x, t)

        solver = _lms(order, startup)
        _, nfe = solver(EDM.get_denoiser(x0_predictor=x0), _latents(EDM, 8), EDM.sigmas(steps).to(torch.float64))
        extra = (order - 2) * min(order - 2, steps - 1) if startup == "runge-kutta" and order > 2 else 0
        assert nfe == len(calls) == steps + extra and min(calls) > 0


def test_lms_start_up_step_is_third_order():
    """The first step of ``lms`` (order 4) is Ralston's third-order Runge-Kutta step: its error from the exact
    Gaussian flow is ``O(h^4)`` (16 times smaller for half the step); k-diffusion's first step is Euler, ``O(h^2)``."""
    p = GaussianProblem()
    x = p.exact_map(p.latents(9))  # at noise level 0; moved to sigma = 2 along the exact flow below
    at = lambda sigma: p.mu + (x - p.mu) * math.sqrt(p.s**2 + sigma**2) / p.s  # noqa: E731
    for startup, exponent in (("runge-kutta", 4), ("k-diffusion", 2)):
        errors = []
        for h in (0.4, 0.2, 0.1):
            sigmas = torch.tensor([2.0, 2.0 - h, 1.0, 0.5, 0.0], dtype=torch.float64)
            solver = _lms(4, startup)
            x1, _, _ = solver.step(p.denoiser(), at(2.0), sigmas[0], sigmas[1], solver.start(sigmas))
            errors.append(float((x1 - at(2.0 - h)).abs().max()))
        observed = math.log2(errors[-2] / errors[-1])
        assert abs(observed - exponent) < 0.2, (startup, errors)


@pytest.mark.slow
def test_lms_keeps_order_4_on_fine_grids_where_k_diffusions_start_falls_back():
    """On the conformance kit's Gaussian problem, from 256 to 1024 steps: the default start keeps the
    observed order at 4; with k-diffusion's (Euler first, error ``O(h^2)``) it falls towards 2."""
    p = GaussianProblem()
    x_T = p.latents(9)
    want = p.exact_map(x_T)
    for startup in ("runge-kutta", "k-diffusion"):
        errors = [float((p.solve(_lms(4, startup), x_T, n)[0] - want).abs().max()) for n in (256, 512, 1024)]
        orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
        if startup == "runge-kutta":
            assert all(abs(o - 4) < 0.25 for o in orders), errors
        else:
            assert orders[-1] < orders[0] < 3.5, errors


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_lms_weights_are_the_integrals_of_the_lagrange_polynomials(order):
    """Each step's weights against the exact integral of its Lagrange basis polynomials, built independently as
    power series in float64 (``numpy.polynomial``), on an uneven grid that ends at 0."""
    from numpy.polynomial import polynomial as P

    from diffusion_schemes.solvers.multistep import lms_weights

    grid = [80.0, 31.0, 9.5, 2.2, 0.61, 0.05, 0.0]
    weights = lms_weights(torch.tensor(grid, dtype=torch.float64), order)
    assert weights.shape == (len(grid) - 1, order)
    for i in range(len(grid) - 1):
        nodes = [grid[i - k] for k in range(min(order, i + 1))]  # the newest level first
        for j in range(order):
            if j >= len(nodes):
                assert weights[i, j] == 0
                continue
            basis = [1.0]
            for k, node in enumerate(nodes):
                if k != j:
                    basis = P.polymul(basis, [-node / (nodes[j] - node), 1 / (nodes[j] - node)])
            antiderivative = P.polyint(basis)
            exact = P.polyval(grid[i + 1], antiderivative) - P.polyval(grid[i], antiderivative)
            assert float(weights[i, j]) == pytest.approx(exact, rel=1e-12, abs=1e-12 * abs(grid[i] - grid[i + 1]))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_scalars_solve_the_papers_order_conditions(order):
    """Each step's UniP and UniC scalars against the order conditions of Zhao et al. 2023 (Algorithms 2-3, bh2)
    solved independently in float64 with numpy: ``sum_m rho_m r_m^(k-1) = k! h phi_{k+1}(h) / (e^h - 1)`` with
    ``h = -(lambda_{i+1} - lambda_i)``, ``phi_1(h) = (e^h - 1) / h``, ``phi_{j+1} = (phi_j - 1/j!) / h``; each
    difference is added with ``-(e^h - 1) rho_m / r_m``."""
    import numpy as np

    from diffusion_schemes.solvers.multistep import unipc_coefficients

    grid = [80.0, 31.0, 9.5, 2.2, 0.61, 0.05, 0.0]
    table = unipc_coefficients(torch.tensor(grid, dtype=torch.float64), order).numpy()
    lam = [-math.log(s) for s in grid[:-1]]
    assert table.shape == (len(grid) - 1, 2 * order)  # a row a step; the step to 0 uses none

    def rhos(r, hh, rows):
        phi = [math.expm1(hh) / hh]
        for j in range(1, rows + 1):
            phi.append((phi[-1] - 1 / math.factorial(j)) / hh)
        matrix = np.array([[rm ** (k - 1) for rm in r[:rows]] for k in range(1, rows + 1)])
        rhs = np.array([math.factorial(k) * hh * phi[k] / math.expm1(hh) for k in range(1, rows + 1)])
        return np.linalg.solve(matrix, rhs)

    for i in range(len(grid) - 2):
        hh = -(lam[i + 1] - lam[i])
        earlier = [(lam[i - k] - lam[i]) / (lam[i + 1] - lam[i]) for k in range(1, min(order, i + 1))]
        r = [*earlier, 1.0]
        predictor = [0.5] if len(r) == 2 else (rhos(r, hh, len(r) - 1) if len(r) > 2 else [])
        corrector = [0.5] if len(r) == 1 else rhos(r, hh, len(r))
        want_pred = [-math.expm1(hh) * rho / rm for rho, rm in zip(predictor, earlier)]
        want_corr = [-math.expm1(hh) * rho / rm for rho, rm in zip(corrector, r)]
        np.testing.assert_allclose(table[i, :len(want_pred)], want_pred, rtol=1e-10)
        np.testing.assert_allclose(table[i, order - 1:order - 1 + len(want_corr)], want_corr, rtol=1e-10)
        assert not table[i, len(want_pred):order - 1].any() and not table[i, order - 1 + len(want_corr):-1].any()
        assert table[i, -1] == pytest.approx(-math.expm1(hh) * 0.5, rel=1e-12)
