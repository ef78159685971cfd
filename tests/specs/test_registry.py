"""Config-by-name: lookups, validation errors, spec types for downstream configs, in-process registration."""

from __future__ import annotations

from typing import Literal

import pydantic
import pytest
import torch
from pydantic import BaseModel, Field

import diffusion_schemes as ds
from diffusion_schemes.solvers.base import EDMStochasticHeunSpec, HeunSpec
from diffusion_schemes.specs.base import KINDS


class ScaleWeightingSpec(ds.WeightingSpec):
    """Constant weight, for tests."""

    name: Literal["test_scale"] = "test_scale"
    value: float = Field(1.0, gt=0)

    def build(self):
        return self.value


class BrokenNameSpec(ds.WeightingSpec):
    name: str = "no-literal"


def test_edm_is_listed_from_its_own_distribution(fresh_registry):
    (info,) = [i for i in ds.list_schemes("preconditioner") if i.name == "edm"]
    assert info.distribution == "diffusion-schemes-edm"
    assert info.summary.startswith("EDM preconditioner")


def test_list_is_sorted_by_kind_then_name(fresh_registry):
    infos = ds.list_schemes()
    keys = [(KINDS.index(i.kind), i.name) for i in infos]
    assert keys == sorted(keys)


@pytest.mark.parametrize("config", ["edm", {"name": "edm"}, {"name": "edm", "sigma_data": 0.5}])
def test_create_accepts_a_name_a_mapping_or_a_spec(fresh_registry, config):
    precond = ds.create("preconditioner", config, model=torch.nn.Identity())
    assert precond.spec.model_dump() == {"name": "edm", "sigma_data": 0.5}
    again = ds.create("preconditioner", precond.spec, model=torch.nn.Identity())
    assert again.spec == precond.spec


def test_unknown_name_suggests_the_closest_and_lists_installed(fresh_registry):
    with pytest.raises(ds.UnknownSchemeError) as err:
        ds.create("preconditioner", {"name": "edn"}, model=None)
    message = str(err.value)
    assert "no preconditioner named 'edn'" in message
    assert "Did you mean 'edm'?" in message
    assert "Installed preconditioner schemes:" in message and "edm" in message.split("Installed")[1]
    assert err.value.installed == ds.registry.names("preconditioner")


def test_unknown_field_names_the_field_and_its_closest_match(fresh_registry):
    with pytest.raises(ds.SchemeConfigError) as err:
        ds.create("preconditioner", {"name": "edm", "sigma_dta": 0.3}, model=None)
    message = str(err.value)
    assert "sigma_dta: unknown field. Did you mean 'sigma_data'?" in message
    assert "The fields of 'edm' are: sigma_data" in message
    assert err.value.errors[0]["type"] == "extra_forbidden"


def test_invalid_value_names_the_field_constraint_and_value(fresh_registry):
    with pytest.raises(ds.SchemeConfigError, match=r"sigma_data: Input should be greater than 0 \(got -1\)"):
        ds.create("preconditioner", {"name": "edm", "sigma_data": -1}, model=None)


def test_wrong_kind_says_what_the_name_is(fresh_registry):
    with pytest.raises(ds.UnknownSchemeError, match="'heun' is a solver, not a preconditioner"):
        ds.create("preconditioner", "heun", model=None)
    with pytest.raises(ds.SchemeConfigError, match="expected a preconditioner config, got a solver spec"):
        ds.create("preconditioner", HeunSpec(), model=None)
    with pytest.raises(ds.UnknownKindError, match="Did you mean 'preconditioner'"):
        ds.create("preconditoner", "edm")


def test_config_without_name_or_of_a_wrong_type(fresh_registry):
    with pytest.raises(ds.SchemeConfigError, match="is missing 'name'. Add one of: (discrete, )?edm"):
        ds.create("preconditioner", {"sigma_data": 0.5}, model=None)
    with pytest.raises(ds.SchemeConfigError, match="must be a scheme name, a mapping"):
        ds.create("preconditioner", 3, model=None)


def test_in_process_registration_is_undone(fresh_registry):
    with ds.registry.registered(ScaleWeightingSpec, distribution="tests"):
        (info,) = [i for i in ds.list_schemes("weighting") if i.name == "test_scale"]
        assert (info.distribution, info.summary) == ("tests", "Constant weight, for tests.")
        assert ds.create("weighting", {"name": "test_scale", "value": 3}) == 3
    assert "test_scale" not in ds.registry.names("weighting")


def test_a_spec_without_a_literal_name_is_refused(fresh_registry):
    with pytest.raises(TypeError, match=r"name must be annotated as Literal\['<scheme-name>'\]"):
        ds.registry.register(BrokenNameSpec)


def test_specs_are_frozen_and_forbid_extra_fields():
    spec = EDMStochasticHeunSpec()
    with pytest.raises(pydantic.ValidationError):
        spec.S_churn = 3.0  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        EDMStochasticHeunSpec(S_chrun=3.0)
    assert (spec.S_churn, spec.S_min, spec.S_max, spec.S_noise) == (40.0, 0.05, 50.0, 1.003)


def test_spec_type_embeds_in_a_downstream_config(fresh_registry):
    class TrainConfig(BaseModel):
        preconditioner: ds.spec_type("preconditioner") = "edm"
        solver: ds.spec_type("solver") = Field(default_factory=lambda: {"name": "heun"})

    config = TrainConfig(solver={"name": "edm_stochastic_heun", "S_churn": 10})
    assert config.preconditioner == ds.parse_spec("preconditioner", "edm")
    assert config.solver.S_churn == 10.0
    round_trip = TrainConfig.model_validate_json(config.model_dump_json())
    assert round_trip == config
    with pytest.raises(pydantic.ValidationError, match="no solver named 'hune'.*Did you mean 'heun'"):
        TrainConfig(solver="hune")
    with pytest.raises(pydantic.ValidationError, match=r"(?s)solver.*S_churn: unknown field. The fields of .heun. are: \(none\)"):
        TrainConfig(solver={"name": "heun", "S_churn": 1})


def test_spec_type_includes_schemes_registered_later(fresh_registry):
    with ds.registry.registered(ScaleWeightingSpec):
        class Config(BaseModel):
            weighting: ds.spec_type("weighting")

        assert Config(weighting={"name": "test_scale", "value": 2}).weighting.value == 2.0


def test_json_schema_lists_every_installed_scheme_of_the_kind(fresh_registry):
    schema = ds.json_schema("solver")
    assert set(schema["anyOf"][1]["discriminator"]["mapping"]) == set(ds.registry.names("solver"))
    heun_stochastic = schema["$defs"]["EDMStochasticHeunSpec"]
    assert heun_stochastic["properties"]["S_churn"]["minimum"] == 0
    assert heun_stochastic["additionalProperties"] is False


def test_weighting_reference_is_validated_by_name(fresh_registry):
    spec = ds.parse_spec("noise_schedule", {"name": "edm", "weighting": "likelihood_weighting"})
    assert spec.weighting == "likelihood_weighting"
    with pytest.raises(ds.SchemeConfigError, match="no weighting named 'likelihod_weighting'"):
        ds.parse_spec("noise_schedule", {"name": "edm", "weighting": "likelihod_weighting"})
    cfg = ds.parse_spec("noise_schedule", {"name": "edm", "weighting": {"name": "edm", "sigma_data": 1.0}})
    assert ds.create("noise_schedule", cfg).weighting.sigma_data == 1.0
