"""A matched pair whose sigma(t) disagrees with its schedule is rejected when composed; mixing is not."""

from __future__ import annotations

import functools

import pytest
import torch

import diffusion_schemes as ds

def BACKBONE(x, c_noise, condition=None):  # noqa: N802 - a stand-in backbone
    return torch.zeros_like(x)


@pytest.mark.parametrize("scheme", ["edm", "ve", "vp", "iddpm"])
def test_each_built_in_pair_composes(scheme):
    precond = ds.create("preconditioner", scheme, model=BACKBONE)
    schedule = ds.create("noise_schedule", scheme)
    ds.MSEDSMLoss(precond, schedule)
    schedule.get_denoiser(x0_predictor=functools.partial(precond, condition=None))


def test_vp_pair_with_different_parameters_is_rejected_by_the_loss_and_the_denoiser():
    precond = ds.create("preconditioner", {"name": "vp", "beta_d": 19.9}, model=BACKBONE)
    schedule = ds.create("noise_schedule", {"name": "vp", "beta_d": 10.0})
    with pytest.raises(ds.PairingError, match=r"'vp' preconditioner and the 'vp' schedule disagree.*beta_d"):
        ds.MSEDSMLoss(precond, schedule)
    with pytest.raises(ds.PairingError, match="Build both from the same parameters"):
        schedule.get_denoiser(x0_predictor=functools.partial(precond, condition=None))


@pytest.mark.parametrize(("precond_name", "schedule_name"), [("edm", "vp"), ("vp", "edm"), ("iddpm", "ve")])
def test_mixed_pairs_are_reached_through_the_noise_level_and_not_rejected(precond_name, schedule_name):
    precond = ds.create("preconditioner", precond_name, model=BACKBONE)
    schedule = ds.create("noise_schedule", schedule_name)
    loss = ds.MSEDSMLoss(precond, schedule)
    x0 = torch.randn(8, 2)
    assert torch.isfinite(loss(x0, generator=torch.Generator().manual_seed(0)))


def test_a_compiled_preconditioner_is_checked_against_its_schedule_as_itself():
    """``torch.compile``'s wrapper hides the preconditioner's type; the pair check looks inside it (the wrapper is
    made lazily, so nothing is compiled here)."""
    precond = ds.create("preconditioner", {"name": "vp", "beta_d": 19.9}, model=torch.nn.Linear(2, 2))
    schedule = ds.create("noise_schedule", {"name": "vp", "beta_d": 10.0})
    with pytest.raises(ds.PairingError, match="beta_d"):
        schedule.get_denoiser(x0_predictor=torch.compile(precond, backend="eager"))
    with pytest.raises(ds.PairingError, match="beta_d"):
        ds.sample(torch.compile(precond, backend="eager"), torch.zeros(2, 2), schedule, 4)
