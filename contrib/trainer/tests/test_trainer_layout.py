"""The trainer's layout: no import circle (module-level or inside functions), imports inside functions only
where they defer a heavy optional library, and the core reached only through its public API."""

from __future__ import annotations

import ast
from pathlib import Path

import diffusion_schemes_trainer

PACKAGE = Path(diffusion_schemes_trainer.__file__).parent
NAME = "diffusion_schemes_trainer"
#: Libraries that may be imported inside a function: optional extras, loaded only when drawing or reading digits.
DEFERRED = ("matplotlib", "sklearn", "diffusers", "physicsnemo", "diffusion_schemes_physicsnemo")  # heavy or optional: built only when used


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([NAME, *parts])] = path
    return out


def _imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for every import statement of ``module``."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside |= {id(n) for n in ast.walk(node) if n is not node}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in inside) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:  # ``from . import plots``: the submodule
                target = f"{base}.{alias.name}"
                found.append((target if target in modules else base, node.lineno, id(node) in inside))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {t for t, _, _ in _imports(m, p, modules) if t in modules and t != m} for m, p in modules.items()}


def test_the_walk_sees_the_packages_and_their_arrows():
    graph = _graph()
    assert {f"{NAME}.commands.train", f"{NAME}.storage.checkpoint", f"{NAME}.models.mlp"} <= set(graph)
    assert f"{NAME}.storage.verified" in graph[f"{NAME}.storage.checkpoint"]
    assert f"{NAME}.plots" in graph[f"{NAME}.training.trainer"]  # ``from .. import plots``
    assert f"{NAME}.commands" in graph[NAME]  # the hook's import inside a function counts too


def _circles(graph: dict[str, set[str]]) -> list[str]:
    """Every back edge of a depth-first walk, as the circle it closes (``a -> b -> a``)."""
    state: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return circles


def test_the_import_graph_has_no_circle():
    assert _circles(_graph()) == []


def test_a_circle_is_found_when_there_is_one():
    """The check above can fail: an arrow back from the storage to a command closes a circle through it."""
    graph = _graph()
    graph[f"{NAME}.storage.atomic"].add(f"{NAME}.commands.train")
    circles = _circles(graph)
    assert circles and all(f"{NAME}.storage.atomic -> {NAME}.commands.train" in c for c in circles)


def test_imports_inside_functions_only_defer_heavy_optional_libraries():
    modules = _modules()
    inside = [f"{m}:{line} imports {t}" for m, p in modules.items() for t, line, deferred in _imports(m, p, modules)
              if deferred and not t.startswith(DEFERRED) and not (m == NAME and t == f"{NAME}.commands")]
    assert inside == []  # the package's hook imports the commands only when the command line is built


def test_the_core_is_reached_through_its_public_api_only():
    modules = _modules()
    private = [f"{m}:{line} imports {t}" for m, p in modules.items() for t, line, _ in _imports(m, p, modules)
               if t.startswith("diffusion_schemes.") and any(part.startswith("_") for part in t.split(".")[1:])]
    assert private == []
