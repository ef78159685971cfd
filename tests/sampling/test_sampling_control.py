"""``ds.sample``'s control of the path: grids, img2img, inpainting, callbacks and noise samplers."""

from __future__ import annotations

import math

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes.errors import SamplingError
from diffusion_schemes.discretizations import BaseDiscretization
from diffusion_schemes.solvers.noise_samplers import BrownianTreeNoiseSampler
from diffusion_schemes.conformance.mixture import GaussianMixture

MIX = GaussianMixture([-1.0, 1.5], [0.3, 0.5], [0.3, 0.7])  # 1-D: the exact denoiser acts per coordinate
SOLVERS = tuple(ds.registry.names("solver"))  # every installed solver
FIXED_STEP = tuple(n for n in SOLVERS if not getattr(ds.create("solver", n), "adaptive", False))


def exact(x, t):
    """The mixture's exact denoiser, coordinate by coordinate (EDM: t is the noise level)."""
    sigma = torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0]).repeat_interleave(x[0].numel())
    return MIX.denoise(x.reshape(-1, 1), sigma).reshape(x.shape)


@pytest.fixture
def edm():
    return ds.create("noise_schedule", "edm")


def latents(schedule, shape=(6, 3), seed=0, dtype=torch.float64):
    return schedule.init_latents(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------- grids


def test_default_grid_is_the_schedule_own(edm):
    x = latents(edm)
    by_default = ds.sample(exact, x, edm, 8, "heun")
    direct = ds.create("solver", "heun")(edm.get_denoiser(x0_predictor=exact), x, edm.sigmas(8))
    assert torch.equal(by_default.samples, direct[0]) and by_default.nfe == direct[1] == 15


@pytest.mark.parametrize("discretization", ["karras", {"name": "log_snr_uniform"}, "polyexponential", "linear_time"])
def test_discretization_by_name_config_spec_or_object_is_that_grid(edm, discretization):
    x = latents(edm)
    spec = ds.parse_spec("discretization", discretization)
    grid = spec.build().sigmas(6, edm)
    want = ds.sample(exact, x, edm, sigmas=grid, solver="euler")
    for given in (discretization, spec, spec.build()):
        got = ds.sample(exact, x, edm, 6, "euler", discretization=given)
        assert torch.equal(got.samples, want.samples) and got.nfe == want.nfe == 6


def test_explicit_grid_with_or_without_num_steps(edm):
    x = latents(edm)
    grid = torch.tensor([80.0, 10.0, 1.0, 0.1, 0.0], dtype=torch.float64)
    a = ds.sample(exact, x, edm, sigmas=grid, solver="heun")
    b = ds.sample(exact, x, edm, 4, "heun", sigmas=grid.tolist())
    c = ds.create("solver", "heun")(edm.get_denoiser(x0_predictor=exact), x, grid)
    assert torch.equal(a.samples, c[0]) and torch.equal(b.samples, c[0]) and a.nfe == 7


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ([80.0, 10.0, 10.0, 0.0], "decrease strictly"),
        ([1.0, 2.0, 0.0], "decrease strictly"),
        ([80.0, 1.0], "end at noise level 0"),
        ([80.0, -1.0, 0.0], "decrease strictly"),
        ([80.0, float("nan"), 0.0], "finite"),
        ([0.0], "1-D with N >= 1"),
        ([[2.0, 1.0, 0.0]], "1-D with N >= 1"),
    ],
)
def test_bad_grids_get_a_clear_error(edm, grid, message):
    with pytest.raises(SamplingError, match=message) as info:
        ds.sample(exact, latents(edm), edm, sigmas=grid)
    assert isinstance(info.value, ds.DiffusionSchemesError) and isinstance(info.value, ValueError)


def test_grid_given_twice_or_not_at_all(edm):
    x = latents(edm)
    with pytest.raises(SamplingError, match="not both"):
        ds.sample(exact, x, edm, sigmas=[1.0, 0.0], discretization="karras")
    with pytest.raises(SamplingError, match="give num_steps .* or sigmas"):
        ds.sample(exact, x, edm)
    with pytest.raises(SamplingError, match="num_steps=3 disagrees with sigmas, which holds 2"):
        ds.sample(exact, x, edm, 3, sigmas=[2.0, 1.0, 0.0])
    with pytest.raises(ds.UnknownSchemeError, match="no discretization named 'karas'"):
        ds.sample(exact, x, edm, 3, discretization="karas")
    with pytest.raises(TypeError, match="discretization must be a name"):
        ds.sample(exact, x, edm, 3, discretization=7)


def test_a_discretization_that_breaks_the_contract_is_caught(edm):
    class Rising(BaseDiscretization):
        def sigma_at(self, u, schedule):
            return 1.0 + torch.as_tensor(u, dtype=torch.float64)

    with pytest.raises(SamplingError, match="decrease strictly"):
        ds.sample(exact, latents(edm), edm, 3, discretization=Rising())


def test_positional_compatibility(edm):
    x = latents(edm)
    assert torch.equal(ds.sample(exact, x, edm, 5, "euler").samples, ds.sample(exact, x, edm, num_steps=5, solver="euler").samples)


# ---------------------------------------------------------------------- img2img


def test_init_latents_at_sigma_is_x0_plus_sigma_eps(edm):
    x0 = torch.linspace(-1, 1, 12).reshape(4, 3)
    got = edm.init_latents(x0.shape, generator=torch.Generator().manual_seed(3), x0=x0, sigma=2.5)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, x0 + 2.5 * eps)
    per_sample = torch.tensor([0.5, 1.0, 2.0, 4.0])
    got = edm.init_latents(x0.shape, generator=torch.Generator().manual_seed(3), x0=x0, sigma=per_sample)
    assert torch.equal(got, x0 + per_sample[:, None] * eps)
    default = edm.init_latents(x0.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(default, eps * 80.0)  # no x0: pure noise at the schedule's first level, as before


def test_init_latents_errors(edm):
    with pytest.raises(ValueError, match=r"differs from x0's shape \(4, 3\)"):
        edm.init_latents((2, 3), x0=torch.zeros(4, 3), sigma=1.0)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ds.DomainError, match="positive, finite noise level"):
            edm.init_latents((4, 3), x0=torch.zeros(4, 3), sigma=bad)


def test_img2img_follows_the_ode_from_the_noised_image(edm):
    """Gaussian data N(mu, s^2): the probability-flow ODE maps x at noise level sigma to
    mu + s (x - mu) / sqrt(s^2 + sigma^2) at 0 (its solution keeps (x - mu) / sqrt(s^2 + sigma^2) fixed).
    Strength 0.4 of an N-step karras grid: start from the image noised to the grid's level N - 0.4 N."""
    mu, s = 0.5, 0.8
    gaussian = lambda x, t: mu + s**2 / (s**2 + torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1) ** 2) * (x - mu)  # noqa: E731
    image = torch.linspace(-2, 2, 9, dtype=torch.float64).reshape(9, 1)
    eps = torch.randn(image.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = []
    for n in (40, 80):
        cut = ds.create("discretization", "karras").sigmas(n, edm)[n - round(0.4 * n):]
        x = edm.init_latents(image.shape, generator=torch.Generator().manual_seed(0), x0=image, sigma=cut[0],
                             dtype=torch.float64)
        result = ds.sample(gaussian, x, edm, sigmas=cut, solver="heun")
        assert result.nfe == 2 * round(0.4 * n) - 1
        start = image + float(cut[0]) * eps
        want = mu + s * (start - mu) / math.sqrt(s**2 + float(cut[0]) ** 2)
        errors.append(float((result.samples - want).abs().max()))
    assert errors[0] < 1e-2 and errors[1] < errors[0] / 3  # measured 6.1e-3 and 1.7e-3: Heun's second order


# ---------------------------------------------------------------------- inpainting


@pytest.mark.parametrize("solver", SOLVERS)
def test_inpainting_with_an_all_ones_mask_returns_known(edm, solver):
    known = torch.randn(6, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    result = ds.sample(exact, latents(edm), edm, 7, solver, mask=torch.ones(6, 3), known=known,
                       generator=torch.Generator().manual_seed(1))
    assert torch.equal(result.samples, known)


@pytest.mark.parametrize("solver", FIXED_STEP)
def test_inpainting_keeps_known_and_leaves_independent_coordinates_alone(edm, solver):
    """The exact denoiser acts per coordinate, so masked coordinates cannot change the others.

    (Not for an adaptive solver: its step sizes come from an error norm over every coordinate.)"""
    x = latents(edm)
    known = torch.full((6, 3), 2.0, dtype=torch.float64)
    mask = torch.zeros(6, 3, dtype=torch.float64)
    mask[:, 0] = 1  # the first coordinate is known
    free = ds.sample(exact, x, edm, 7, solver, generator=torch.Generator().manual_seed(1)).samples
    seen = []
    result = ds.sample(exact, x, edm, 7, solver, mask=mask, known=known, generator=torch.Generator().manual_seed(1),
                       callback=lambda info: seen.append((info["sigma_next"].item(), info["x"].clone())))
    assert torch.equal(result.samples[:, 0], known[:, 0])
    assert torch.equal(result.samples[:, 1:], free[:, 1:])
    noise = (x - known) / 80.0  # the noise the latents carry on the known region
    for sigma_next, state in seen:  # after each step the known region is known + sigma_next * noise
        torch.testing.assert_close(state[:, 0], known[:, 0] + sigma_next * noise[:, 0], rtol=1e-12, atol=1e-12)


def test_inpainting_mask_broadcasts_and_mixes(edm):
    x = latents(edm, (2, 4))
    known = torch.zeros(1, 4, dtype=torch.float64)  # broadcast over the batch
    mask = torch.tensor([1.0, 1.0, 0.0, 0.5], dtype=torch.float64)
    result = ds.sample(exact, x, edm, 5, "euler", mask=mask, known=known)
    assert torch.equal(result.samples[:, :2], torch.zeros(2, 2, dtype=torch.float64))
    assert not torch.equal(result.samples[:, 3], torch.zeros(2, dtype=torch.float64))  # a soft mask mixes


def test_inpainting_errors(edm):
    x = latents(edm)
    with pytest.raises(SamplingError, match="needs both mask .* got mask without known"):
        ds.sample(exact, x, edm, 3, mask=torch.ones(6, 3))
    with pytest.raises(SamplingError, match="got known without mask"):
        ds.sample(exact, x, edm, 3, known=torch.ones(6, 3))
    with pytest.raises(SamplingError, match=r"known of shape \(5, 3\) does not broadcast to the latents' shape \(6, 3\)"):
        ds.sample(exact, x, edm, 3, mask=torch.ones(6, 3), known=torch.ones(5, 3))
    with pytest.raises(SamplingError, match=r"mask must hold values in \[0, 1\]"):
        ds.sample(exact, x, edm, 3, mask=torch.full((6, 3), 2.0), known=torch.ones(6, 3))


# ---------------------------------------------------------------------- callbacks


@pytest.mark.parametrize("solver", FIXED_STEP)
def test_callback_sees_every_step(edm, solver):
    x = latents(edm)
    calls = []
    result = ds.sample(exact, x, edm, 6, solver, callback=calls.append, generator=torch.Generator().manual_seed(2))
    grid = edm.sigmas(6)
    assert [c["i"] for c in calls] == list(range(6))
    assert [float(c["sigma"]) for c in calls] == pytest.approx(grid[:-1].tolist(), rel=1e-15)
    assert [float(c["sigma_next"]) for c in calls] == pytest.approx(grid[1:].tolist(), rel=1e-15)
    assert torch.equal(calls[-1]["x"], result.samples)
    assert all(c["denoised"].shape == x.shape for c in calls)


def test_callback_values_are_the_euler_steps(edm):
    """Each call's x and denoised satisfy x_{i+1} = x_i + (s_{i+1} - s_i)(x_i - D(x_i; s_i)) / s_i."""
    x = latents(edm)
    calls = []
    ds.sample(exact, x, edm, 5, "euler", callback=lambda info: calls.append({k: v.clone() if torch.is_tensor(v) else v
                                                                              for k, v in info.items()}))
    previous = x
    for c in calls:
        torch.testing.assert_close(c["denoised"], exact(previous, c["sigma"]), rtol=1e-12, atol=1e-12)
        want = previous + (c["sigma_next"] - c["sigma"]) * (previous - c["denoised"]) / c["sigma"]
        torch.testing.assert_close(c["x"], want, rtol=1e-12, atol=1e-12)
        previous = c["x"]


def test_callback_does_not_change_the_samples(edm):
    x = latents(edm)
    for solver in SOLVERS:  # an adaptive solver too
        plain = ds.sample(exact, x, edm, 5, solver, generator=torch.Generator().manual_seed(4))
        watched = ds.sample(exact, x, edm, 5, solver, generator=torch.Generator().manual_seed(4), callback=lambda i: None)
        assert torch.equal(plain.samples, watched.samples) and plain.nfe == watched.nfe


# ---------------------------------------------------------------------- noise samplers


@pytest.mark.parametrize("solver", ["euler_maruyama", "edm_stochastic_euler", "edm_stochastic_heun"])
def test_noise_sampler_is_called_where_noise_is_added(edm, solver):
    x = latents(edm)
    g = torch.Generator().manual_seed(7)
    calls = []

    def noise_sampler(sigma, sigma_next):
        calls.append((float(sigma), float(sigma_next)))
        return torch.randn(x.shape, generator=g, dtype=x.dtype)

    options = {"S_churn": 5.0} if solver.startswith("edm") else None
    via_sampler = ds.sample(exact, x, edm, 6, solver, noise_sampler=noise_sampler, solver_options=options)
    via_generator = ds.sample(exact, x, edm, 6, solver, generator=torch.Generator().manual_seed(7), solver_options=options)
    assert torch.equal(via_sampler.samples, via_generator.samples)  # the same draws, through either door
    grid = edm.sigmas(6).tolist()
    steps = 5 if solver == "euler_maruyama" else 6  # Euler-Maruyama adds no noise on the last step
    assert calls == [(pytest.approx(grid[i]), pytest.approx(grid[i + 1])) for i in range(steps)]


def test_deterministic_solvers_ignore_the_noise_sampler(edm):
    x = latents(edm)
    never = lambda sigma, sigma_next: pytest.fail("a deterministic solver drew noise")  # noqa: E731
    for solver in ("euler", "heun", "dpmpp_2m"):
        assert torch.equal(ds.sample(exact, x, edm, 4, solver, noise_sampler=never).samples,
                           ds.sample(exact, x, edm, 4, solver).samples)


def test_brownian_tree_increments_are_standard_normal_and_additive():
    x = torch.zeros(20000, dtype=torch.float64)
    sampler = BrownianTreeNoiseSampler(x, 0.0, 10.0, seed=11)
    whole = sampler(8.0, 2.0)
    upper, lower = sampler(8.0, 5.0), sampler(5.0, 2.0)
    assert whole.shape == x.shape and whole.dtype == x.dtype
    # one Brownian path: the increment over [2, 8] is the sum of those over [2, 5] and [5, 8]
    torch.testing.assert_close(math.sqrt(6.0) * whole, math.sqrt(3.0) * upper + math.sqrt(3.0) * lower,
                               rtol=0, atol=1e-5)
    n = x.numel()
    for noise in (whole, upper, lower):
        assert abs(float(noise.mean())) < 4 / math.sqrt(n) and abs(float(noise.std()) - 1) < 4 / math.sqrt(2 * n)
    assert abs(float((upper * lower).mean())) < 4 / math.sqrt(n)  # disjoint steps: independent
    assert torch.equal(sampler(8.0, 2.0), whole)  # asking again gives the same noise


def test_brownian_tree_per_sample_seeds_and_errors():
    batch = BrownianTreeNoiseSampler(torch.zeros(3, 4), 0.01, 80.0, seed=[1, 2, 3])
    single = BrownianTreeNoiseSampler(torch.zeros(1, 4), 0.01, 80.0, seed=[2])
    torch.testing.assert_close(batch(40.0, 10.0)[1], single(40.0, 10.0)[0], rtol=1e-6, atol=1e-6)
    with pytest.raises(ds.DiffusionSchemesError, match="2 seeds were given for a batch of 3"):
        BrownianTreeNoiseSampler(torch.zeros(3, 4), 0.01, 80.0, seed=[1, 2])
    with pytest.raises(ds.DiffusionSchemesError, match="sigma_min < sigma_max"):
        BrownianTreeNoiseSampler(torch.zeros(3), 5.0, 5.0)
    with pytest.raises(ds.DiffusionSchemesError, match="has no length inside the tree's range"):
        BrownianTreeNoiseSampler(torch.zeros(3), 1.0, 5.0)(0.5, 0.2)


def test_brownian_tree_drives_an_sde_solver_reproducibly(edm):
    x = latents(edm, (4, 2))
    run = lambda seed: ds.sample(  # noqa: E731
        exact, x, edm, 8, "euler_maruyama", noise_sampler=BrownianTreeNoiseSampler(x, 0.002, 80.0, seed=seed)
    ).samples
    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))


@pytest.mark.parametrize("solver", ["dpmpp_2m_sde", "dpmpp_3m_sde"])
def test_brownian_tree_through_ds_sample_matches_k_diffusion(edm, solver):
    """The SDE solvers k-diffusion runs on a Brownian tree: the same tree (same seed) through ds.sample
    and through k-diffusion's function of the same name gives the same samples."""
    from benchmarks.kdiffusion_oracle import load_sampling

    K = load_sampling()
    x = latents(edm, (16, 2))
    sigmas = edm.sigmas(10)
    tree = lambda: BrownianTreeNoiseSampler(x, float(sigmas[-2]), float(sigmas[0]), seed=[3 * i for i in range(16)])  # noqa: E731
    ours = ds.sample(exact, x, edm, sigmas=sigmas, solver=solver, noise_sampler=tree()).samples
    theirs = getattr(K, f"sample_{solver}")(lambda x, s: exact(x, s), x.clone(), sigmas, noise_sampler=tree(), disable=True)
    assert float((ours - theirs).abs().max()) < 1e-6


def test_grid_table_of_the_sampling_page():
    """docs/sampling.md: W1 error on VP at 12 steps by grid and solver (exact denoiser, quantile latents)."""
    vp = ds.create("noise_schedule", "vp")
    n = 2000
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    documented = {
        ("schedule", "euler"): 0.110, ("karras", "euler"): 0.185, ("log_snr_uniform", "euler"): 0.172,
        ("schedule", "heun"): 0.030, ("karras", "heun"): 0.099, ("log_snr_uniform", "heun"): 0.092,
        ("schedule", "dpmpp_2m"): 0.218, ("karras", "dpmpp_2m"): 0.136, ("log_snr_uniform", "dpmpp_2m"): 0.059,
    }
    for (grid, solver), want in documented.items():
        s0 = float(ds.create("discretization", grid).sigmas(12, vp)[0])
        noisy = GaussianMixture(MIX.means, (MIX.stds**2 + s0**2).sqrt(), MIX.weights)
        x = noisy.quantile(u)[:, None]
        result = ds.sample(lambda x, t: MIX.denoise(x, vp.noise_level(t)), x, vp, 12, solver, discretization=grid)
        assert MIX.wasserstein1(result.samples) == pytest.approx(want, abs=6e-4), (grid, solver)


def test_grid_inpainting_and_callback_compose_with_guidance(edm):
    """condition=, guidance= (classifier-free: D = D_null + w (D_cond - D_null)) with a karras grid,
    a mask and a callback: the guided estimate drives the free coordinates, the known one is kept."""
    condition = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)

    def model(x, t, condition=None):
        shift = 0.0 if condition is None else condition.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return torch.zeros_like(x) + shift

    mask = torch.tensor([1.0, 0.0], dtype=torch.float64)
    known = torch.tensor([7.0, 0.0], dtype=torch.float64)
    steps = []
    result = ds.sample(model, latents(edm, (3, 2)), edm, 5, "euler", condition=condition, guidance=2.0,
                       discretization="karras", mask=mask, known=known, callback=lambda info: steps.append(info["i"]))
    assert steps == [0, 1, 2, 3, 4] and result.nfe == 2 * 5  # two evaluations per guided step
    assert torch.equal(result.samples[:, 0], torch.full((3,), 7.0, dtype=torch.float64))
    torch.testing.assert_close(result.samples[:, 1], 2.0 * condition, rtol=0, atol=1e-12)  # the last Euler step returns D
