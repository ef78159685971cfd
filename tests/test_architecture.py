"""The structure the core promises: no import cycle, a small public API listed once, plugins
that state only their parameters (the spec is their single source)."""

from __future__ import annotations

import ast
import pathlib

import pytest

import diffusion_schemes as ds

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORE = ROOT / "core" / "diffusion_schemes"


def _imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    """Core modules ``path`` imports, inside functions too, but not under ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped or not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 1:
            names = [node.module] if node.module else [a.name for a in node.names]
        elif node.module and node.module.split(".")[0] == "diffusion_schemes":
            parts = node.module.split(".")
            names = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
        else:
            continue
        found |= {n.split(".")[0] for n in names} & modules
    return found - {path.stem}


def import_graph() -> dict[str, set[str]]:
    modules = {p.stem for p in CORE.glob("*.py")}
    return {p.stem: _imports(p, modules) for p in CORE.glob("*.py")}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_core_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_public_api_is_small_and_listed_once():
    assert len(ds.__all__) <= 41  # 39 + Posterior and Patched, names fixed by issue 23
    assert len(ds.__all__) == len(set(ds.__all__))
    owners: dict[str, str] = {}
    for path in (p for p in CORE.glob("_*.py") if not p.stem.startswith("__")):
        module = __import__(f"diffusion_schemes.{path.stem}", fromlist=["__all__"])
        for name in getattr(module, "__all__", []):
            if name in ds.__all__:
                assert name not in owners, f"{name} is exported by {owners.get(name)} and {path.stem}"
                owners[name] = path.stem
    assert set(owners) == set(ds.__all__), sorted(set(ds.__all__) - set(owners))


def test_design_contract_names_are_public():
    contract = [
        "hookimpl", "DiffusionModel", "Preconditioner", "NoiseSchedule", "BaseAffinePreconditioner",
        "BaseNoiseSchedule", "SchemeSpec", "PreconditionerSpec", "NoiseScheduleSpec", "WeightingSpec",
        "SolverSpec", "list_schemes", "create", "spec_type", "json_schema", "MSEDSMLoss", "sample",
        "ConcatConditionWrapper", "BaseSolver", "BaseWeighting", "SigmaTimeSchedule", "EpsilonPreconditioner",
        "SpecBacked", "parse_spec", "registry",
    ]
    assert not set(contract) - set(ds.__all__), sorted(set(contract) - set(ds.__all__))


@pytest.mark.parametrize("name", ["UnknownSchemeError", "SchemeConfigError", "DiffusionSchemesError", "SchemeSpec"])
def test_errors_and_specs_print_under_the_package(name):
    assert getattr(ds, name).__module__ == "diffusion_schemes"


def test_unknown_scheme_error_prints_under_the_package():
    with pytest.raises(ds.UnknownSchemeError) as info:
        ds.create("solver", "nope")
    assert info.typename == "UnknownSchemeError"
    assert f"{type(info.value).__module__}.{type(info.value).__qualname__}" == "diffusion_schemes.UnknownSchemeError"


@pytest.mark.parametrize(
    "folder", ["plugins", "contrib/cosine", "contrib/flow_matching"]
)
def test_schemes_write_no_get_config(folder):
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / folder).rglob("*.py")
        if "def get_config" in p.read_text()
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "kind, name, config",
    [
        ("noise_schedule", "edm", {"sigma_max": 50.0, "weighting": {"name": "sigmoid", "bias": 1.0}}),
        ("noise_schedule", "vp", {"epsilon_s": 0.002}),
        ("noise_schedule", "iddpm", {"j0": 4}),
        ("noise_schedule", "cosine", {"shift": 0.5}),
        ("weighting", "sigmoid", {"bias": -1.0}),
    ],
)
def test_the_spec_is_the_single_source(kind, name, config):
    built = ds.create(kind, {"name": name, **config})
    spec = ds.parse_spec(kind, {"name": name, **config})
    assert built.spec == spec
    assert built.get_config() == spec.model_dump(mode="json", exclude={"name"})
    direct = type(built)(**config)
    assert direct.get_config() == built.get_config() and repr(direct) == repr(built)
    for field, value in spec.params().items():
        if field != "weighting":
            assert getattr(built, field) == value


def test_direct_construction_validates_through_the_spec():
    from diffusion_schemes_edm import EDMNoiseSchedule

    with pytest.raises(ds.SchemeConfigError) as direct:
        EDMNoiseSchedule(sigma_min=100.0)
    with pytest.raises(ds.SchemeConfigError) as by_name:
        ds.create("noise_schedule", {"name": "edm", "sigma_min": 100.0})
    assert str(direct.value) == str(by_name.value)
    assert "sigma_min (100.0) must be below sigma_max (80.0)" in str(direct.value)
