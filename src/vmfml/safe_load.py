"""Reading files written by `torch.save` without running code.

A `.pt` file is a pickle, and unpickling can call any function (a checkpoint whose pickle calls
`os.system` runs the command when loaded). Every such file vmfml reads (checkpoints, `--weights`)
is read with `torch.load(..., weights_only=True)`: tensors, numbers, strings and the usual
containers only. A file that needs more is refused in one line, before any of it runs.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

# The first bytes of torch.save's files: a zip archive, or (the legacy format) a pickle.
_MAGICS = (b"PK\x03\x04", b"\x80")


def load_tensors(
    path: str | Path, what: str, map_location: str | torch.device = "cpu", mmap: bool = False
) -> Any:
    """`torch.load(path, weights_only=True)`, with its failures as one-line `ValueError`s that
    name `path` and `what` it should have been ("vmfml checkpoint", "weights file")."""
    path = Path(path)
    if not _starts_like_torch(path):
        raise ValueError(f"{path} is not a {what}: it is not a file written by torch.save")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        needs = f" ({found.group(1)})" if found else ""
        raise ValueError(
            f"{path} is not a {what}: it holds Python objects other than tensors and plain "
            f"data{needs}, whose loading could run code; it was refused unread"
        ) from None
    except Exception as err:  # torch raises several types for a damaged or foreign file
        # torch's first sentence says what failed; the rest is advice for torch.save's users.
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0]
        raise ValueError(f"cannot read {what} {path}: {first}") from err


def _starts_like_torch(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return any(head.startswith(magic) for magic in _MAGICS)
