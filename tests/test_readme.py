"""The README's Python example runs as written, and its commands name files that exist."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_blocks_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python example"
    for block in blocks:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a random batch may miss a class
            exec(compile(block, str(README), "exec"), {})


def test_commands_refer_to_existing_scripts() -> None:
    root = README.parent
    for script in re.findall(r"bash (scripts/\S+\.sh)", README.read_text()):
        assert (root / script).is_file(), script
