"""What ``ds.sample`` does once a call, kept cheap: the grid it reuses, the model's first parameter it finds."""

from __future__ import annotations

import pytest
import torch

import diffusion_schemes as ds
from diffusion_schemes.sampling.denoiser import first_parameter
from diffusion_schemes.sampling.sampler import _GRIDS


def test_a_reused_grid_is_the_schedules_grid_and_a_callback_cannot_change_it():
    """The second call takes the grid kept from the first; writing into the levels a callback is given (or the
    grid a solver is handed) changes neither that call's grid's source nor the next call's."""
    schedule = ds.create("noise_schedule", {"name": "edm", "sigma_max": 70.0})
    expected = schedule.sigmas(6).to(torch.float64)
    x = torch.zeros(2, 2, dtype=torch.float64)  # a float64 state: the solver runs on the grid it is handed
    seen = []

    def vandal(info):
        seen.append(float(info["sigma"]))
        info["sigma"].fill_(123.0)

    _GRIDS.clear()
    ds.sample(lambda x, t: x, x, schedule, 6, solver="euler", callback=vandal)
    assert len(_GRIDS) == 1 and torch.equal(next(iter(_GRIDS.values())), expected)
    for _ in range(2):  # each call from the kept grid, after the last one wrote into its levels
        seen.clear()
        ds.sample(lambda x, t: x, x, schedule, 6, solver="euler", callback=vandal)
        assert seen == expected[:-1].tolist()


def test_grids_are_kept_apart_by_schedule_spec_discretization_and_step_count():
    x = torch.zeros(1, 2)
    levels = []
    record = lambda info: levels.append(float(info["sigma"]))  # noqa: E731
    cases = [({"name": "edm"}, None, 4), ({"name": "edm", "sigma_max": 50.0}, None, 4), ({"name": "edm"}, "karras", 4),
             ({"name": "edm"}, {"name": "karras", "rho": 3.0}, 4), ({"name": "edm"}, None, 5), ({"name": "ve"}, None, 4)]
    for config, discretization, steps in cases * 2:  # the second round from the kept grids
        schedule = ds.create("noise_schedule", config)
        levels.clear()
        ds.sample(lambda x, t: x, x, schedule, steps, solver="euler", discretization=discretization, callback=record)
        grids = ds.create("discretization", discretization or "schedule")
        expected = grids.sigmas(steps, schedule)[:-1].to(torch.float32).tolist()  # the float32 state's levels
        assert levels == expected, (config, discretization, steps)


def test_a_schedule_asked_with_an_object_discretization_is_asked_every_call():
    """Only a discretization given by name or plain config is kept; an object is asked each call."""
    class Halving:
        calls = 0

        def sigmas(self, num_steps, schedule):
            Halving.calls += 1
            return torch.tensor([2.0**-i for i in range(num_steps)] + [0.0], dtype=torch.float64)

    for _ in range(3):
        ds.sample(lambda x, t: x, torch.zeros(1, 2), ds.create("noise_schedule", "edm"), 3, solver="euler",
                  discretization=Halving())
    assert Halving.calls == 3


class _Weighted(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(2, elementwise_affine=False)  # no parameters: skipped
        self.skip = torch.nn.Linear(2, 2, bias=False)
        self.head = torch.nn.Linear(2, 2)
        self.again = self.skip  # the same module twice


@pytest.mark.parametrize("make", [
    lambda: torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(3, 1)),
    _Weighted,
    lambda: torch.compile(_Weighted(), backend="eager"),
    lambda: ds.create("preconditioner", "edm", model=_Weighted()),
    lambda: torch.nn.ReLU(),
])
def test_first_parameter_is_what_parameters_yields_first(make):
    module = make()
    assert first_parameter(module) is next(iter(module.parameters()), None)


def test_first_parameter_asks_a_module_that_defines_its_own_parameters():
    extra = torch.nn.Parameter(torch.ones(1))

    class Own(torch.nn.Linear):
        def parameters(self, recurse=True):
            yield extra

    assert first_parameter(Own(2, 2)) is extra
