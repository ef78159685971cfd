"""No silent failure in ``ds.sample``: non-finite results reported, user callables checked, half precision.

Each test names one case of issue 25 and fails when that case goes back to a silent NaN, a raw
torch or Python error, or a result in the wrong dtype.
"""

from __future__ import annotations

import math

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes.conformance.mixture import ExactX0, GaussianMixture, oracle_preconditioner
from diffusion_schemes.errors import (
    ArgumentTypeError,
    ConditionError,
    DiffusionSchemesError,
    InvalidArgumentError,
    ModelOutputError,
    ModelSignatureError,
    NonFiniteSamplesError,
    SamplingError,
)
from diffusion_schemes.sampling import Denoiser
from diffusion_schemes.sampling.sampler import MAX_NUM_STEPS

MIX = GaussianMixture(means=[[-1.0, 0.5], [1.0, -0.5]], stds=[0.3, 0.2])
ODE_SOLVERS = ("euler", "heun", "dpmpp_2m", "lms", "unipc", "dpm_adaptive")
STOCHASTIC = ("euler_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde", "edm_stochastic_heun", "euler_maruyama")


@pytest.fixture
def edm():
    return ds.create("noise_schedule", "edm")


def latents(schedule, shape=(8, 2), seed=0, dtype=torch.float32):
    return schedule.init_latents(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def zero(x, t, condition=None):
    return torch.zeros_like(x)


# ---------------------------------------------------------------------------------------- non-finite results


@pytest.mark.parametrize("solver", ["euler", "heun", "dpmpp_2m", "euler_ancestral"])
def test_a_model_turning_nan_is_reported_at_its_first_step(edm, solver):
    """The model returns NaN below noise level 1; the error names the first step that evaluates there."""
    def model(x, t):
        return torch.where((t < 1).reshape(-1, 1), float("nan"), 0.0).expand_as(x).to(x.dtype)

    grid = edm.sigmas(10)
    # the steps' evaluation points: grid[i] for all; Heun also grid[i + 1] except on the step to 0
    evaluated = [[float(grid[i])] + ([float(grid[i + 1])] if solver == "heun" and i < 9 else []) for i in range(10)]
    expected = next(i for i, levels in enumerate(evaluated) if min(levels) < 1)
    with pytest.raises(NonFiniteSamplesError) as caught:
        ds.sample(model, latents(edm), edm, 10, solver=solver, generator=torch.Generator().manual_seed(0))
    assert caught.value.step == expected and caught.value.cause == "denoised"
    assert f"step {expected} " in str(caught.value) and "model's output" in str(caught.value)
    assert isinstance(caught.value, SamplingError) and torch.isnan(caught.value.samples).any()


def test_the_first_bad_step_is_named_in_a_run_longer_than_one_record_chunk(edm):
    """Past ``FiniteWatch.CHUNK`` values the record is folded on the device; the named step stays exact."""
    from diffusion_schemes.sampling.sampler import FiniteWatch

    steps = 400  # Euler: 400 model outputs and 400 states, three chunks and a tail
    grid = edm.sigmas(steps)
    expected = next(i for i in range(steps) if float(grid[i]) < 0.05)  # the first step evaluating below 0.05
    assert 2 * steps > 2 * FiniteWatch.CHUNK and expected > FiniteWatch.CHUNK // 2  # a folded value is the bad one

    def model(x, t):
        return torch.where((t < 0.05).reshape(-1, 1), float("nan"), 0.0).expand_as(x).to(x.dtype)

    with pytest.raises(NonFiniteSamplesError) as caught:
        ds.sample(model, latents(edm), edm, steps, solver="euler")
    assert (caught.value.step, caught.value.cause) == (expected, "denoised")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_finite_values_are_not_reported(edm, dtype):
    """The record reduces each value to its minimum and maximum, which cannot overflow: values next to the
    dtype's largest pass (a sum of them would be infinite)."""
    big = torch.full((8, 2), torch.finfo(dtype).max / 2, dtype=dtype)
    result = ds.sample(lambda x, t: x, big, edm, 4, solver="euler")  # D = x: the state stays where it is
    assert torch.equal(result.samples, big)


def test_a_noise_sampler_returning_nan_is_named(edm):
    calls = []

    def noise_sampler(sigma, sigma_next):
        calls.append(1)
        noise = torch.zeros(8, 2)
        return noise.fill_(float("nan")) if len(calls) == 3 else noise  # the third draw: step 2

    with pytest.raises(NonFiniteSamplesError) as caught:
        ds.sample(zero, latents(edm), edm, 6, solver="euler_ancestral", noise_sampler=noise_sampler)
    assert (caught.value.step, caught.value.cause) == (2, "noise")
    assert "noise_sampler" in str(caught.value)


def test_an_overflowing_solver_state_is_told_from_the_model(edm):
    """A finite model and finite latents whose Euler step ``x + (s' - s)(x - D)/s`` exceeds float32."""
    big = torch.full((2, 2), 3e38)
    with pytest.raises(NonFiniteSamplesError) as caught:
        ds.sample(lambda x, t: -x, big, edm, sigmas=[2.0, 1.0, 0.0], solver="euler")
    assert (caught.value.step, caught.value.cause) == (0, "state")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_latents_are_refused_before_any_evaluation(edm, value):
    calls = []
    x = latents(edm)
    x[3, 1] = value
    with pytest.raises(SamplingError, match="latents hold NaN or inf"):
        ds.sample(lambda x, t: calls.append(1) or x, x, edm, 4)
    assert calls == []


def test_check_finite_false_returns_the_raw_samples(edm):
    x = latents(edm)
    x[0, 0] = float("nan")
    result = ds.sample(zero, x, edm, 4, solver="euler", check_finite=False)
    assert torch.isnan(result.samples[0, 0]) or result.samples[0, 0] == 0  # Euler's last step returns D = 0
    nan_model = ds.sample(lambda x, t: torch.full_like(x, float("nan")), latents(edm), edm, 4, check_finite=False)
    assert torch.isnan(nan_model.samples).all()


def test_huge_guidance_scale_ends_in_the_non_finite_error(edm):
    """Scale 1e20 on a branch difference of 3 puts |D| near 3e20; the first Heun step's second evaluation
    then squares an input of that size, past float32's 3.4e38 (a network's layers overflow the same way)."""
    def model(x, t, condition=None):
        quadratic = x * x
        return quadratic if condition is None else quadratic + condition.expand_as(x) * 3.0

    condition = torch.ones(8, 1)
    with pytest.raises(NonFiniteSamplesError, match="guidance scale 1e\\+20") as caught:
        ds.sample(model, latents(edm), edm, 6, condition=condition, guidance=1e20)
    assert caught.value.cause == "denoised" and caught.value.step == 0


def test_dpm_adaptive_stops_on_nan_instead_of_shrinking_its_step_forever(edm):
    model = lambda x, t: torch.where((t < 5).reshape(-1, 1), float("nan"), 0.0).expand_as(x)  # noqa: E731
    with pytest.raises(NonFiniteSamplesError) as caught:
        ds.sample(model, latents(edm), edm, 10, solver="dpm_adaptive")
    assert caught.value.cause == "denoised"


def _nan_where_far(x, t):
    """D = 0, but NaN for the whole batch once some element lies beyond 2.2 noise levels: on an ancestral path of
    D = 0 every x / sigma is standard normal, so the first step this happens at depends on the noise drawn."""
    far = (x.abs() > 2.2 * t.reshape(-1, 1)).any()
    return torch.where(far, float("nan"), 0.0) * torch.ones_like(x)


@pytest.mark.parametrize("seeded", ["generator", "per-sample generators", "global"])
def test_a_stochastic_run_is_replayed_with_the_same_noise_to_name_its_first_bad_step(edm, seeded):
    """An unwatched run that ends non-finite is run again from the same latents and the same noise, watched;
    the step it names is the one a run watched from the start names (a callback of the user's makes one)."""
    named = []
    for seed in range(6):
        x = latents(edm, seed=seed)

        def run(**extra):
            if seeded == "global":
                torch.manual_seed(100 + seed)
                gen = None
            elif seeded == "generator":
                gen = torch.Generator().manual_seed(100 + seed)
            else:
                gen = [torch.Generator().manual_seed(100 * seed + i) for i in range(x.shape[0])]
            with pytest.raises(NonFiniteSamplesError) as caught:
                ds.sample(_nan_where_far, x, edm, 12, solver="euler_ancestral", generator=gen, **extra)
            return caught.value.step, caught.value.cause

        watched = run(callback=lambda info: None)
        assert run() == watched and watched[1] == "denoised"
        named.append(watched[0])
    assert len(set(named)) > 1  # the step depends on the noise: a replay with other noise would name another


def test_a_model_that_is_not_deterministic_is_named_when_the_replay_stays_finite(edm):
    calls = []

    def flaky(x, t):  # NaN on its fifth call only
        calls.append(1)
        return torch.full_like(x, float("nan") if len(calls) == 5 else 0.0)

    with pytest.raises(NonFiniteSamplesError, match="re-run from the same latents and noise stayed finite") as caught:
        ds.sample(flaky, latents(edm), edm, 6, solver="heun")
    assert (caught.value.step, caught.value.cause) == (None, "unknown")
    assert len(calls) == 2 * 11  # the run and its replay, 11 evaluations each


@pytest.mark.parametrize("solver", ["heun", "euler_ancestral", "dpmpp_2m_sde"])
def test_a_finite_run_reduces_its_latents_and_its_samples_once_whatever_the_step_count(edm, monkeypatch, solver):
    """With nothing of the user's in the loop but the model, no value is watched per step: the check costs one
    reduction of the latents before the first step and one of the samples after the last (a sum each; the
    extremes are read only for a sum that is not finite)."""
    originals, count = (torch.aminmax, torch.Tensor.sum), {"aminmax": 0, "sum": 0}

    def counting(name, original):
        def call(*args, **kwargs):
            count[name] += 1
            return original(*args, **kwargs)
        return call

    monkeypatch.setattr(torch, "aminmax", counting("aminmax", originals[0]))
    monkeypatch.setattr(torch.Tensor, "sum", counting("sum", originals[1]))
    for steps in (5, 40):
        count.update(aminmax=0, sum=0)
        ds.sample(zero, latents(edm), edm, steps, solver=solver, generator=torch.Generator().manual_seed(0))
        assert count == {"aminmax": 0, "sum": 2}, steps


def test_finite_values_whose_sum_overflows_are_finite_and_an_infinity_among_them_is_not(edm):
    """The check sums the values: a sum that overflows to inf from finite values must not be taken for an
    infinity among them (its extremes decide), in the latents and in the samples."""
    big = torch.full((2, 2), 3e38)  # finite in float32; any two of them sum to inf
    assert not torch.isfinite(big.sum())
    identity = lambda x, t: x  # noqa: E731
    result = ds.sample(identity, big, edm, 3, solver="euler")
    assert torch.isfinite(result.samples).all()
    big[1, 0] = float("inf")
    with pytest.raises(SamplingError, match="the latents hold NaN or inf"):
        ds.sample(identity, big, edm, 3, solver="euler")


HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


def count_host_reads(monkeypatch, run):
    """How many times ``run()`` reads a tensor's value on the host (the methods that synchronise a device)."""
    count = [0]
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            count[0] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    try:
        run()
    finally:
        monkeypatch.undo()
    return count[0]


@pytest.mark.parametrize("solver", ["heun", "euler_ancestral", "dpmpp_2m_sde"])
def test_the_finite_watch_reads_the_device_once_per_call_not_per_step(edm, monkeypatch, solver):
    """The host reads of a call do not grow with the number of steps: the checks are once per call."""
    x = latents(edm)
    mask, known = torch.tensor([1.0, 0.0]), torch.tensor([0.5, float("nan")])
    noise = lambda s, s_next: torch.zeros(8, 2)  # noqa: E731

    class Zero(Denoiser):  # no schedule in the loop: its CPU-only domain checks read values by design
        def x0_sigma(self, x, sigma):
            return torch.zeros_like(x)

    denoiser = Zero(edm, zero, "x0")

    def run(steps):
        return lambda: ds.sample(denoiser, x, edm, steps, solver=solver, mask=mask, known=known,
                                 noise_sampler=noise, callback=lambda info: None)

    few, many = count_host_reads(monkeypatch, run(15)), count_host_reads(monkeypatch, run(45))
    assert few == many


# ---------------------------------------------------------------------------------------- half precision


def half_predictors(schedule):
    precond = oracle_preconditioner(lambda m: ds.create("preconditioner", "edm", model=m), MIX, lambda c: (4 * c).exp())
    return {"x0 model": ExactX0(MIX, schedule), "edm preconditioner": precond}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("solver", ODE_SOLVERS)
def test_half_precision_matches_its_float32_twin(edm, dtype, solver):
    """The model sees (and returns) half precision, the solver works in float32: the samples differ from
    the float32 run by a few roundings of the model's input and output, each half an ulp (eps / 2) of
    values of order 1 (measured: 1.5 to 3.7 eps over these solvers and both models)."""
    eps = torch.finfo(dtype).eps
    x = latents(edm, (256, 2), dtype=dtype)
    for name, model in half_predictors(edm).items():
        half = ds.sample(model, x, edm, 18, solver=solver)
        full = ds.sample(model, x.float(), edm, 18, solver=solver)
        assert half.samples.dtype == dtype and bool(torch.isfinite(half.samples).all()), name
        scale = max(1.0, float(full.samples.abs().max()))
        assert float((half.samples.float() - full.samples).abs().max()) <= 8 * eps * scale, name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("solver", STOCHASTIC)
def test_half_precision_stochastic_solvers_stay_finite_on_edm(edm, dtype, solver):
    x = latents(edm, (256, 2), dtype=dtype)
    for name, model in half_predictors(edm).items():
        result = ds.sample(model, x, edm, 18, solver=solver, generator=torch.Generator().manual_seed(1))
        assert result.samples.dtype == dtype and bool(torch.isfinite(result.samples).all()), name


@pytest.mark.parametrize("prediction", ["score", "v", "epsilon"])
def test_float16_conversions_run_in_float32_where_sigma_squared_exceeds_float16(prediction):
    """VE at sigma_max = 348 (Song et al. 2021's CelebA-HQ): sigma^2 = 121104 is inf in float16 (max 65504).
    The exact predictors of N(0, I) data (D = x / (1 + sigma^2)) must sample to the float32 result."""
    schedule = ds.create("noise_schedule", {"name": "ve", "sigma_max": 348.0})

    def exact(x, t):
        sigma = t.reshape(-1, 1).to(torch.float32)
        xf = x.float()
        d = xf / (1 + sigma**2)
        out = {"score": (d - xf) / sigma**2, "epsilon": (xf - d) / sigma,
               "v": (xf - d) / sigma / (1 + sigma**2).sqrt() - sigma * d / (1 + sigma**2).sqrt()}[prediction]
        return out.to(x.dtype)

    denoiser = schedule.get_denoiser(**{f"{prediction}_predictor": exact})
    x = latents(schedule, (64, 2), dtype=torch.float16)
    half = ds.sample(denoiser, x, schedule, 18, solver="heun")
    full = ds.sample(denoiser, x.float(), schedule, 18, solver="heun")
    assert bool(torch.isfinite(half.samples).all())
    assert float((half.samples.float() - full.samples).abs().max()) <= 8 * torch.finfo(torch.float16).eps * max(
        1.0, float(full.samples.abs().max()))


def test_the_solver_state_is_float32_for_half_latents(edm):
    seen = []
    result = ds.sample(zero, latents(edm, dtype=torch.bfloat16), edm, 3, solver="heun",
                       callback=lambda info: seen.append(info["x"].dtype))
    assert seen == [torch.float32] * 3 and result.samples.dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------- user callables


@pytest.mark.parametrize("returned", [
    lambda: torch.zeros(1, 2),                      # broadcasts: every sample would share it
    lambda: torch.zeros(8, 1),
    lambda: None,                                   # would add no noise
    lambda: torch.zeros(8, 2, dtype=torch.float64),  # would turn the samples into float64
    lambda: torch.zeros(8, 2).numpy(),
])
def test_a_noise_sampler_of_the_wrong_kind_is_named(edm, returned):
    with pytest.raises(SamplingError, match=r"noise_sampler returned .* shape \(8, 2\), torch.float32"):
        ds.sample(zero, latents(edm), edm, 4, solver="euler_ancestral", noise_sampler=lambda s, n: returned())


def test_the_solver_called_directly_checks_the_noise_sampler_too(edm):
    solver = ds.create("solver", "euler_ancestral")
    with pytest.raises(SamplingError, match="noise_sampler returned"):
        solver(edm.get_denoiser(x0_predictor=zero), latents(edm), edm.sigmas(3), noise_sampler=lambda s, n: torch.zeros(1, 2))


@pytest.mark.parametrize("bad", [3, "callback"])
def test_a_callback_that_is_not_callable_is_refused_up_front(edm, bad):
    with pytest.raises(ArgumentTypeError, match="callback must be callable"):
        ds.sample(zero, latents(edm), edm, 4, callback=bad)
    with pytest.raises(ArgumentTypeError, match="noise_sampler must be callable"):
        ds.sample(zero, latents(edm), edm, 4, noise_sampler=bad)


def test_a_callback_s_own_exception_propagates_unchanged(edm):
    class Stop(Exception):
        pass

    def callback(info):
        if info["i"] == 2:
            raise Stop("user stop")

    with pytest.raises(Stop, match="user stop"):
        ds.sample(zero, latents(edm), edm, 5, callback=callback)


def test_a_guide_model_of_the_wrong_shape_is_named(edm):
    guide = lambda x, t, condition=None: torch.zeros(1, x.shape[1])  # noqa: E731
    with pytest.raises(ModelOutputError, match=r"guide model \(x0_predictor\) returned shape \(1, 2\)"):
        ds.sample(zero, latents(edm), edm, 3, guidance={"scale": 2.0, "guide": guide})


def test_a_model_returning_integers_or_another_device_is_named(edm):
    with pytest.raises(ModelOutputError, match="torch.int64"):
        ds.sample(lambda x, t: torch.zeros(x.shape, dtype=torch.long), latents(edm), edm, 3)
    meta = lambda x, t: torch.zeros(x.shape, device="meta")  # noqa: E731
    with pytest.raises(ModelOutputError, match="on meta"):
        ds.sample(meta, latents(edm), edm, 3)


def test_a_condition_on_another_device_is_named(edm):
    with pytest.raises(ConditionError, match="condition is on meta"):
        ds.sample(zero, latents(edm), edm, 3, condition=torch.zeros(8, 1, device="meta"))


def test_a_model_in_float64_keeps_the_samples_float32(edm):
    result = ds.sample(lambda x, t: torch.zeros(x.shape, dtype=torch.float64), latents(edm), edm, 3)
    assert result.samples.dtype == torch.float32


# ---------------------------------------------------------------------------------------- sampling and guidance


def test_rescale_of_an_estimate_without_spread_is_no_nan(edm):
    """Lin et al.'s rescale divides by std(D); a constant guided estimate (std 0) is left as it is."""
    def model(x, t, condition=None):
        return torch.full_like(x, 0.5) if condition is None else torch.full_like(x, 1.0)

    result = ds.sample(model, latents(edm), edm, 4, condition=torch.ones(8, 1),
                       guidance={"scale": 3.0, "rescale": 0.7})
    assert torch.allclose(result.samples, torch.full((8, 2), 0.5 + 3.0 * (1.0 - 0.5)))


def test_nan_in_known_where_mask_is_zero_does_not_reach_the_generated_region(edm):
    mask = torch.tensor([1.0, 0.0])
    known = torch.tensor([0.25, float("nan")])
    result = ds.sample(lambda x, t: torch.full_like(x, 0.75), latents(edm), edm, 6, mask=mask, known=known)
    assert torch.equal(result.samples[:, 0], torch.full((8,), 0.25))
    assert torch.allclose(result.samples[:, 1], torch.full((8,), 0.75))


def test_nan_in_known_where_mask_keeps_it_is_refused(edm):
    with pytest.raises(SamplingError, match="known holds NaN or inf where mask is above 0"):
        ds.sample(zero, latents(edm), edm, 3, mask=torch.tensor([1.0, 0.0]), known=torch.tensor([float("nan"), 0.0]))


def test_a_float_null_condition_next_to_integer_labels_is_an_error(edm):
    labels = torch.arange(8) % 3
    with pytest.raises(ConditionError, match="null condition has dtype torch.float32 but the condition torch.int64"):
        ds.sample(zero, latents(edm), edm, 3, condition=labels,
                  guidance={"scale": 2.0, "null_condition": torch.tensor([3.0])})
    ds.sample(zero, latents(edm), edm, 3, condition=labels, guidance={"scale": 2.0, "null_condition": torch.tensor([3])})


def test_solver_options_naming_another_solver_is_an_error(edm):
    with pytest.raises(InvalidArgumentError, match="solver_options names the solver 'euler' but solver is 'heun'"):
        ds.sample(zero, latents(edm), edm, 3, solver="heun", solver_options={"name": "euler"})
    assert ds.sample(zero, latents(edm), edm, 3, solver="heun", solver_options={"name": "heun"}).nfe == 5


@pytest.mark.parametrize(("typed", "solver", "grid"), [
    ("dpmpp_2m_karras", "dpmpp_2m", "karras"),
    ("dpmpp_2m_sde_karras", "dpmpp_2m_sde", "karras"),
    ("DPM++ 2M Karras", "dpmpp_2m", "karras"),
    ("euler_a", "euler_ancestral", None),
    ("k_lms_ka", "lms", "karras"),
    ("dpm2_a", "dpm_2_ancestral", None),
])
def test_a1111_and_k_diffusion_sampler_names_get_our_solver_and_grid(edm, typed, solver, grid):
    with pytest.raises(ds.UnknownSchemeError) as caught:
        ds.sample(zero, latents(edm), edm, 3, solver=typed)
    expected = f"solver={solver!r}" + (f", discretization={grid!r}" if grid else "")
    assert expected in str(caught.value)
    ds.sample(zero, latents(edm), edm, 3, solver=solver, discretization=grid)  # the hint works as written


def test_a_sampler_we_do_not_have_is_said_so(edm):
    with pytest.raises(ds.UnknownSchemeError, match="DPM-Solver\\+\\+ SDE .* is not built in.*dpmpp_2s_ancestral"):
        ds.create("solver", "dpmpp_sde")


# ---------------------------------------------------------------------------------------- raw errors


def test_a_step_count_that_cannot_fit_is_refused_naming_the_limit(edm):
    with pytest.raises(SamplingError, match=f"limit of {MAX_NUM_STEPS:,} steps"):
        ds.sample(zero, latents(edm), edm, 10**12)


@pytest.mark.parametrize("sigmas", ["80, 1, 0", "abc", b"\x00"])
def test_a_string_grid_is_a_sampling_error(edm, sigmas):
    with pytest.raises(SamplingError):
        ds.sample(zero, latents(edm), edm, sigmas=sigmas)


def test_a_module_whose_signature_reads_args_kwargs_gets_the_signature_error(edm):
    """``nn.Module.__call__`` reads ``(*args, **kwargs)``: the preconditioner's call of the backbone fails in
    binding, before any of the module's code runs, and that is what the error says."""
    precond = ds.create("preconditioner", "edm", model=torch.nn.Linear(2, 2))
    with pytest.raises(ModelSignatureError, match="backbone cannot be called as model\\(x, t, condition=...\\)"):
        precond(torch.zeros(3, 2), torch.ones(3))

    class Forwarding(torch.nn.Module):  # forward's own signature hides the inner one: the failed call decides
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Linear(2, 2)

        def forward(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

    with pytest.raises(TypeError) as raised:  # raised inside forward: the model's own error, unchanged
        ds.create("preconditioner", "edm", model=Forwarding())(torch.zeros(3, 2), torch.ones(3))
    assert not isinstance(raised.value, DiffusionSchemesError)


def test_a_type_error_from_inside_a_fitting_model_propagates_unchanged(edm):
    def model(x, t, condition=None):
        return torch.zeros_like(x) + "text"

    with pytest.raises(TypeError) as raised:
        ds.sample(model, latents(edm), edm, 2)
    assert not isinstance(raised.value, DiffusionSchemesError)


@pytest.mark.parametrize(("spec", "field"), [
    ({"name": "edm", "sigma_data": True}, "sigma_data"),
    ({"name": "ve", "sigma_max": False}, "sigma_max"),
])
def test_booleans_are_not_numbers_in_schedule_specs(spec, field):
    with pytest.raises(ds.SchemeConfigError, match=f"{field}: a boolean is not a number"):
        ds.create("noise_schedule", spec)


def test_no_float_or_int_field_of_any_installed_spec_takes_a_boolean():
    """Every number field of every installed scheme, found from the specs themselves."""
    from diffusion_schemes.specs.base import _wants_number_not_bool

    checked = 0
    for info in ds.registry.infos():
        for name, field in info.spec.model_fields.items():
            if name != "name" and _wants_number_not_bool(field.annotation):
                with pytest.raises(ds.SchemeConfigError, match="a boolean is not a number"):
                    ds.parse_spec(info.kind, {"name": info.name, name: True})
                checked += 1
    assert checked >= 20
    assert ds.parse_spec("solver", {"name": "dpmpp_2m", "lower_order_final": True}).lower_order_final is True
