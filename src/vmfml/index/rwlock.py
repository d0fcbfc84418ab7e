"""`ReadWriteLock`: many readers at once, or one writer; a waiting writer goes first.

A gallery's searches only read its faiss index (faiss's CPU searches may run concurrently) while
its writes change it: with one plain lock every search of a server waited for the one before.
Not re-entrant: a thread holding it must not acquire it again (the gallery takes it once per
public call).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    """Shared (read) and exclusive (write) locking, writer-preferring.

    Example:
        >>> lock = ReadWriteLock()
        >>> with lock.read():
        ...     pass  # other readers may be here too; no writer is
        >>> with lock.write():
        ...     pass  # alone
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            # A waiting writer goes before new readers, or a stream of searches would starve it.
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()
