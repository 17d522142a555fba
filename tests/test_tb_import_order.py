"""``ase_wannierml.tb`` imports run one way: no module imports, even lazily inside a function, a module that
imports it back (directly or through others). ``if TYPE_CHECKING:`` imports do not run and do not count."""
from __future__ import annotations

import ast
from pathlib import Path

import ase_wannierml.tb

TB = Path(ase_wannierml.tb.__file__).resolve().parent


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def tb_imports(source: str) -> set[str]:
    """Sibling modules of ``tb/`` a module's source imports at run time (module level or inside functions)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.ImportFrom) and child.level == 1:
                if child.module:                                  # from .x import y
                    found.add(child.module.split(".")[0])
                else:                                             # from . import x, y
                    found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("ase_wannierml.tb."):
                found.add(child.module.split(".")[2])
            elif isinstance(child, ast.Import):
                found.update(a.name.split(".")[2] for a in child.names if a.name.startswith("ase_wannierml.tb."))
            visit(child)

    visit(ast.parse(source))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {p.stem for p in TB.glob("*.py") if p.stem != "__init__"}
    return {m: tb_imports((TB / f"{m}.py").read_text()) & modules - {m} for m in sorted(modules)}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of module names (first = last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := dfs(n)) is not None:
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := dfs(m)) is not None:
            return cycle
    return None


def test_the_checker_finds_lazy_and_module_level_imports():
    src = ("from .a import x\nfrom . import b, c\nimport ase_wannierml.tb.d\nif TYPE_CHECKING:\n    from .e import E\n"
           "def f():\n    from .g import h\n")
    assert tb_imports(src) == {"a", "b", "c", "d", "g"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_tb():
    graph = import_graph()
    assert {"tightbinding", "kmesh", "basis", "bandpath", "dos", "fermi", "wannier90"} <= set(graph)
    assert find_cycle(graph) is None, f"import cycle in ase_wannierml/tb: {' -> '.join(find_cycle(graph))}"
    # the defaults, the orbital table and the progress bars are the bottom: they import nothing else from tb
    assert graph["kmesh"] == set() and graph["basis"] == set() and graph["progress"] == set()
    for analysis in ("bandpath", "dos", "fermi", "wannier90", "flatbands"):
        assert "tightbinding" not in graph[analysis], f"{analysis} imports tightbinding (the facade on top)"
