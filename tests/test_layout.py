"""The package's structure: the reader's library (`cookbook`) never imports the project's tooling
(`cookbook_tools`), no module imports another that imports it back (at any depth, imports inside
functions included), and paths and the repository URL are defined in one module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("cookbook", "cookbook_tools")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if "sglang_cpu" in path.parts:  # engine-side stand-ins: imported by the engine only
                continue
            found[_module_name(path)] = path
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert cycles(import_graph(_modules())) == []


def test_the_library_never_imports_the_tooling():
    graph = import_graph(_modules())
    upward = {
        (name, target)
        for name, targets in graph.items()
        if name.startswith("cookbook.") or name == "cookbook"
        for target in targets
        if target.split(".")[0] == "cookbook_tools"
    }
    assert not upward


@pytest.mark.parametrize("name", ["REPO_ROOT", "DATA_DIR", "FIXTURES_DIR", "ENGINE_SIDE_DIR"])
def test_paths_are_defined_once(name):
    where = [
        path.relative_to(REPO).as_posix()
        for path in _modules().values()
        if f"\n{name} =" in path.read_text()
    ]
    assert where == ["cookbook/paths.py"]


def test_the_repository_url_is_only_in_pyproject():
    from cookbook import paths

    assert paths.github_slug() in paths.repository_url()
    assert not [p for p in _modules().values() if paths.github_slug() in p.read_text()]


def test_the_notebooks_shortcuts_are_the_library_functions_loaded_on_use():
    code = (
        "import sys, cookbook; assert 'cookbook.server' not in sys.modules; "
        "from cookbook import results, server; "
        "assert cookbook.launch is server.launch and cookbook.finish is results.finish; "
        "print(getattr(cookbook, 'nope', 'missing'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "missing", out.stderr
