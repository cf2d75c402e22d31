"""The package's import graph: no cycles, and the rooms import in one direction.

Every ``import hwprune...`` counts, lazy ones inside functions too: a cycle hidden behind a lazy
import is still a cycle a reader has to hold in their head.
"""

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hwprune"

# Rooms that must never import the orchestration above them.
BELOW_THE_JOB = ("agents", "latency", "pruning", "profilers", "models")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The hwprune modules ``path`` imports, resolved to modules (``from hwprune.x import y`` is x.y if that is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("hwprune")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hwprune"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists() else node.module)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        # A package's __init__ re-exports its children; a child importing its own package is not a cycle through it.
        edges[name] = {m for m in imports_of(path) if m in modules and m != name}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            # a package's __init__ importing its own submodules (and them importing siblings) is how packages work
            if nxt == node.rsplit(".", 1)[0] or node == nxt.rsplit(".", 1)[0]:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_check_can_fail() -> None:
    assert find_cycle({"a.x": {"a.y"}, "a.y": {"a.x"}}) == ["a.x", "a.y", "a.x"]


def test_nothing_below_the_job_imports_it() -> None:
    offenders = [
        f"{name} imports {dep}"
        for name, deps in graph().items()
        if name.split(".")[1:2] and name.split(".")[1] in BELOW_THE_JOB
        for dep in deps
        if dep.startswith(("hwprune.job", "hwprune.commands", "hwprune.cli"))
    ]
    assert not offenders


@pytest.mark.parametrize("name", sorted(graph()))
def test_every_module_imports_on_its_own(name: str) -> None:
    importlib.import_module(name)
