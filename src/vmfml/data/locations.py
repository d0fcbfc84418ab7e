"""Where data files live: the data cache ($VMFML_DATA) and a search over candidate folders."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

DEFAULT_DATA_HOME = "~/.cache/vmfml/data"


def data_home() -> Path:
    """The folder that holds downloaded or unpacked data: $VMFML_DATA, else ~/.cache/vmfml/data."""
    return Path(os.environ.get("VMFML_DATA") or DEFAULT_DATA_HOME).expanduser()


def find_dir(candidates: Sequence[Path], required: Sequence[str]) -> Path | None:
    """The first candidate folder that holds every file named in `required`, else None."""
    for folder in candidates:
        if all((folder / name).is_file() for name in required):
            return folder
    return None
