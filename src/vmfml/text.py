"""Counts and commands as printed to a user: `plural(1, "step")` is "1 step", and
`command_prefix()` is the `vmfml` that runs in the user's shell as printed."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

__all__ = ["command_prefix", "plural", "quote_path"]


def plural(count: int, word: str, plural_form: str | None = None) -> str:
    """`count` and `word`, in the plural unless `count` is 1: "1 step", "2 steps", "0 images"."""
    form = word if count == 1 else (plural_form or word + "s")
    return f"{count} {form}"


def quote_path(path: str | os.PathLike[str]) -> str:
    """A path as a shell word (quoted only when it needs to be)."""
    return shlex.quote(str(path))


def command_prefix() -> str:
    """How the user runs this vmfml from the current folder: `vmfml` when that name on PATH is
    this environment's own command; else the path of this environment's command (relative when
    it lies under the current folder, as `.venv/bin/vmfml` after the README's set-up); else
    `PYTHON -m vmfml` with this interpreter."""
    own = Path(sys.executable).parent / "vmfml"
    if not (own.is_file() and os.access(own, os.X_OK)):
        return f"{quote_path(sys.executable)} -m vmfml"
    found = shutil.which("vmfml")
    if found is not None and _same_file(Path(found), own):
        return "vmfml"
    absolute = Path(os.path.abspath(own))
    try:
        shown = str(absolute.relative_to(Path.cwd()))
    except ValueError:
        shown = str(absolute)
    if "/" not in shown:  # a bare name would be looked up on PATH
        shown = "./" + shown
    return quote_path(shown)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False
