"""Data errors reach the user as their own one-line message, also from DataLoader workers.

An exception raised in a DataLoader worker process comes back to the main process rebuilt by torch
as `type(err)("Caught ValueError in DataLoader worker process 0.\\nOriginal Traceback ...")`:
the worker's whole traceback, some thirty lines, where the user needs the last one ("cannot read
image a/b.png: ..."). Two remedies, used together:

- `DataError`, raised for bad data (see `decode_image`), recovers its own message when torch
  rebuilds it, so it reads the same whichever process raised it, whatever loop consumes it;
- `reraise_worker_errors(batches)` does the same for any exception type around a loader.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

WORKER_PREFIX = "Caught "
WORKER_MARK = " in DataLoader worker process "


class DataError(ValueError):
    """Bad input data: an image that cannot be read, a list naming a missing file.

    The message names the file. Built from a DataLoader worker's wrapped traceback, it keeps only
    the original message (see the module docstring).
    """

    def __init__(self, message: object = "") -> None:
        text = str(message)
        original = worker_message(text, type(self))
        super().__init__(text if original is None else original)


def worker_message(text: str, exc_type: type[BaseException]) -> str | None:
    """The original message inside torch's text for an `exc_type` raised in a DataLoader worker;
    None if `text` is not such a text."""
    first_line = text.split("\n", 1)[0]
    if not (first_line.startswith(WORKER_PREFIX) and WORKER_MARK in first_line):
        return None
    # traceback.format_exception ends with "module.Qualname: message" ("Qualname: " for builtins).
    names = [exc_type.__qualname__]
    if exc_type.__module__ not in ("builtins", "__main__"):
        names.insert(0, f"{exc_type.__module__}.{exc_type.__qualname__}")
    for name in names:
        at = text.rfind(f"\n{name}: ")
        if at >= 0:
            return text[at + len(name) + 3 :].rstrip("\n")
    return None


def reraise_worker_errors(batches: Iterable[T]) -> Iterator[T]:
    """Iterate `batches` (a DataLoader); an exception from a worker process is raised again as
    the same type with the worker's original message, instead of torch's wrapped traceback."""
    iterator = iter(batches)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception as err:
            original = worker_message(str(err.args[0]) if err.args else "", type(err))
            if original is None:
                raise
            try:
                clean = type(err)(original)
            except Exception:
                clean = RuntimeError(original)
            raise clean from None
        yield item
