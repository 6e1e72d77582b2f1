"""The package's layout stays as docs/ARCHITECTURE.md describes it: acyclic imports that point
downward, nothing below the API layer importing it, every module documented, no oversized module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "discretegrad"
ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"
MAX_LINES = 420  # "about 400"

# The API layer and above: modules the core (families, estimators, noise, registry) must never import.
API = {"discretegrad.surrogate", "discretegrad.exact", "discretegrad.diagnostics", "discretegrad.demo",
       "discretegrad.cli", "discretegrad.__main__", "discretegrad.distributions", "discretegrad._distribution",
       "discretegrad.nn", "discretegrad.leaderboard", "discretegrad.leaderboard_report",
       "discretegrad.leaderboard_records"}
CORE_PREFIXES = ("discretegrad.harness", "discretegrad.experiments")


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Package modules imported by ``path`` at any depth of its syntax tree (lazy imports count)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):  # `if TYPE_CHECKING:` imports count too: a cycle there is a cycle of the design
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the submodule; `from mod import name` the module
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in known)
    # (a package's __init__ runs before its submodules, but an edge to it from its own submodules,
    # or to the top-level package, is not a dependency between layers: both are left out)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    # the top-level package __init__ is the API entry point; every module is imported through it
    graph = {}
    for name, path in mods.items():
        deps = _imports(path, name, known) - {"discretegrad"}
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_import_graph_is_acyclic():
    cycle = _find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_cycles():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_below_the_api_layer_imports_it():
    graph = import_graph()
    for name, deps in graph.items():
        if name in API or name.startswith(CORE_PREFIXES) or name == "discretegrad":
            continue
        bad = sorted(d for d in deps if d in API or d.startswith(CORE_PREFIXES))
        assert not bad, f"{name} (core) imports the API layer or the harness: {bad}"


def test_harness_does_not_import_paper_experiments():
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("discretegrad.harness"):
            bad = sorted(d for d in deps if d.startswith("discretegrad.experiments"))
            registration = [d for d in bad if d.endswith("_modules")]
            assert sorted(set(bad) - set(registration)) == [], f"{name} imports experiments: {bad}"


def test_every_module_is_in_architecture_md():
    text = ARCHITECTURE.read_text()
    missing = []
    for name, path in _modules().items():
        rel = path.relative_to(SRC).as_posix()
        if path.name == "__init__.py" and rel != "__init__.py":
            rel = path.parent.relative_to(SRC).as_posix() + "/"
        if rel not in text:
            missing.append(rel)
    assert not missing, f"docs/ARCHITECTURE.md does not mention {missing}"


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: p.relative_to(SRC).as_posix())
def test_no_module_is_oversized(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(SRC)} has {n} lines (split it by concern)"
