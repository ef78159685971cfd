"""Conditional and guided sampling against the exact denoisers of a class-conditional Gaussian mixture.

The reference is written here, independently of the library: a float64 Heun integration of
``dx/dsigma = (x - D) / sigma`` with ``D = D_null + w (D_cond - D_null)`` computed from the
mixture's closed-form posterior means (Karras et al. 2022, Algorithm 1; Ho & Salimans 2022).
"""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

import diffusion_schemes as ds
from diffusion_schemes.errors import GuidanceError
from diffusion_schemes.conformance.mixture import ClassConditionalMixture, ExactX0, GaussianMixture, oracle_preconditioner

K = 3
MIX = ClassConditionalMixture(
    [0.5, 0.3, 0.2],
    [
        GaussianMixture([[-1.0, 0.0]], [0.3], [1.0]),
        GaussianMixture([[1.0, 1.0], [1.5, 0.5]], [0.2, 0.3], [0.5, 0.5]),
        GaussianMixture([[1.0, -1.0]], [0.25], [1.0]),
    ],
)
# A "bad version" of the model for autoguidance: the same classes, blurred.
BLURRED = ClassConditionalMixture([0.5, 0.3, 0.2], [GaussianMixture(c.means, c.stds * 2, c.weights) for c in MIX.classes])
BETA_D, BETA_MIN, M = 19.9, 0.1, 1000
B, STEPS = 64, 12


def vp_noise_level(t):
    """Karras et al. 2022, Table 1 (VP): sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)."""
    return torch.sqrt(torch.exp(0.5 * BETA_D * t**2 + BETA_MIN * t) - 1)


def edm_oracle(mixture=MIX):
    return oracle_preconditioner(
        lambda backbone: ds.create("preconditioner", "edm", model=backbone), mixture, lambda c: torch.exp(4 * c)
    )


def vp_oracle(mixture=MIX):
    return oracle_preconditioner(
        lambda backbone: ds.create(
            "preconditioner", {"name": "vp", "beta_d": BETA_D, "beta_min": BETA_MIN, "M": M}, model=backbone
        ),
        mixture,
        lambda c: vp_noise_level(c / (M - 1)),
    )


PAIRS = {"matched": edm_oracle, "mixed": vp_oracle}  # both on the EDM schedule


def one_hot(labels):
    return torch.nn.functional.one_hot(labels, K).to(torch.float64)


def heun_reference(denoise, x, sigmas):
    """Float64 Heun of dx/dsigma = (x - D(x, sigma)) / sigma, Euler on the last step."""
    x = x.to(torch.float64)
    sigmas = sigmas.to(torch.float64)
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = (x - denoise(x, s)) / s
        x_euler = x + (s_next - s) * d
        if s_next == 0:
            x = x_euler
        else:
            d_next = (x_euler - denoise(x_euler, s_next)) / s_next
            x = x + (s_next - s) * (d + d_next) / 2
    return x


def guided(w, condition, null=None, interval=None, rescale=0.0, guide_mixture=None):
    """The guided D of the design, from the closed forms."""

    def denoise(x, s):
        d_cond = MIX.denoise(x, s, condition)
        if interval is not None and not interval[0] <= float(s) <= interval[1]:
            return d_cond
        if guide_mixture is not None:
            d_null = guide_mixture.denoise(x, s, condition)
        else:
            d_null = MIX.denoise(x, s, null) if null is not None else MIX.denoise(x, s)
        d = d_null + w * (d_cond - d_null)
        if rescale:
            d = rescale * d * d_cond.std(1, keepdim=True) / d.std(1, keepdim=True) + (1 - rescale) * d
        return d

    return denoise


@pytest.fixture(scope="module")
def schedule():
    return ds.create("noise_schedule", "edm")


@pytest.fixture(scope="module")
def setup(schedule):
    g = torch.Generator().manual_seed(0)
    latents = schedule.init_latents((B, 2), generator=g, dtype=torch.float64)
    labels = torch.randint(0, K, (B,), generator=g)
    return latents, one_hot(labels)


class Counting(torch.nn.Module):
    """Counts the rows (samples) each call evaluates, around a model."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows, self.calls = model, 0, []

    def forward(self, x, t, condition=None):
        self.rows += x.shape[0]
        self.calls.append((x.shape[0], condition is None))
        return self.model(x, t, condition)


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("w", [0.5, 2.0, 4.0])
@pytest.mark.parametrize("null", ["tensor", "none"])
def test_guided_sampling_equals_float64_heun_of_the_guided_ode(schedule, setup, pair, w, null):
    latents, condition = setup
    null_condition = torch.zeros(1, K, dtype=torch.float64) if null == "tensor" else None
    result = ds.sample(PAIRS[pair](), latents, schedule, STEPS, condition=condition,
                       guidance=ds.Guidance(w, null_condition=null_condition))
    reference = heun_reference(guided(w, condition), latents, schedule.sigmas(STEPS))
    assert float((result.samples - reference).abs().max()) < 1e-9  # float64 throughout: measured below 1e-14
    assert result.nfe == 2 * (2 * STEPS - 1)


@pytest.mark.parametrize("pair", PAIRS)
def test_w1_is_conditional_sampling_and_w0_unconditional(schedule, setup, pair):
    latents, condition = setup
    model = PAIRS[pair]()
    conditional = ds.sample(model, latents, schedule, STEPS, condition=condition)
    unconditional = ds.sample(model, latents, schedule, STEPS)
    w1 = ds.sample(model, latents, schedule, STEPS, condition=condition, guidance=1.0)
    w0 = ds.sample(model, latents, schedule, STEPS, condition=condition, guidance=0.0)
    assert torch.equal(w1.samples, conditional.samples)
    assert torch.equal(w0.samples, unconditional.samples)
    assert w1.nfe == w0.nfe == conditional.nfe == 2 * STEPS - 1  # one evaluation each
    # and the conditional sampling is the float64 Heun of the conditional denoiser
    reference = heun_reference(lambda x, s: MIX.denoise(x, s, condition), latents, schedule.sigmas(STEPS))
    assert float((conditional.samples - reference).abs().max()) < 1e-9  # float64 throughout: measured below 1e-14
    # guidance moves samples: w = 3 differs from the conditional samples
    assert float((ds.sample(model, latents, schedule, STEPS, condition=condition, guidance=3.0).samples
                  - conditional.samples).abs().max()) > 1e-2


def test_interval_guides_only_inside_and_counts_one_evaluation_outside(schedule, setup):
    latents, condition = setup
    sigmas = schedule.sigmas(STEPS)
    interval = (0.5, 5.0)
    counting = Counting(ExactX0(MIX, schedule))
    result = ds.sample(counting, latents, schedule, STEPS, condition=condition,
                       guidance=ds.Guidance(2.5, interval=interval))
    reference = heun_reference(guided(2.5, condition, interval=interval), latents, sigmas)
    assert float((result.samples - reference).abs().max()) < 1e-9  # float64 throughout: measured below 1e-14
    # evaluations: Heun visits sigmas[i] for i < N and sigmas[i + 1] for i < N - 1
    visited = sigmas[:-1].tolist() + sigmas[1:-1].tolist()
    inside = sum(interval[0] <= s <= interval[1] for s in visited)
    assert 0 < inside < len(visited)
    assert result.nfe == len(visited) + inside == counting.rows // B


def test_interval_bounds_are_inclusive(schedule):
    sigma = torch.tensor(2.0, dtype=torch.float64)
    x = torch.randn(4, 2, dtype=torch.float64)
    condition = one_hot(torch.tensor([0, 1, 2, 1]))
    base = schedule.get_denoiser(x0_predictor=ExactX0(MIX, schedule), condition=condition)
    for interval, guided_expected in [((2.0, 3.0), True), ((1.0, 2.0), True), ((2.0000001, 3.0), False)]:
        d = ds.Guidance(3.0, interval=interval).bind(base, 4, schedule).x0_sigma(x, sigma)
        expected = guided(3.0, condition)(x, sigma) if guided_expected else MIX.denoise(x, sigma, condition)
        assert torch.allclose(d, expected, rtol=0, atol=1e-12), interval


@pytest.mark.parametrize("phi", [0.0, 0.7, 1.0])
def test_rescale_follows_its_formula(schedule, phi):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 2, generator=g, dtype=torch.float64) * 2
    condition = one_hot(torch.randint(0, K, (8,), generator=g))
    base = schedule.get_denoiser(x0_predictor=ExactX0(MIX, schedule), condition=condition)
    sigma = torch.tensor(0.8, dtype=torch.float64)
    d = ds.Guidance(4.0, rescale=phi).bind(base, 8, schedule).x0_sigma(x, sigma)
    # Lin et al. 2024, eq. 15-16 with torch.std's default (Bessel) correction over the non-batch dims
    d_cond, d_null = MIX.denoise(x, sigma, condition), MIX.denoise(x, sigma)
    cfg = d_null + 4.0 * (d_cond - d_null)
    std = lambda v: ((v - v.mean(1, keepdim=True)) ** 2).sum(1, keepdim=True).div(v.shape[1] - 1).sqrt()
    expected = phi * cfg * std(d_cond) / std(cfg) + (1 - phi) * cfg
    assert torch.allclose(d, expected, rtol=0, atol=1e-12)
    if phi == 1.0:  # fully rescaled: the conditional estimate's spread
        assert torch.allclose(std(d), std(d_cond), rtol=1e-10, atol=0)


def test_rescaled_sampling_matches_the_reference(schedule, setup):
    latents, condition = setup
    result = ds.sample(ExactX0(MIX, schedule), latents, schedule, STEPS, condition=condition,
                       guidance={"scale": 3.0, "rescale": 0.7})
    reference = heun_reference(guided(3.0, condition, rescale=0.7), latents, schedule.sigmas(STEPS))
    assert float((result.samples - reference).abs().max()) < 1e-9  # float64 throughout: measured below 1e-14


@pytest.mark.parametrize("pair", PAIRS)
def test_autoguidance_uses_the_guide_on_the_same_condition(schedule, setup, pair):
    latents, condition = setup
    guide = Counting(ExactX0(BLURRED, schedule))
    result = ds.sample(PAIRS[pair](), latents, schedule, STEPS, condition=condition,
                       guidance=ds.Guidance(2.0, guide=guide))
    reference = heun_reference(guided(2.0, condition, guide_mixture=BLURRED), latents, schedule.sigmas(STEPS))
    assert float((result.samples - reference).abs().max()) < 1e-9  # float64 throughout: measured below 1e-14
    assert result.nfe == 2 * (2 * STEPS - 1)
    assert all(rows == B and not no_condition for rows, no_condition in guide.calls)  # same condition, every time


def test_autoguidance_works_without_a_condition(schedule, setup):
    latents, _ = setup
    result = ds.sample(ExactX0(MIX, schedule), latents, schedule, STEPS, guidance=ds.Guidance(2.0, guide=ExactX0(BLURRED, schedule)))
    whole, blurred = MIX.whole, BLURRED.whole
    reference = heun_reference(
        lambda x, s: blurred.denoise(x, s) + 2.0 * (whole.denoise(x, s) - blurred.denoise(x, s)),
        latents, schedule.sigmas(STEPS),
    )
    assert float((result.samples - reference).abs().max()) < 1e-9  # float64 throughout: measured below 1e-14


def test_branches_that_concatenate_run_as_one_batch(schedule, setup):
    latents, condition = setup
    counting = Counting(ExactX0(MIX, schedule))
    result = ds.sample(counting, latents, schedule, STEPS, condition=condition,
                       guidance=ds.Guidance(2.0, null_condition=torch.zeros(K, dtype=torch.float64)[None]))
    assert [rows for rows, _ in counting.calls] == [2 * B] * (2 * STEPS - 1)  # one forward per evaluation
    assert result.nfe == counting.rows // B == 2 * (2 * STEPS - 1)  # still two evaluations per sample
    separate = Counting(ExactX0(MIX, schedule))
    unbatched = ds.sample(separate, latents, schedule, STEPS, condition=condition, guidance=2.0)  # null None
    assert [rows for rows, _ in separate.calls] == [B] * (2 * (2 * STEPS - 1))
    assert unbatched.nfe == result.nfe
    assert float((unbatched.samples - result.samples).abs().max()) < 1e-12


def test_tensordict_conditions_batch_too(schedule, setup):
    latents, condition = setup

    class TDModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.rows = ExactX0(MIX, schedule), []

        def forward(self, x, t, condition=None):
            self.rows.append(x.shape[0])
            return self.inner(x, t, None if condition is None else condition["label"])

    model = TDModel()
    td = TensorDict({"label": condition}, batch_size=[B])
    null = TensorDict({"label": torch.zeros(1, K, dtype=torch.float64)}, batch_size=[1])
    result = ds.sample(model, latents, schedule, STEPS, condition=td, guidance=ds.Guidance(2.0, null_condition=null))
    assert set(model.rows) == {2 * B}
    reference = heun_reference(guided(2.0, condition), latents, schedule.sigmas(STEPS))
    assert float((result.samples - reference).abs().max()) < 1e-9  # float64 throughout: measured below 1e-14


def test_condition_bound_in_get_denoiser_is_used(schedule, setup):
    latents, condition = setup
    denoiser = schedule.get_denoiser(x0_predictor=edm_oracle(), condition=condition)
    bound = ds.sample(denoiser, latents, schedule, STEPS, guidance=2.0)
    passed = ds.sample(edm_oracle(), latents, schedule, STEPS, condition=condition, guidance=2.0)
    assert torch.equal(bound.samples, passed.samples)
    with pytest.raises(ds.ConditionError, match="in one place"):
        ds.sample(denoiser, latents, schedule, STEPS, condition=condition)


# ---------------------------------------------------------------------------------------- bad input
def test_bad_guidance_input_gives_clear_errors(schedule, setup):
    latents, condition = setup
    model = ExactX0(MIX, schedule)
    with pytest.raises(ds.ConditionError, match="batch size is 3 but the latent's is 64"):
        ds.sample(model, latents, schedule, 2, condition=condition[:3], guidance=2.0)
    with pytest.raises(ds.ConditionError, match=r"null condition has shape \(1, 2\) but the condition \(64, 3\)"):
        ds.sample(model, latents, schedule, 2, condition=condition, guidance=ds.Guidance(2.0, null_condition=torch.zeros(1, 2)))
    with pytest.raises(ds.ConditionError, match="null condition's batch size is 5"):
        ds.sample(model, latents, schedule, 2, condition=condition, guidance=ds.Guidance(2.0, null_condition=torch.zeros(5, K)))
    for w in (float("inf"), float("nan")):
        with pytest.raises(GuidanceError, match="must be finite"):
            ds.sample(model, latents, schedule, 2, condition=condition, guidance=w)
    with pytest.raises(GuidanceError, match="sigma_lo <= sigma_hi"):
        ds.Guidance(2.0, interval=(3.0, 1.0))
    with pytest.raises(GuidanceError, match="rescale must be in"):
        ds.Guidance(2.0, rescale=1.5)
    with pytest.raises(GuidanceError, match="needs a condition"):
        ds.sample(model, latents, schedule, 2, guidance=2.0)
    with pytest.raises(GuidanceError, match="not both"):
        ds.Guidance(2.0, null_condition=torch.zeros(1, K), guide=model)
    with pytest.raises(GuidanceError, match="unknown guidance fields"):
        ds.sample(model, latents, schedule, 2, condition=condition, guidance={"scale": 2.0, "cfg": 1})
    with pytest.raises(TypeError, match="guidance must be"):
        ds.sample(model, latents, schedule, 2, condition=condition, guidance="2.0")
    with pytest.raises(GuidanceError, match="two values per sample"):
        ds.sample(lambda x, t, condition=None: x, latents[:, :1], schedule, 2, condition=condition,
                  guidance={"scale": 2.0, "rescale": 0.5})
    assert all(issubclass(e, ds.DiffusionSchemesError) and issubclass(e, ValueError)
               for e in (ds.ConditionError, GuidanceError))


@pytest.mark.parametrize("null", ["tensor", "none", "guide"])
def test_per_sample_noise_levels_guide_only_the_samples_inside_the_interval(schedule, null):
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    condition = one_hot(torch.tensor([0, 1, 2, 1]))
    sigma = torch.tensor([0.1, 1.0, 3.0, 10.0], dtype=torch.float64)
    counting = Counting(ExactX0(MIX, schedule))
    base = schedule.get_denoiser(x0_predictor=counting, condition=condition)
    options = {"tensor": {"null_condition": torch.zeros(1, K, dtype=torch.float64)}, "none": {},
               "guide": {"guide": ExactX0(BLURRED, schedule)}}[null]
    guided_denoiser = ds.Guidance(3.0, interval=(0.5, 5.0), **options).bind(base, 4, schedule)
    d = guided_denoiser.x0_sigma(x, sigma)
    inside = torch.tensor([False, True, True, False])
    for i in range(4):
        s = sigma[i : i + 1]
        expected = (guided(3.0, condition[i : i + 1], guide_mixture=BLURRED if null == "guide" else None)(x[i : i + 1], s)
                    if inside[i] else MIX.denoise(x[i : i + 1], s, condition[i : i + 1]))
        assert torch.allclose(d[i : i + 1], expected, rtol=0, atol=1e-12), i
    assert guided_denoiser.evaluations == 2  # the samples inside cost two evaluations


@pytest.mark.parametrize("solver", sorted(info.name for info in ds.list_schemes("solver")))
def test_every_solver_reports_the_guided_evaluations_it_made(schedule, setup, solver):
    latents, condition = setup
    plain, guided_model = Counting(ExactX0(MIX, schedule)), Counting(ExactX0(MIX, schedule))
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    unguided = ds.sample(plain, latents, schedule, 6, solver=solver, condition=condition, generator=g())
    result = ds.sample(guided_model, latents, schedule, 6, solver=solver, condition=condition, generator=g(),
                       guidance=ds.Guidance(2.0, null_condition=torch.zeros(1, K, dtype=torch.float64)))
    assert unguided.nfe == plain.rows // B  # the solver's own count is the calls it made
    assert result.nfe == guided_model.rows // B == 2 * len(guided_model.calls)  # batched: one call, two evaluations


# ------------------------------------------------------- the interval decided without reading the device

SOLVERS = sorted(info.name for info in ds.list_schemes("solver"))
#: Solvers whose every evaluation level the host knows exactly (the grid's own levels; dpm_adaptive makes its
#: levels from host values): each evaluation is decided on the host, at the rule's cost.
EXACT_LEVELS = {"euler", "heun", "euler_ancestral", "euler_maruyama", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde",
                "unipc", "dpm_adaptive"}


def interval_rule(w, condition, interval):
    """The reference: per evaluation, the noise level read on the host and compared with the interval."""
    def model(x, t):
        s = t.reshape(-1)[0]  # EDM's time is the noise level; one level per evaluation in a solver
        inside = interval[0] <= float(s) <= interval[1]
        model.evaluations += 2 if inside else 1
        return guided(w, condition, interval=interval)(x, s)

    model.evaluations = 0
    return model


@pytest.mark.parametrize("solver", SOLVERS)
def test_interval_gives_the_samples_of_the_per_evaluation_rule_on_every_solver(schedule, setup, solver):
    latents, condition = setup
    interval = (0.5, 5.0)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    counting = Counting(ExactX0(MIX, schedule))
    result = ds.sample(counting, latents, schedule, 6, solver=solver, condition=condition, generator=g(),
                       guidance=ds.Guidance(2.5, interval=interval))
    rule = interval_rule(2.5, condition, interval)
    reference = ds.sample(rule, latents, schedule, 6, solver=solver, generator=g())
    assert float((result.samples - reference.samples).abs().max()) < 1e-12  # float64 throughout: measured 0
    assert result.nfe == counting.rows // B  # the count is what was evaluated
    if solver in EXACT_LEVELS:
        assert result.nfe == rule.evaluations  # one evaluation outside the interval, two inside
    else:  # a derived level near a bound costs both branches; none costs less than the rule
        assert rule.evaluations <= result.nfe


def bound_denoiser(schedule, condition):
    return ds.Guidance(3.0, interval=(1.0, 2.0)).bind(
        schedule.get_denoiser(x0_predictor=Counting(ExactX0(MIX, schedule)), condition=condition), 4, schedule)





@pytest.mark.parametrize(("levels", "sigma", "inside", "evaluations"), [
    ("known", 1.5, True, 2), ("known", 3.0, False, 1),            # a level the loop named: decided exactly
    ("bounds", 1.5, True, 2), ("bounds", 2.5, False, 1),          # a derived level, bounds wholly on one side
    ("straddle", 1.5, True, 2), ("straddle", 2.5, False, 2),      # bounds across 2.0: both branches, where
    ("none", 2.5, False, 2),                                      # outside a loop: both branches, where
])
def test_the_side_of_an_evaluation_follows_what_the_loop_said(schedule, levels, sigma, inside, evaluations):
    from diffusion_schemes.solvers import StepLevels

    condition = one_hot(torch.tensor([0, 1, 2, 1]))
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    level = torch.tensor(sigma, dtype=torch.float64)
    denoiser = bound_denoiser(schedule, condition)
    said = {"known": StepLevels(((level, sigma),), None, torch.float64),
            "bounds": StepLevels((), (sigma * 0.9, sigma * 1.1), torch.float64),
            "straddle": StepLevels((), (1.2, 2.6), torch.float64), "none": None}[levels]
    denoiser.enter_step(said)
    d = denoiser.x0_sigma(x, level)
    expected = guided(3.0, condition)(x, level) if inside else MIX.denoise(x, level, condition)
    assert torch.allclose(d, expected, rtol=0, atol=1e-12)
    assert denoiser.evaluations == evaluations == denoiser.base.predictor.rows // 4


def test_a_sampling_run_leaves_no_step_said_behind(schedule, setup):
    """After a run the guided denoiser knows no step: a later call may not reuse the last step's bounds."""
    from diffusion_schemes.solvers import StepLevels

    condition = one_hot(torch.tensor([0, 1, 2, 1]))
    denoiser = bound_denoiser(schedule, condition)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    seen = []
    denoiser.enter_step(StepLevels((), (0.1, 0.2), torch.float64))  # a stale "wholly outside" step
    ds.create("solver", "euler")(denoiser, x, torch.tensor([3.0, 0.0], dtype=torch.float64),
                                 callback=lambda info: seen.append(info["i"]))
    assert seen == [0] and denoiser._levels is None
    level = torch.tensor(1.5, dtype=torch.float64)  # inside: decided on the device, not by the stale bounds
    assert torch.allclose(denoiser.x0_sigma(x, level), guided(3.0, condition)(x, level), rtol=0, atol=1e-12)
