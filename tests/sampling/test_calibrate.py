"""``calibrate_sigmas`` and the ``explicit`` discretization.

The calibration is judged where the answer is known independently: the exact denoiser of a ring of
8 Gaussians (float64, ``gaussian_mixture.py``), whose probability-flow ODE is solved to convergence
by Heun on 1024 steps; the calibrated grid is fitted on one seed's latents and measured on
another's, against k-diffusion's most accurate deterministic sampler on its own grids at the same
budget (``kdiffusion_best.py``; k-diffusion is the oracle only).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes import conformance
from diffusion_schemes.cli import main as cli
from diffusion_schemes.conformance.mixture import ExactX0, GaussianMixture
from benchmarks.kdiffusion_best import best as kdiffusion_best
from benchmarks.kdiffusion_best import error as mean_distance


def ring(k: int = 8, radius: float = 1.0, std: float = 0.1) -> GaussianMixture:
    angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    return GaussianMixture(radius * torch.stack([angles.cos(), angles.sin()], 1), torch.full((k,), std), torch.ones(k))


RING = ring()
EDM = ds.create("noise_schedule", "edm")  # time = noise level: the mixture's denoiser takes it as it is


def ends(schedule) -> tuple[float, float]:
    grid = schedule.sigmas(2).to(torch.float64)
    return float(grid[0]), float(grid[1])


def latents(schedule, n: int, seed: int) -> torch.Tensor:
    return ends(schedule)[0] * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def converged(denoiser, x: torch.Tensor, hi: float, lo: float, steps: int = 1024) -> torch.Tensor:
    """Heun on ``steps`` steps even in log sigma from ``hi`` to ``lo``, then the denoised estimate at ``lo``."""
    fine = torch.exp(torch.linspace(math.log(hi), math.log(lo), steps, dtype=torch.float64))
    return ds.create("solver", "heun")(denoiser, x.clone(), torch.cat([fine, fine.new_zeros(1)]))[0]


# ---------------------------------------------------------------------- the done-criterion of issue 26


@pytest.mark.slow
@pytest.mark.parametrize("schedule_name", ["edm", "vp"])
def test_calibrated_grid_halves_the_error_of_k_diffusions_best_on_new_latents(schedule_name):
    schedule = ds.create("noise_schedule", schedule_name)
    denoiser = EDM.get_denoiser(x0_predictor=lambda x, t: RING.denoise(x, t))
    hi, lo = ends(schedule)
    fit, held_out = latents(schedule, 128, seed=1), latents(schedule, 256, seed=2)
    reference = converged(denoiser, held_out, hi, lo)
    for budget in (10, 20):
        result = ds.calibrate_sigmas(denoiser, fit, schedule, budget, "dpmpp_2m", reference_steps=256)
        assert float(result.sigmas[0]) == hi and float(result.sigmas[-2]) == lo  # the ends are kept
        ours = ds.sample(denoiser, held_out, schedule, sigmas=result.sigmas, solver="dpmpp_2m")
        assert ours.nfe == budget
        label, theirs = kdiffusion_best(RING.denoise, held_out, reference, lo, hi, budget, vp=schedule_name == "vp")
        assert mean_distance(ours.samples, reference) <= 0.5 * theirs, (budget, label, theirs, str(result))


# ---------------------------------------------------------------------- what the calibration reports


def test_report_measures_before_and_after_and_counts_every_evaluation():
    denoiser = EDM.get_denoiser(x0_predictor=lambda x, t: RING.denoise(x, t))
    x = latents(EDM, 64, seed=3)
    calls = []
    counting = EDM.get_denoiser(x0_predictor=lambda x, t: (calls.append(1), RING.denoise(x, t))[1])
    result = ds.calibrate_sigmas(counting, x, EDM, 6, "dpmpp_2m", reference_steps=100)
    assert result.model_evaluations == len(calls)
    assert result.backward_passes >= 1 and result.seconds > 0 and result.reference_steps == 100
    assert torch.equal(result.initial_sigmas, EDM.sigmas(6).to(torch.float64))
    # before and after are what the solver gives on each grid against the same 100-step reference
    hi, lo = ends(EDM)
    reference = converged(denoiser, x, hi, lo, steps=100)
    solver = ds.create("solver", "dpmpp_2m")
    before = mean_distance(solver(denoiser, x.clone(), EDM.sigmas(6).to(torch.float64))[0], reference)
    after = mean_distance(solver(denoiser, x.clone(), result.sigmas)[0], reference)
    assert result.error_before == pytest.approx(before, rel=1e-9)
    assert result.error_after == pytest.approx(after, rel=1e-9)
    assert after < before / 4
    assert result.num_steps == 6 and str(result).startswith("DPMpp2M(lower_order_final=False), 6 steps: error")


@pytest.mark.slow
def test_grid_decreases_and_keeps_its_ends_for_every_deterministic_solver():
    denoiser = EDM.get_denoiser(x0_predictor=lambda x, t: RING.denoise(x, t))
    x = latents(EDM, 32, seed=4)
    for solver in ("euler", "heun", "dpm_2", "lms", "unipc", {"name": "dpmpp_3m_sde", "eta": 0.0},
                   {"name": "edm_stochastic_heun", "S_churn": 0.0}):
        result = ds.calibrate_sigmas(denoiser, x, EDM, 4, solver, reference_steps=64)
        grid = result.sigmas
        assert grid.dtype == torch.float64 and grid.shape == (5,) and float(grid[-1]) == 0.0
        assert bool((grid[1:] < grid[:-1]).all())
        assert float(grid[0]) == 80.0 and float(grid[-2]) == float(EDM.sigmas(4)[-2])
        assert result.error_after <= result.error_before


def test_a_preconditioner_with_condition_and_guidance_is_calibrated_like_it_samples():
    """A guided evaluation costs two: the report counts what the guided denoiser counted."""
    classes = [GaussianMixture([[1.0, 0.0]], [0.1], [1.0]), GaussianMixture([[-1.0, 0.0]], [0.1], [1.0])]
    from diffusion_schemes.conformance.mixture import ClassConditionalMixture

    mixture = ClassConditionalMixture([1.0, 1.0], classes)
    model = ExactX0(mixture, EDM)
    x = latents(EDM, 16, seed=5)
    condition = torch.nn.functional.one_hot(torch.arange(16) % 2, 2).to(torch.float64)
    result = ds.calibrate_sigmas(model, x, EDM, 3, "dpmpp_2m", condition=condition, guidance=2.0, reference_steps=20)
    # the reference (Heun, 20 steps: 39 evaluations), the schedule's and the even grid (3 each), the optimisation
    assert result.model_evaluations == 2 * (39 + 3 + 3 + 3 * result.backward_passes)


def test_one_or_two_steps_leave_nothing_to_move():
    denoiser = EDM.get_denoiser(x0_predictor=lambda x, t: RING.denoise(x, t))
    for n in (1, 2):
        result = ds.calibrate_sigmas(denoiser, latents(EDM, 8, seed=6), EDM, n, reference_steps=10)
        assert torch.equal(result.sigmas, EDM.sigmas(n).to(torch.float64))
        assert result.backward_passes == 0 and result.error_after == result.error_before


@pytest.mark.parametrize(
    "solver,message",
    [("euler_ancestral", "adds noise"), ("dpmpp_2m_sde", "adds noise"), ("edm_stochastic_heun", "adds noise"),
     ("dpm_adaptive", "picks its own steps")],
)
def test_solvers_that_cannot_be_calibrated_are_refused(solver, message):
    denoiser = EDM.get_denoiser(x0_predictor=lambda x, t: RING.denoise(x, t))
    with pytest.raises(ds.DiffusionSchemesError, match=message):
        ds.calibrate_sigmas(denoiser, latents(EDM, 4, seed=0), EDM, 5, solver)


@pytest.mark.parametrize("bad", [1, 0, -3, 2.5, True, "many"])
def test_bad_reference_steps_are_refused(bad):
    denoiser = EDM.get_denoiser(x0_predictor=lambda x, t: RING.denoise(x, t))
    with pytest.raises(ds.DiffusionSchemesError, match="reference_steps must be an int >= 2"):
        ds.calibrate_sigmas(denoiser, latents(EDM, 4, seed=0), EDM, 5, reference_steps=bad)


def test_bad_sampling_arguments_get_samples_errors():
    denoiser = EDM.get_denoiser(x0_predictor=lambda x, t: RING.denoise(x, t))
    with pytest.raises(ds.DiffusionSchemesError, match="num_steps must be an int >= 1"):
        ds.calibrate_sigmas(denoiser, latents(EDM, 4, seed=0), EDM, 0)
    with pytest.raises(ds.DiffusionSchemesError, match="latents must be a floating-point tensor"):
        ds.calibrate_sigmas(denoiser, torch.zeros(4, 2, dtype=torch.long), EDM, 5)


def test_model_parameters_get_no_gradient():
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()
    precond = ds.create("preconditioner", "edm", model=lambda x, c, condition=None: net(x))
    x = latents(EDM, 16, seed=7)
    result = ds.calibrate_sigmas(precond, x, EDM, 4, reference_steps=16)
    assert all(p.grad is None for p in net.parameters())
    assert result.error_after <= result.error_before


# ---------------------------------------------------------------------- the explicit discretization


def test_calibrated_grid_round_trips_through_a_config():
    denoiser = EDM.get_denoiser(x0_predictor=lambda x, t: RING.denoise(x, t))
    result = ds.calibrate_sigmas(denoiser, latents(EDM, 32, seed=8), EDM, 5, reference_steps=32)
    config = result.discretization
    assert config == {"name": "explicit", "sigmas": result.sigmas.tolist()}
    spec = ds.parse_spec("discretization", json.loads(json.dumps(config)))
    assert spec == ds.parse_spec("discretization", config)
    assert torch.equal(spec.build().sigmas(5, EDM), result.sigmas)          # bit for bit
    typed = ds.spec_type("discretization")
    from pydantic import TypeAdapter

    assert torch.equal(TypeAdapter(typed).validate_json(spec.model_dump_json()).build().sigmas(), result.sigmas)


def test_explicit_grid_samples_like_the_same_sigmas():
    x = latents(EDM, 16, seed=9)
    denoiser = EDM.get_denoiser(x0_predictor=lambda x, t: RING.denoise(x, t))
    levels = [80.0, 5.0, 0.5, 0.02, 0.002, 0.0]
    explicit = {"name": "explicit", "sigmas": levels}
    by_config = ds.sample(denoiser, x, EDM, 5, "dpmpp_2m", discretization=explicit)
    by_sigmas = ds.sample(denoiser, x, EDM, sigmas=levels, solver="dpmpp_2m")
    assert torch.equal(by_config.samples, by_sigmas.samples) and by_config.nfe == 5
    stated = ds.sample(denoiser, x, EDM, solver="dpmpp_2m", discretization=explicit)  # the grid states its steps
    assert torch.equal(stated.samples, by_sigmas.samples)
    with pytest.raises(ds.DiffusionSchemesError, match="this explicit grid has 5 steps"):
        ds.sample(denoiser, x, EDM, 7, "dpmpp_2m", discretization=explicit)


@pytest.mark.parametrize(
    "levels,message",
    [([1.0, 2.0, 0.0], "decrease strictly"), ([2.0, 1.0, 1.0, 0.0], "decrease strictly"),
     ([2.0, 1.0], "end at noise level 0"), ([2.0, -1.0, 0.0], "decrease strictly"), ([0.0], "at least one"),
     ([float("inf"), 1.0, 0.0], "finite"), ([float("nan"), 1.0, 0.0], "finite"), ([], "at least one")],
)
def test_explicit_grid_is_validated(levels, message):
    with pytest.raises(ds.SchemeConfigError, match=message):
        ds.parse_spec("discretization", {"name": "explicit", "sigmas": levels})


def test_explicit_grid_needs_its_sigmas():
    with pytest.raises(ds.SchemeConfigError, match="sigmas"):
        ds.create("discretization", "explicit")


def test_explicit_map_passes_through_its_levels_and_is_geometric_between():
    levels = [100.0, 10.0, 0.5, 0.01, 0.0]
    grid = ds.create("discretization", {"name": "explicit", "sigmas": levels})
    u = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0, 1 / 6], dtype=torch.float64)
    expected = torch.tensor([100.0, 10.0, 0.5, 0.01, math.sqrt(100.0 * 10.0)], dtype=torch.float64)
    assert torch.allclose(grid.sigma_at(u, None), expected, rtol=1e-12, atol=0)


def test_explicit_grid_passes_the_conformance_invariants_at_its_own_step_count():
    """The kit asks for several step counts; held to its own one, the grid meets every invariant."""
    from diffusion_schemes.conformance import _discretization as kit

    levels = EDM.sigmas(5).tolist()
    report = conformance.check("discretization", {"name": "explicit", "sigmas": levels}, schedule="edm",
                               raise_on_failure=False)
    assert "grid_shape" in report.failed()  # other step counts are refused, as they must be
    obj = ds.create("discretization", {"name": "explicit", "sigmas": levels})

    class Context:
        options = {"_grids": {5: obj.sigmas(5, EDM)}}
        schedule = EDM

    Context.obj = obj
    for name in ("grid_shape", "decreasing", "ends_at_zero", "within_domain", "map_agrees_with_grid", "map_monotone"):
        assert getattr(kit, name)(Context) is None, name


def test_show_lists_the_explicit_field(capsys):
    assert cli(["show", "discretization", "explicit"]) == 0
    out = capsys.readouterr().out
    assert "sigmas" in out and "strictly decreasing" in out
