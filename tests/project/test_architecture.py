"""The structure the project promises (docs/architecture.md): the core as a few packages by role on a
few import layers, no import circle anywhere in the repository, every public thing at a public path,
a small top-level contract, and plugins that state only their parameters."""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

import diffusion_schemes as ds

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORE = ROOT / "core" / "diffusion_schemes"
MAX_ENTRIES, MAX_LAYERS, MAX_TOP_LEVEL = 16, 7, 45


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    return {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }


def _module_name(path: pathlib.Path, src: pathlib.Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: pathlib.Path, name: str, modules: frozenset[str] = frozenset()) -> set[str]:
    """Every module ``path`` (module ``name``) imports, inside functions too, not under ``TYPE_CHECKING``.

    ``from a import b`` imports the module ``a.b`` when that is one of ``modules`` (a submodule), and
    ``a`` itself for any other name; ``from a import *`` imports ``a``."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.add(sub if sub in modules else module)
    return found


def module_graph(sources: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    """``module -> modules it imports`` over the packages found under each source folder
    (``name -> folder``; a folder holding an ``__init__.py`` is itself a package, such as ``benchmarks``)."""
    files: dict[str, pathlib.Path] = {}
    for src in sources.values():
        root = src.parent if (src / "__init__.py").exists() else src
        for path in src.rglob("*.py"):
            files[_module_name(path, root)] = path
    known = frozenset(files)
    return {name: {m for m in imported_modules(path, name, known) if m in files and m != name} for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
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


def layers(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each node's layer: 1 for a node importing nothing, else one above the highest it imports."""
    out: dict[str, int] = {}

    def layer(v: str) -> int:
        if v not in out:
            out[v] = 1 + max((layer(w) for w in graph[v] if w != v), default=0)
        return out[v]

    for v in graph:
        layer(v)
    return out


def _sources() -> dict[str, pathlib.Path]:
    """Every importable source folder of the repository: the core, each plugin and contrib package."""
    sources = {"core": ROOT / "core"}
    for folder in sorted([*(ROOT / "plugins").iterdir(), *(ROOT / "contrib").iterdir()]):
        if (folder / "src").is_dir():
            sources[folder.name] = folder / "src"
    return sources


def entry_graph() -> dict[str, set[str]]:
    """The core seen from ``core/diffusion_schemes``: each file or sub-package one node."""
    graph = module_graph({"core": ROOT / "core"})
    top = lambda m: m.split(".")[1] if m.count(".") else "__init__"  # noqa: E731
    entries: dict[str, set[str]] = {}
    for module, imports in graph.items():
        node = top(module)
        entries.setdefault(node, set()).update(top(m) for m in imports if m.startswith("diffusion_schemes."))
    return {node: deps - {node} for node, deps in entries.items()}


def test_cycle_finder_and_layers_on_a_planted_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layers({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"c"}}) == {"a": 3, "b": 2, "c": 1, "d": 2}


def test_relative_and_function_level_imports_are_seen(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from ..a import thing\n")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub import x\n")
    assert cycles(module_graph({"t": tmp_path})) == [{"pkg.a", "pkg.sub"}]
    (pkg / "sub" / "__init__.py").write_text("from .. import a\n")  # a submodule, not the package
    (pkg / "__init__.py").write_text("from .sub import x\n")
    (pkg / "a.py").write_text("")
    assert cycles(module_graph({"t": tmp_path})) == []


def test_the_graphs_see_the_packages():
    core = module_graph({"core": ROOT / "core"})
    assert "diffusion_schemes.sampling.sampler" in core["diffusion_schemes.sampling"]
    assert "diffusion_schemes.errors" in core["diffusion_schemes.tensors"]
    assert {"errors", "specs", "solvers", "sampling"} <= set(entry_graph())
    bench = module_graph({"benchmarks": ROOT / "benchmarks"})
    assert "benchmarks._report" in bench["benchmarks.__main__"]


def test_no_import_circle_anywhere_in_the_repository():
    graph = module_graph(_sources())
    graph.update(module_graph({"benchmarks": ROOT / "benchmarks"}))
    assert cycles(graph) == []


def test_the_core_is_a_few_packages_on_a_few_layers():
    graph = entry_graph()
    assert len(graph) <= MAX_ENTRIES, sorted(graph)
    assert cycles(graph) == []
    depth = layers(graph)
    assert max(depth.values()) <= MAX_LAYERS, sorted(depth.items(), key=lambda kv: kv[1])


@pytest.mark.parametrize("package", sorted(p.name for p in CORE.iterdir() if (p / "__init__.py").exists()))
def test_every_core_package_says_what_it_owns_and_exports(package):
    module = importlib.import_module(f"diffusion_schemes.{package}")
    assert module.__doc__ and len(module.__doc__.split()) >= 20, f"{package} needs a docstring saying what it owns"
    assert isinstance(getattr(module, "__all__", None), list)
    for name in module.__all__:
        assert hasattr(module, name), f"diffusion_schemes.{package}.__all__ names {name}, which it lacks"


def test_the_top_level_is_a_small_contract_each_name_owned_by_one_package():
    assert len(ds.__all__) <= MAX_TOP_LEVEL
    assert len(ds.__all__) == len(set(ds.__all__))
    owners: dict[str, list[str]] = {}
    for path in sorted(CORE.iterdir()):
        if path.name.startswith("_") or not (path.suffix == ".py" or (path / "__init__.py").exists()):
            continue
        module = importlib.import_module(f"diffusion_schemes.{path.stem}")
        for name in getattr(module, "__all__", []):
            if name in ds.__all__ and getattr(module, name) is getattr(ds, name):
                owners.setdefault(name, []).append(path.stem)
    assert set(owners) == set(ds.__all__), sorted(set(ds.__all__) - set(owners))
    shared = {name: where for name, where in owners.items() if len(where) > 1}
    assert shared == {}


def test_every_exception_lives_in_errors_and_prints_under_a_public_path():
    from diffusion_schemes import errors

    raised = set()
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and b.id.endswith(("Error", "Warning")) for b in node.bases
            ):
                raised.add((path.relative_to(CORE).as_posix(), node.name))
    outside_errors = {(p, n) for p, n in raised if p != "errors.py" and not p.startswith("conformance/")}
    assert outside_errors == set(), "exceptions belong in diffusion_schemes.errors"
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, (ds.DiffusionSchemesError, Warning))
        assert "._" not in cls.__module__ and cls.__module__ in ("diffusion_schemes", "diffusion_schemes.errors")
        assert getattr(importlib.import_module(cls.__module__), name) is cls
    assert f"{errors.SamplingError.__module__}.{errors.SamplingError.__qualname__}" == "diffusion_schemes.errors.SamplingError"


def test_denoiser_and_sample_result_are_public():
    from diffusion_schemes.sampling import Denoiser, SampleResult

    assert "._" not in Denoiser.__module__ and "._" not in SampleResult.__module__


def test_nothing_outside_the_core_imports_its_private_modules():
    offenders = []
    for folder in ["plugins", "contrib", "benchmarks"]:
        for path in (ROOT / folder).rglob("*.py"):
            name = "mod"
            for module in imported_modules(path, name):
                if module.startswith("diffusion_schemes.") and any(
                    part.startswith("_") for part in module.split(".")[1:]
                ):
                    offenders.append(f"{path.relative_to(ROOT)}: {module}")
    assert offenders == []


def test_api_docs_show_no_private_path():
    import re

    text = (ROOT / "docs" / "api.md").read_text()
    assert re.findall(r"\w\._[a-z]\w*", text) == []


def test_no_file_cites_a_design_file_outside_the_project():
    hits = [
        str(p.relative_to(ROOT))
        for pattern in ("*.py", "*.md", "*.toml", "*.yml", "*.txt")
        for p in ROOT.rglob(pattern)
        if ".venv" not in p.parts and p.name != "test_architecture.py" and "DESIGN.md" in p.read_text()
    ]
    assert hits == []


def test_old_import_paths_keep_working():
    from diffusion_schemes import discretizations, noise_samplers
    from diffusion_schemes.adapters import BackboneAdapter
    from diffusion_schemes.cli import main

    assert discretizations.KarrasDiscretization.__name__ == "KarrasDiscretization"
    assert noise_samplers.BrownianTreeNoiseSampler.__module__ == "diffusion_schemes.solvers.noise_samplers"
    assert callable(main) and BackboneAdapter.__name__ == "BackboneAdapter"


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
