"""Config-by-name: lookups, validation errors, spec types for downstream configs, in-process registration."""

from __future__ import annotations

import sys
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


class Opaque:
    """A type pydantic has no validator for."""


class OpaqueWeightingSpec(ds.WeightingSpec):
    """A weighting whose field pydantic cannot validate: its spec builds no validator."""

    name: Literal["test_opaque"] = "test_opaque"
    table: Opaque = None


def test_a_spec_pydantic_cannot_validate_fails_alone_where_it_is_used(fresh_registry):
    """Specs build their validators on first use, so discovery lists a broken one; using it raises PluginError
    naming its distribution, and every other scheme of its kind keeps working, its JSON Schema included."""
    with ds.registry.registered(OpaqueWeightingSpec, distribution="opaque-plugin"):
        assert "test_opaque" in [i.name for i in ds.list_schemes("weighting")]
        for use in (lambda: ds.create("weighting", "test_opaque"), lambda: ds.parse_spec("weighting", "test_opaque")):
            with pytest.raises(ds.PluginError, match=r"'test_opaque' of distribution 'opaque-plugin' cannot be used"):
                use()
        assert ds.create("weighting", "snr") is not None
        with pytest.warns(ds.PluginWarning, match="opaque-plugin.*left out of the JSON Schema of weighting"):
            schema = ds.json_schema("weighting")
        assert "test_opaque" not in schema["anyOf"][0]["enum"] and "snr" in schema["anyOf"][0]["enum"]
        adapter = pydantic.TypeAdapter(ds.spec_type("weighting"))
        assert adapter.validate_python("snr") == ds.parse_spec("weighting", "snr")
        with pytest.raises(ds.PluginError, match="opaque-plugin"):  # the environment's fault: raised as is
            adapter.validate_python("test_opaque")
        ((kind, name, dist, problem),) = ds.registry.unusable()
        assert (kind, name, dist) == ("weighting", "test_opaque", "opaque-plugin")
        assert problem.startswith("PydanticSchemaGenerationError") and "Opaque" in problem
    assert ds.registry.unusable() == []


def test_doctor_lists_an_unusable_scheme_and_exits_1(fresh_registry, capsys):
    from diffusion_schemes.cli import commands as cli

    with ds.registry.registered(OpaqueWeightingSpec, distribution="opaque-plugin"):
        code = cli.main(["doctor"])
    out = capsys.readouterr().out
    assert code == 1
    assert "  weighting 'test_opaque' of opaque-plugin: PydanticSchemaGenerationError" in out
    assert "0 conflict(s), 1 unusable scheme(s)" in out


OPAQUE_PLUGIN = '''
import sys
from typing import Literal
import diffusion_schemes as ds

class Opaque:
    pass

class OpaqueSpec(ds.WeightingSpec):
    """A weighting whose field pydantic cannot validate."""
    name: Literal["entry_opaque"] = "entry_opaque"
    table: Opaque = None

@ds.hookimpl
def register_schemes():
    return [OpaqueSpec]
'''


@pytest.fixture
def opaque_plugin_on_path(tmp_path, monkeypatch):
    """An installed plugin distribution (module and ``.dist-info``) whose one spec builds no validator."""
    (tmp_path / "opaque_entry_plugin").mkdir()
    (tmp_path / "opaque_entry_plugin" / "__init__.py").write_text(OPAQUE_PLUGIN)
    info = tmp_path / "opaque_entry_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: opaque-entry-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[diffusion_schemes]\nopaque = opaque_entry_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("opaque_entry_plugin", None)


def test_an_installed_plugin_with_an_unusable_spec_loads_and_strict_mode_refuses_it(
        fresh_registry, opaque_plugin_on_path, monkeypatch):
    ds.registry.reload()
    status = {p.distribution: p.status for p in ds.registry.plugins()}
    assert status["opaque-entry-plugin"] == "loaded"  # listing builds no validator
    with pytest.raises(ds.PluginError, match="'entry_opaque' of distribution 'opaque-entry-plugin'"):
        ds.create("weighting", "entry_opaque")
    monkeypatch.setenv("DIFFUSION_SCHEMES_STRICT_PLUGINS", "1")
    ds.registry.reload()
    with pytest.raises(ds.PluginError, match="'entry_opaque' of distribution 'opaque-entry-plugin' cannot be used"):
        ds.registry.plugins()
