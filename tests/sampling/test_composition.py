"""Composition checks: schemes of one family agree on the parameters they declare shared."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
from pydantic import Field

import diffusion_schemes as ds
from diffusion_schemes.sampling.compose import check_shared_parameters


def backbone(x, c_noise, condition=None):
    return torch.zeros_like(x)


def edm_precond(sigma_data=0.5):
    return ds.create("preconditioner", {"name": "edm", "sigma_data": sigma_data}, model=backbone)


def test_edm_preconditioner_and_schedule_must_agree_on_sigma_data():
    schedule = ds.create("noise_schedule", "edm")
    message = r"the 'edm' preconditioner has sigma_data=0.6 but the 'edm' noise_schedule has sigma_data=0.5.*agree on sigma_data"
    with pytest.raises(ds.PairingError, match=message):
        ds.MSEDSMLoss(edm_precond(0.6), schedule)
    with pytest.raises(ds.PairingError, match=message):
        schedule.get_denoiser(x0_predictor=edm_precond(0.6))
    latents = torch.zeros(2, 3)
    with pytest.raises(ds.PairingError, match=message):
        ds.sample(edm_precond(0.6), latents, schedule, num_steps=2)


def test_agreeing_values_and_other_families_compose():
    ds.MSEDSMLoss(edm_precond(0.6), ds.create("noise_schedule", {"name": "edm", "sigma_data": 0.6}))
    ds.MSEDSMLoss(edm_precond(0.6), ds.create("noise_schedule", "vp"))  # another family: nothing shared
    ds.MSEDSMLoss(edm_precond(0.6), ds.create("noise_schedule", "ve"), weighting={"name": "edm", "sigma_data": 0.6})


def test_the_weighting_belongs_to_the_family_too():
    with pytest.raises(ds.PairingError, match="the 'edm' weighting has sigma_data=1.0"):
        ds.MSEDSMLoss(edm_precond(), ds.create("noise_schedule", "edm"), weighting={"name": "edm", "sigma_data": 1.0})
    schedule = ds.create("noise_schedule", {"name": "edm", "weighting": {"name": "edm", "sigma_data": 1.0}})
    with pytest.raises(ds.PairingError, match="the 'edm' noise_schedule has sigma_data=0.5 but the 'edm' weighting has sigma_data=1.0"):
        ds.MSEDSMLoss(ds.create("preconditioner", "ve", model=backbone), schedule)


class _WidthScheduleSpec(ds.NoiseScheduleSpec):
    """A third-party schedule calling the shared quantity width."""

    name: Literal["ribbon"] = "ribbon"
    width: float = Field(1.0, description="Width.")
    shared_parameters = {"width": "scale"}


class _ScaleWeightingSpec(ds.WeightingSpec):
    """A third-party weighting of another name, in the same family, calling it scale."""

    name: Literal["ribbon_weight"] = "ribbon_weight"
    scale: float = Field(1.0, description="Scale.")
    shared_parameters = ("scale",)
    shared_family = "ribbon"


class _UnrelatedWeightingSpec(ds.WeightingSpec):
    """Declares scale shared within its own family only."""

    name: Literal["other_weight"] = "other_weight"
    scale: float = Field(1.0, description="Scale.")
    shared_parameters = ("scale",)


def test_a_third_party_family_declares_what_must_agree_with_what():
    check_shared_parameters(_WidthScheduleSpec(width=2.0), _ScaleWeightingSpec(scale=2.0))
    with pytest.raises(ds.PairingError, match="the 'ribbon' noise_schedule has width=2.0 but the 'ribbon_weight' weighting has scale=3.0; the schemes of the 'ribbon' family must agree on scale"):
        check_shared_parameters(_WidthScheduleSpec(width=2.0), _ScaleWeightingSpec(scale=3.0))
    check_shared_parameters(_WidthScheduleSpec(width=2.0), _UnrelatedWeightingSpec(scale=3.0), None, object())


def test_declaring_a_parameter_that_is_not_a_field_is_a_clear_error():
    class BrokenSpec(ds.WeightingSpec):
        """Declares a field it lacks."""

        name: Literal["broken"] = "broken"
        shared_parameters = ("sigma_dat",)

    with pytest.raises(TypeError, match=r"BrokenSpec.shared_parameters names \['sigma_dat'\], which are not fields"):
        check_shared_parameters(BrokenSpec(), BrokenSpec())
