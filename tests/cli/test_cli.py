"""The command line: output a person reads, JSON a script reads, exit codes a script relies on."""

from __future__ import annotations

import json

import pytest

from diffusion_schemes.cli import commands as cli


def run(capsys, *args):
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_shows_kind_name_distribution_version_summary(capsys, fresh_registry):
    code, out, _ = run(capsys, "list")
    assert code == 0
    header = out.splitlines()[0].split()
    assert header == ["kind", "name", "distribution", "version", "summary"]
    row = next(line.split() for line in out.splitlines() if line.startswith("preconditioner") and " edm " in line)
    assert row[:3] == ["preconditioner", "edm", "diffusion-schemes-edm"]


def test_list_json_is_machine_readable(capsys, fresh_registry):
    code, out, _ = run(capsys, "list", "--json", "--kind", "solver")
    assert code == 0
    rows = json.loads(out)
    assert {r["kind"] for r in rows} == {"solver"}
    assert {"name", "distribution", "version", "summary"} <= set(rows[0])


def test_show_lists_fields_types_defaults_constraints_descriptions(capsys, fresh_registry):
    code, out, _ = run(capsys, "show", "noise_schedule", "edm")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("sigma_min"))
    assert "float" in row and "0.002" in row and "> 0" in row and "Lowest sampling noise level." in row


def test_schema_prints_json_schema(capsys, fresh_registry):
    code, out, _ = run(capsys, "schema", "preconditioner")
    assert code == 0
    schema = json.loads(out)
    assert "edm" in json.dumps(schema)


def test_unknown_name_exits_2_with_the_installed_names(capsys, fresh_registry):
    code, _, err = run(capsys, "show", "preconditioner", "edn")
    assert code == 2
    assert "Did you mean 'edm'?" in err


def test_bad_usage_exits_2(capsys, fresh_registry):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["show", "not-a-kind", "edm"])
    assert exit_info.value.code == 2


def test_doctor_reports_every_distribution_and_exits_0_when_healthy(capsys, fresh_registry):
    code, out, _ = run(capsys, "doctor")
    assert code == 0
    assert any(line.startswith("diffusion-schemes-edm") and "loaded" in line for line in out.splitlines())
    assert "0 failed, 0 conflict(s)" in out
