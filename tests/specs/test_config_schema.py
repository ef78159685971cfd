"""Configs a downstream framework can trust: the JSON Schema agrees with the validator, spec types
work inside any field type, embedded errors are as helpful as parse_spec's, dumps keep the name.

The schema is checked with the ``jsonschema`` package, an implementation independent of pydantic:
on a corpus of valid and invalid configs for every kind and every installed scheme, its verdict
must be pydantic's verdict (through ``ds.spec_type`` on the JSON text and through ``ds.parse_spec``).
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Optional

import jsonschema
import pydantic
import pytest
from pydantic import BaseModel, ConfigDict

import diffusion_schemes as ds
from diffusion_schemes.specs.config import _WeightingRefOf
from diffusion_schemes.specs.base import KINDS

UNKNOWN = "no_such_scheme"


def _validator(schema: dict) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def _weighting_fields(spec: type[ds.SchemeSpec]) -> list[str]:
    return [f for f, info in spec.model_fields.items() if any(isinstance(m, _WeightingRefOf) for m in info.metadata)]


def _typo(field: str, taken: set[str]) -> str:
    """A near miss of ``field`` (two letters swapped, or one dropped) that is not a field itself."""
    for candidate in (field[:1] + field[2:3] + field[1:2] + field[3:], field[:-1], field + "s"):
        if candidate not in taken and candidate != field:
            return candidate
    raise AssertionError(f"no typo of {field!r} found")


def corpus(kind: str) -> list[tuple[str, Any, bool | None]]:
    """``(label, config, expected verdict or None when only agreement is asked)`` for every installed scheme."""
    cases: list[tuple[str, Any, bool | None]] = [
        ("unknown name", UNKNOWN, False),
        ("unknown name in a config", {"name": UNKNOWN}, False),
        ("empty config", {}, False),
        ("a number", 3, False),
        ("a list", ["heun"], False),
        ("null", None, False),
    ]
    weightings = ds.registry.names("weighting")
    for name in ds.registry.names(kind):
        spec = ds.registry.lookup(kind, name)
        fields = [f for f in spec.model_fields if f != "name"]
        required = [f for f, info in spec.model_fields.items() if f != "name" and info.is_required()]
        cases.append((f"{name}: bare name", name, not required))
        if required:  # no default to start the other configs from
            continue
        full = spec(name=name).model_dump(mode="json")
        cases.append((f"{name}: full config", full, True))
        cases.append((f"{name}: name only", {"name": name}, True))
        cases.append((f"{name}: without name", {k: v for k, v in full.items() if k != "name"}, False))
        cases.append((f"{name}: name misspelt", {**full, "name": name + "x"}, False))
        cases.append((f"{name}: typo'd field", {**full, _typo(fields[0] if fields else "name", set(spec.model_fields)): 1}, False))
        for field in fields:
            cases.append((f"{name}: wrong type for {field}", {**full, field: {"not": "a value"}}, False))
            cases.append((f"{name}: list for {field}", {**full, field: [1.0]}, False))
        for field in _weighting_fields(spec):
            cases.append((f"{name}: unknown weighting", {**full, field: UNKNOWN}, False))
            cases.append((f"{name}: unknown weighting config", {**full, field: {"name": UNKNOWN}}, False))
            cases.append((f"{name}: weighting config without name", {**full, field: {}}, False))
            cases.append((f"{name}: weighting null", {**full, field: None}, True))
            cases.append((f"{name}: weighting default", {**full, field: "default"}, True))
            for weighting in weightings:
                wspec = ds.registry.lookup("weighting", weighting)
                bare = all(not i.is_required() for f, i in wspec.model_fields.items() if f != "name")
                cases.append((f"{name}: weighting {weighting}", {**full, field: weighting}, bare))
                if bare:
                    wfull = wspec(name=weighting).model_dump(mode="json")
                    cases.append((f"{name}: weighting config {weighting}", {**full, field: wfull}, True))
                    cases.append((f"{name}: weighting {weighting} typo'd field", {**full, field: {**wfull, "nmae": 1}}, False))
    return cases


def _pydantic_verdicts(kind: str, config: Any) -> tuple[bool, bool]:
    adapter = pydantic.TypeAdapter(ds.spec_type(kind))
    try:
        adapter.validate_json(json.dumps(config))
        via_type = True
    except pydantic.ValidationError:
        via_type = False
    try:
        ds.parse_spec(kind, config)
        via_parse = True
    except ds.DiffusionSchemesError:
        via_parse = False
    return via_type, via_parse


@pytest.mark.parametrize("kind", KINDS)
def test_json_schema_and_pydantic_agree_on_every_installed_scheme(kind, fresh_registry):
    validator = _validator(ds.json_schema(kind))
    disagreements, unexpected = [], []
    cases = corpus(kind)
    assert len(cases) > 6, f"no {kind} scheme in the corpus"
    for label, config, expected in cases:
        by_schema = validator.is_valid(config)
        via_type, via_parse = _pydantic_verdicts(kind, config)
        if not by_schema == via_type == via_parse:
            disagreements.append(f"{label}: {config!r}: schema {by_schema}, spec_type {via_type}, parse_spec {via_parse}")
        if expected is not None and via_type != expected:
            unexpected.append(f"{label}: {config!r}: expected {expected}, pydantic says {via_type}")
    assert not disagreements, "\n".join(disagreements)
    assert not unexpected, "\n".join(unexpected)


def test_the_schema_follows_the_registry(fresh_registry):
    from typing import Literal

    class RequiredFieldWeightingSpec(ds.WeightingSpec):
        """A weighting whose one field has no default."""

        name: Literal["needs_value"] = "needs_value"
        value: float = pydantic.Field(description="The weight.")

    with ds.registry.registered(RequiredFieldWeightingSpec):
        validator = _validator(ds.json_schema("weighting"))
        assert not validator.is_valid("needs_value")  # a bare name only where no field is required
        assert validator.is_valid({"name": "needs_value", "value": 2.0})
        schedule = _validator(ds.json_schema("noise_schedule"))
        assert schedule.is_valid({"name": "edm", "weighting": {"name": "needs_value", "value": 2.0}})
        assert not schedule.is_valid({"name": "edm", "weighting": "needs_value"})
    assert not _validator(ds.json_schema("weighting")).is_valid({"name": "needs_value", "value": 2.0})


@pytest.mark.parametrize("kind", KINDS)
def test_descriptions_are_one_plain_sentence(kind, fresh_registry):
    schema = ds.json_schema(kind)
    for def_name, definition in schema["$defs"].items():
        texts = [(def_name, definition.get("description"))]
        texts += [(f"{def_name}.{f}", p.get("description")) for f, p in definition["properties"].items() if f != "name"]
        for where, text in texts:
            assert text, f"{where} has no description"
            assert ">>>" not in text and "\n" not in text, f"{where}: {text!r}"


@pytest.mark.parametrize("kind", KINDS)
def test_the_serialization_schema_describes_the_same_configs(kind, fresh_registry):
    """A dump is a config: keeping name in dumps must not hide the fields from mode='serialization'."""
    adapter = pydantic.TypeAdapter(ds.spec_type(kind))
    assert adapter.json_schema(mode="serialization") == adapter.json_schema(mode="validation")


def test_cli_schema_prints_the_same_schema(capsys, fresh_registry):
    from diffusion_schemes import cli

    for kind in KINDS:
        assert cli.main(["schema", kind]) == 0
        assert json.loads(capsys.readouterr().out) == ds.json_schema(kind)


class FrameworkConfig(BaseModel):
    """A downstream framework's config with scheme fields in every position."""

    model_config = ConfigDict(validate_default=True)

    solvers: list[ds.spec_type("solver")] = ["heun", {"name": "edm_stochastic_heun", "S_churn": 0}]
    weighting: Optional[ds.spec_type("weighting")] = "snr"
    no_weighting: Optional[ds.spec_type("weighting")] = None
    schedules: dict[str, ds.spec_type("noise_schedule")] = {"train": "edm", "sample": {"name": "vp"}}
    pair: tuple[ds.spec_type("solver"), ds.spec_type("solver")] = ("euler", "dpmpp_2m")
    preconditioner: ds.spec_type("preconditioner") = "edm"


def test_spec_type_in_containers_builds_without_warnings_validates_defaults_and_round_trips(fresh_registry):
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class Config(FrameworkConfig):
            extra_solvers: tuple[ds.spec_type("solver"), ...] = ("euler",)

        cfg = Config()
        dumped = cfg.model_dump_json()
    assert cfg.solvers == [ds.parse_spec("solver", "heun"), ds.parse_spec("solver", {"name": "edm_stochastic_heun", "S_churn": 0})]
    assert cfg.weighting == ds.parse_spec("weighting", "snr") and cfg.no_weighting is None
    assert cfg.schedules == {"train": ds.parse_spec("noise_schedule", "edm"), "sample": ds.parse_spec("noise_schedule", "vp")}
    assert cfg.pair == (ds.parse_spec("solver", "euler"), ds.parse_spec("solver", "dpmpp_2m"))
    assert cfg.extra_solvers == (ds.parse_spec("solver", "euler"),)
    assert isinstance(cfg.preconditioner, ds.PreconditionerSpec)
    assert Config.model_validate_json(dumped) == cfg
    assert Config.model_validate(json.loads(dumped)) == cfg
    # the framework's own JSON Schema accepts its dump and rejects a typo inside a list
    validator = _validator(Config.model_json_schema())
    assert validator.is_valid(json.loads(dumped))
    assert not validator.is_valid({"solvers": ["heun", {"name": "edm_stochastic_heun", "S_chrun": 0}]})
    assert not validator.is_valid({"schedules": {"train": {"name": "edm", "weighting": "sigmiod"}}})


def test_a_field_of_spec_type_validates_its_default_without_model_config(fresh_registry):
    class Plain(BaseModel):
        solver: ds.spec_type("solver") = "euler"
        schedule: ds.spec_type("noise_schedule") = pydantic.Field("ve", description="The schedule.")

    assert Plain().solver == ds.parse_spec("solver", "euler")
    assert Plain().schedule == ds.parse_spec("noise_schedule", "ve")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"solvers": ["heun", {"name": "edm_stochastic_heun", "S_chrun": 0}]},
         ["solvers.1", "solver 'edm_stochastic_heun'", "S_chrun: unknown field. Did you mean 'S_churn'?"]),
        ({"schedules": {"train": "edn"}}, ["schedules.train", "no noise_schedule named 'edn'", "Did you mean 'edm'?"]),
        ({"schedules": {"train": {"sigma_max": 80}}}, ["schedules.train", "missing 'name'"]),
        ({"pair": ["heun", {"name": "hune"}]}, ["pair.1", "Did you mean 'heun'?"]),
        ({"weighting": {"name": "sigmoid", "bais": 1}}, ["weighting", "weighting 'sigmoid'", "Did you mean 'bias'?"]),
        ({"schedules": {"a": {"name": "edm", "weighting": "sigmiod"}}},
         ["schedules.a", "noise_schedule 'edm'", "weighting", "Did you mean 'sigmoid'?"]),
        ({"preconditioner": {"name": "edm", "sigma_data": "wide"}},
         ["preconditioner", "preconditioner 'edm'", "sigma_data: Input should be a valid number"]),
    ],
)
def test_embedded_errors_are_as_helpful_as_parse_spec(data, expected, fresh_registry):
    with pytest.raises(pydantic.ValidationError) as info:
        FrameworkConfig.model_validate(data)
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in {message}"
    assert len(info.value.errors()) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_dumps_without_defaults_keep_the_name_and_reload_equal(kind, fresh_registry):
    for info in ds.list_schemes(kind):
        if any(f.is_required() for n, f in info.spec.model_fields.items() if n != "name"):
            continue  # no config without that field (the explicit grid); its round trip is in test_calibrate.py
        spec = ds.parse_spec(kind, info.name)
        built_in_code = info.spec()  # nothing set: exclude_unset drops every field
        for dump in (spec.model_dump(exclude_defaults=True), spec.model_dump(exclude_unset=True),
                     built_in_code.model_dump(exclude_unset=True), json.loads(spec.model_dump_json(exclude_defaults=True))):
            assert dump == {"name": info.name}
            assert ds.parse_spec(kind, dump) == spec
    changed = ds.parse_spec("solver", {"name": "edm_stochastic_heun", "S_churn": 0})
    assert changed.model_dump(exclude_defaults=True) == {"name": "edm_stochastic_heun", "S_churn": 0.0}
    assert ds.parse_spec("solver", changed.model_dump(exclude_defaults=True)) == changed
    assert changed.model_dump(exclude_defaults=True, exclude={"name"}) == {"S_churn": 0.0}


def test_a_framework_config_diff_from_defaults_reloads(fresh_registry):
    cfg = FrameworkConfig(solvers=[{"name": "edm_stochastic_euler", "S_churn": 5}], schedules={"x": {"name": "ve", "sigma_max": 50}})
    diff = cfg.model_dump(exclude_defaults=True, mode="json")
    assert diff["solvers"] == [{"name": "edm_stochastic_euler", "S_churn": 5.0}]
    assert diff["schedules"] == {"x": {"name": "ve", "sigma_max": 50.0}}
    # a default written as a name is not equal to the spec it validates into: those fields stay, as names only
    assert diff["weighting"] == {"name": "snr"} and "no_weighting" not in diff
    assert FrameworkConfig.model_validate(diff) == cfg


def test_a_name_two_distributions_register_is_left_out_and_raises_the_conflict(fresh_registry):
    from typing import Literal

    class OneSpec(ds.WeightingSpec):
        """One."""

        name: Literal["twice"] = "twice"

    class OtherSpec(ds.WeightingSpec):
        """Other."""

        name: Literal["twice"] = "twice"

    with ds.registry.registered(OneSpec, distribution="dist-a"), ds.registry.registered(OtherSpec, distribution="dist-b"):
        schema = ds.json_schema("weighting")
        assert "twice" not in schema["anyOf"][0]["enum"] and "snr" in schema["anyOf"][0]["enum"]
        adapter = pydantic.TypeAdapter(ds.spec_type("weighting"))
        assert adapter.validate_python("snr") == ds.parse_spec("weighting", "snr")
        with pytest.raises(ds.SchemeConflictError, match="dist-a, dist-b"):
            adapter.validate_python("twice")
