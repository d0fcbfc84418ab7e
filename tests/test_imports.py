"""No import cycle among vmfml's modules: the layers only import downwards.

Read from the source with `ast` (nothing is imported), so a cycle is found even where Python
would tolerate it at run time. Every import statement counts, also those inside functions: a
lazy import still makes its module depend on the other (the old bench report/plots cycle ran
through one). Imports under `if TYPE_CHECKING:` never run and are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vmfml"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """All nodes, except the bodies of `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` (the module in `path`) imports.

    `from a.b import c` imports the module `a.b.c` when there is one, else the module `a.b`
    (where `c` is a name defined in it). Relative imports are resolved against `name`.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return {m for m in found if m in known and m != name}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = modules(root)
    known = set(files)
    return {name: imported_modules(name, path, known) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, colouring the nodes)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycle_in_the_package() -> None:
    graph = import_graph()
    assert len(graph) > 20 and "vmfml.cli" in graph  # the package was found and read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_check_sees_cycles_through_lazy_and_relative_imports(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("from .a import f\n")
    (root / "sub" / "a.py").write_text("def f():\n    from pkg.b import g\n    return g\n")
    (root / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import h\n"
        "from .sub import a\n"
    )
    (root / "c.py").write_text("import pkg.b\n")
    graph = import_graph(root)
    assert graph == {
        "pkg": set(),
        "pkg.sub": {"pkg.sub.a"},
        "pkg.sub.a": {"pkg.b"},
        "pkg.b": {"pkg.sub.a"},
        "pkg.c": {"pkg.b"},
    }
    assert find_cycle(graph) == ["pkg.b", "pkg.sub.a", "pkg.b"]
    (root / "b.py").write_text("import pkg.c\n")  # c imports b back only under TYPE_CHECKING now
    (root / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.b\n"
    )
    assert find_cycle(import_graph(root)) is None


def test_no_package_export_is_shadowed_by_a_submodule_of_its_name() -> None:
    """vmfml.index and vmfml.web import their parts on first use (PEP 562 `__getattr__`); a
    submodule named like an export would replace it in the package once imported."""
    import importlib
    import inspect
    import pkgutil

    for name in ("vmfml.index", "vmfml.web"):
        package = importlib.import_module(name)
        modules = {m.name for m in pkgutil.iter_modules(package.__path__)}
        for module in modules:  # every part imported, as a long-running process ends up
            importlib.import_module(f"{name}.{module}")
        for export in package.__all__:
            assert not inspect.ismodule(getattr(package, export)), f"{name}.{export}"
