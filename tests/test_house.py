"""The package's shape: every module imports on its own, and no module-level import cycle."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "aelab"
MAX_LINES = 420  # "about 400": a module that outgrows this is split


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(p) for p in PACKAGE.rglob("*.py"))


def _resolve(name: str, level: int, here: str, is_package: bool) -> str:
    if level == 0:
        return name
    base = here.split(".") if is_package else here.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def module_imports(path: Path) -> set[str]:
    """The aelab modules `path` imports (at module level or inside a function), each import
    also counting its parent packages, whose __init__ runs first (but for the module's own
    ancestors, which are already importing it)."""
    here, is_package = module_name(path), path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):  # lazy imports inside functions too
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, here, is_package)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    ancestors = {".".join(here.split(".")[:i]) for i in range(1, here.count(".") + 1)}
    return {m for m in found if m in MODULES and m != here} - ancestors  # a parent runs first


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (a list of modules, the first repeated last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_package():
    graph = {module_name(p): module_imports(p) for p in PACKAGE.rglob("*.py")}
    assert len(graph) > 30 and any(graph.values())
    cycle = find_cycle(graph)
    if cycle:
        pytest.fail("import cycle: " + " -> ".join(cycle))


def test_every_module_imports_in_turn():
    """`python -c` importing every module of the package in turn, in a fresh interpreter."""
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    proc = subprocess.run([sys.executable, "-c", code, *MODULES], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("module", MODULES)
def test_no_module_is_over_about_400_lines(module):
    lines = len(Path(importlib.util.find_spec(module).origin).read_text().splitlines())
    if lines > MAX_LINES:
        pytest.fail(f"{module} has {lines} lines (at most {MAX_LINES})")


def test_the_package_has_its_rooms():
    rooms = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert {"config", "data", "models", "losses", "training", "diagnostics",
            "analysis"} <= rooms
    flat = [p.name for p in PACKAGE.glob("*.py")]
    assert len(flat) <= 8, flat  # entry points and errors; the rest lives in the rooms
