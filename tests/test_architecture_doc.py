"""docs/architecture.md names only things that exist: every module and name it lists imports.

The doc's convention (stated at its top), read mechanically here:
- a code span that is a file path (`losses/base.py`, `data/benchmarks/`; relative to src/vmfml,
  else to the repository) must exist, and a module's path makes it the scope of the names that
  follow it in the same paragraph, list item or table row; a heading that starts with such a
  path is the scope of its section;
- a code span that is a name, optionally called and typed (`Name`, `Name.attr`,
  `name(args) -> result`), must be found in the scope, or from the package when its first part
  is `vmfml` or one of the package's top-level modules (`distributed.shard_rows`); outside a
  scope other names are not references. Any other code span (shapes, flags, commands) is prose.
A name exists when `getattr` finds it, when a class annotates it, or when a class's own code
assigns it to `self`.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "vmfml"
DOC = ROOT / "docs" / "architecture.md"

SPAN = re.compile(r"`([^`\n]+)`")
NAME = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\(.*\))?(?:\s*->.*)?$")
PATH = re.compile(r"^[\w./-]*(?:/|\.py)$")
TOP_LEVEL = {"vmfml"} | {
    p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()
}


def module_of_path(path: str) -> str | None:
    """`losses/base.py` -> `vmfml.losses.base`; `data/benchmarks/` -> `vmfml.data.benchmarks`;
    None for a path outside the package (which must exist all the same)."""
    target = PACKAGE / path
    if not target.exists():
        if (ROOT / path).exists():
            return None
        raise LookupError(f"no file {path} (under src/vmfml or the repository)")
    rel = target.resolve().relative_to(PACKAGE.resolve())
    parts = list(rel.with_suffix("").parts) if target.is_file() else list(rel.parts)
    if target.is_file() and target.suffix != ".py":
        return None
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(["vmfml", *parts])


def has_attribute(owner: Any, name: str) -> bool:
    if hasattr(owner, name):
        return True
    if not inspect.isclass(owner):
        return False
    for cls in owner.__mro__:
        if name in getattr(cls, "__annotations__", {}):
            return True
        if cls.__module__.startswith("vmfml"):
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "self"
                    and isinstance(node.ctx, ast.Store)
                    and node.attr == name
                ):
                    return True
    return False


def resolve_in(full: list[str], dotted: str) -> None:
    """Import the longest module prefix of `full` and find the rest as attributes."""
    owner: Any = None
    for i in range(len(full), 0, -1):
        try:
            owner = importlib.import_module(".".join(full[:i]))
        except ModuleNotFoundError as err:
            if err.name is not None and not ".".join(full[:i]).startswith(err.name):
                raise
            continue
        rest = full[i:]
        break
    else:
        raise LookupError(f"{dotted}: no module")
    for j, part in enumerate(rest):
        if not has_attribute(owner, part):
            where = ".".join(full[: len(full) - len(rest) + j])
            raise LookupError(f"{dotted}: {where} has no {part}")
        owner = getattr(owner, part, None)


def resolve(dotted: str, scope: str | None) -> None:
    """Find `dotted` in module `scope`, or from the package when it starts with one of its
    top-level names; raise LookupError (for the first way tried) when neither finds it."""
    parts = dotted.split(".")
    ways = []
    if scope is not None:
        ways.append([*scope.split("."), *parts])
    if parts[0] in TOP_LEVEL:
        ways.append(parts if parts[0] == "vmfml" else ["vmfml", *parts])
    first: LookupError | None = None
    for full in ways:
        try:
            resolve_in(full, dotted)
            return
        except LookupError as err:
            first = first or err
    if first is not None:
        raise first


def units(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each paragraph, list item, table row and heading, its lines
    joined; fenced blocks left out."""
    found: list[tuple[int, list[str]]] = []
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced or not line.strip():
            found.append((number, []))
            continue
        starts = line.startswith(("#", "- ", "* ", "|")) or re.match(r"\d+\. ", line)
        if starts or not found or not found[-1][1] or found[-1][1][0].startswith("#"):
            found.append((number, [line.strip()]))
        else:
            found[-1][1].append(line.strip())
    return [(number, " ".join(lines)) for number, lines in found if lines]


def references(text: str) -> list[tuple[int, str, str | None]]:
    """(line number, code span, scope module) of every span the convention makes a reference."""
    found: list[tuple[int, str, str | None]] = []
    section: str | None = None
    for number, unit in units(text):
        heading = unit.startswith("#")
        if heading:
            section = None
        scope = section
        for index, span in enumerate(SPAN.findall(unit)):
            if PATH.match(span):
                found.append((number, span, None))
                module = module_of_path(span) if (PACKAGE / span).exists() else None
                if module is not None:
                    scope = module
                    if heading and index == 0:
                        section = module
            elif NAME.match(span):
                found.append((number, NAME.match(span).group(1), scope))  # type: ignore[union-attr]
    return found


def check(text: str) -> list[str]:
    """Every broken reference of `text`, one line each (empty when all resolve)."""
    errors = []
    for number, span, scope in references(text):
        try:
            if PATH.match(span):
                module_of_path(span)
            else:
                resolve(span, scope)
        except (LookupError, ImportError) as err:
            errors.append(f"docs/architecture.md:{number}: {err}")
    return errors


def test_every_name_in_the_architecture_doc_exists() -> None:
    text = DOC.read_text()
    errors = check(text)
    assert not errors, "\n".join(errors)
    # The convention is in use: the doc's references are many and reach every subpackage.
    refs = references(text)
    assert len(refs) > 150
    scopes = {s.split(".")[1] for _, _, s in refs if s and "." in s} | {
        r.split(".")[0] for _, r, s in refs if s is None and r.split(".")[0] in TOP_LEVEL
    }
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages <= scopes, subpackages - scopes


def test_the_check_fails_on_names_that_do_not_exist() -> None:
    wrong = "\n".join(
        [
            "| `train/loop.py` | `Trainer`, `train` | the class the old doc named |",
            "- `losses/base.py` `BaseLoss.no_such_method`",
            "- `losses/missing.py` `Anything`",
            "The loop calls `directions.compute_class_sums` and `distributed.no_such_function`.",
            "### `directions/base.py`: heading scope",
            "`MeanDirections.refresh`, `MeanDirections.class_sums`, `NoSuchClass`",
            "```",
            "`Ignored` inside a fenced block",
            "```",
            "`FullPass.model` is no name of directions.base, `train.loop.FullPass.model` is one.",
        ]
    )
    errors = check(wrong)
    joined = "\n".join(errors)
    assert "vmfml.train.loop has no Trainer" in joined
    assert "vmfml.losses.base.BaseLoss has no no_such_method" in joined
    assert "no file losses/missing.py" in joined
    assert "vmfml.distributed has no no_such_function" in joined
    assert "vmfml.directions.base has no NoSuchClass" in joined
    assert "vmfml.directions.base has no FullPass" in joined
    assert len(errors) == 6, joined


def test_paths_and_packages_map_to_modules() -> None:
    assert module_of_path("losses/base.py") == "vmfml.losses.base"
    assert module_of_path("data/benchmarks/") == "vmfml.data.benchmarks"
    assert module_of_path("configs/__init__.py") == "vmfml.configs"
    assert module_of_path("tests/test_imports.py") is None
