"""diffusers' timestep spacings as discretizations: the same timesteps and noise levels as diffusers' own."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler

import diffusion_schemes as ds
from diffusers_nets import _one_thread  # noqa: F401 - the fixture: one thread for tiny networks
from diffusion_schemes_diffusers import DiffusersBridgeError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers and numpy 2 (np.array copy=False)

STEPS = (1, 2, 3, 7, 10, 18, 25, 48, 50, 100, 333)
CASES = [  # scheduler, its timestep_spacing, our discretization
    (EulerDiscreteScheduler, "linspace", {"name": "linspace"}),
    (EulerDiscreteScheduler, "leading", {"name": "leading", "steps_offset": 1}),
    (EulerDiscreteScheduler, "trailing", {"name": "trailing"}),
    (HeunDiscreteScheduler, "linspace", {"name": "linspace"}),
    (DDIMScheduler, "linspace", {"name": "linspace", "round": True}),
    (DDIMScheduler, "leading", {"name": "leading", "steps_offset": 1}),
    (DDIMScheduler, "trailing", {"name": "trailing"}),
    (DPMSolverMultistepScheduler, "linspace", {"name": "linspace", "round": True, "extra_point": True}),
    (DPMSolverMultistepScheduler, "leading", {"name": "leading", "extra_point": True, "steps_offset": 1}),
    (DPMSolverMultistepScheduler, "trailing", {"name": "trailing"}),
]


@pytest.mark.parametrize("cls, spacing, config", CASES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_timesteps_and_sigmas_equal_diffusers(cls, spacing, config):
    schedule = ds.create("noise_schedule", {"name": "discrete", "precision": "float32"})  # diffusers' own table
    grid = ds.create("discretization", config)
    for n in STEPS:
        scheduler = cls(timestep_spacing=spacing, steps_offset=config.get("steps_offset", 0))
        scheduler.set_timesteps(n)
        theirs = scheduler.timesteps.to(torch.float64)
        if cls is HeunDiscreteScheduler:  # each timestep after the first twice (its second evaluations)
            theirs = theirs[::2]
        ours = grid.timesteps(n, schedule)
        # Euler and Heun keep fractional linspace timesteps in float32
        assert torch.equal(ours.to(theirs.dtype if spacing != "linspace" or cls in (DDIMScheduler, DPMSolverMultistepScheduler)
                                   else torch.float32).to(torch.float64), theirs), (cls.__name__, n)
        if hasattr(scheduler, "sigmas") and cls is not HeunDiscreteScheduler:
            torch.testing.assert_close(grid.sigmas(n, schedule), scheduler.sigmas.to(torch.float64), rtol=1e-6, atol=0)


def test_trailing_keeps_n_steps_where_diffusers_adds_a_timestep_of_minus_one():
    """numpy's arange gives 62 points for 61 trailing steps of 1000; the last timestep is then -1 (the noisiest entry)."""
    scheduler = DDIMScheduler(timestep_spacing="trailing")
    scheduler.set_timesteps(61)
    assert len(scheduler.timesteps) == 62 and int(scheduler.timesteps[-1]) == -1
    ours = ds.create("discretization", "trailing").timesteps(61, ds.create("noise_schedule", "discrete"))
    assert ours.shape == (61,) and torch.equal(ours, scheduler.timesteps[:61].to(torch.float64))


def test_rounded_ties_fall_as_numpy_breaks_them():
    """Half-way timesteps round to even, from numpy's linspace arithmetic (999 / 2 = 499.5 -> 500)."""
    grid = ds.create("discretization", {"name": "linspace", "round": True})
    assert grid.timesteps(3, ds.create("noise_schedule", "discrete")).tolist() == [999.0, 500.0, 0.0]


@pytest.mark.parametrize("name", ["linspace", "leading", "trailing"])
def test_grids_conform_on_the_discrete_schedule(conformance, name):
    # leading and trailing depend on N through T // N, and linspace of one step is timestep 0 as in
    # numpy.linspace: no grid is a sampling of one map of u (see the module); the map's own invariant holds
    conformance.check("discretization", name, schedule="discrete", skip=("map_agrees_with_grid",))


def test_linspace_follows_its_map_from_two_steps():
    schedule = ds.create("noise_schedule", "discrete")
    grid = ds.create("discretization", "linspace")
    for n in (2, 5, 18, 64):
        u = torch.arange(n, dtype=torch.float64) / (n - 1)
        torch.testing.assert_close(grid.sigmas(n, schedule)[:-1], grid.sigma_at(u, schedule), rtol=1e-12, atol=0)
    assert grid.timesteps(1, schedule).tolist() == [0.0]   # numpy.linspace(0, T - 1, 1) is [0]


def test_a_schedule_without_table_or_too_many_steps_is_refused():
    with pytest.raises(DiffusersBridgeError, match="timestep table"):
        ds.create("discretization", "leading").sigmas(4, ds.create("noise_schedule", "edm"))
    with pytest.raises(DiffusersBridgeError, match="fewer steps"):
        ds.create("discretization", {"name": "leading", "steps_offset": 1}).sigmas(1000, ds.create("noise_schedule", "discrete"))
