"""The package's shape, read from its source with ast: no import cycles, libraries behind their
boundaries, modules and functions of a readable size (issue 16)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "ntk_advisor"
MODULES = {".".join(("ntk_advisor",) + p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
           for p in sorted(ROOT.rglob("*.py"))}
# transformers loads in exactly one module; rich and typer only in the CLI; the math only torch.
TRANSFORMERS_HOME = "ntk_advisor.inputs.models"
MAX_MODULE_LINES = 420  # "about 400"
MAX_FUNCTION_LINES = 60


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> list[tuple[str, int]]:
    """(imported module, line) for every import in module ``name``, except `if TYPE_CHECKING:` ones."""
    tree = ast.parse(MODULES[name].read_text())
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for child in ast.walk(node)}
    package = name if _is_package(name) else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:  # `from . import x` imports the submodule x when there is one
                found.append((f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base, node.lineno))
    return found


def _internal_graph() -> dict[str, set[str]]:
    return {name: {m for m, _ in _imports(name) if m in MODULES and m != name} for name in MODULES}


def test_there_are_no_import_cycles():
    graph = _internal_graph()
    colour, cycles = {}, []

    def visit(node, stack):
        colour[node] = "grey"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour.get(nxt) == "grey":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in colour:
                visit(nxt, stack)
        stack.pop()
        colour[node] = "black"

    for node in sorted(graph):
        if node not in colour:
            visit(node, [])
    assert cycles == [], " ; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle(monkeypatch, tmp_path):
    """The test above can fail: a package face that its own submodule imports back is a cycle."""
    (tmp_path / "ntk_advisor" / "pkg").mkdir(parents=True)
    (tmp_path / "ntk_advisor" / "pkg" / "__init__.py").write_text("from . import child\nHELPER = 1\n")
    (tmp_path / "ntk_advisor" / "pkg" / "child.py").write_text("from . import HELPER\n")
    fake = {"ntk_advisor.pkg": tmp_path / "ntk_advisor" / "pkg" / "__init__.py",
            "ntk_advisor.pkg.child": tmp_path / "ntk_advisor" / "pkg" / "child.py"}
    monkeypatch.setitem(globals(), "MODULES", fake)
    with pytest.raises(AssertionError, match="ntk_advisor.pkg -> ntk_advisor.pkg.child -> ntk_advisor.pkg"):
        test_there_are_no_import_cycles()


@pytest.mark.parametrize("library,allowed", [
    ("transformers", lambda m: m == TRANSFORMERS_HOME),
    ("rich", lambda m: m.startswith("ntk_advisor.cli")),
    ("typer", lambda m: m.startswith("ntk_advisor.cli")),
])
def test_libraries_stay_behind_their_boundaries(library, allowed):
    offenders = [f"{name}:{line}" for name in MODULES for module, line in _imports(name)
                 if (module == library or module.startswith(library + ".")) and not allowed(name)]
    assert offenders == []


def test_the_math_imports_only_torch():
    import sys

    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    offenders = [f"{name}:{line} imports {module}" for name in MODULES if name.startswith("ntk_advisor.ntk")
                 for module, line in _imports(name)
                 if module.split(".")[0] not in stdlib | {"torch"} and not module.startswith("ntk_advisor.ntk")]
    assert offenders == []


def test_modules_are_of_a_readable_size():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_functions_are_short_outside_the_math():
    """The math keeps its dense, oracle-tested routines; everything else reads in one screen."""
    long = []
    for name, path in MODULES.items():
        if name.startswith("ntk_advisor.ntk"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name} ({length} lines)")
    assert long == []
