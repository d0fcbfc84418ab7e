"""`ReadWriteLock`: readers together, a writer alone, a waiting writer before new readers."""

from __future__ import annotations

import threading
import time

from vmfml.index.rwlock import ReadWriteLock


def test_readers_share_and_a_writer_waits_for_them_then_goes_before_new_readers() -> None:
    lock = ReadWriteLock()
    order: list[str] = []
    both_in = threading.Barrier(2, timeout=10)
    release = threading.Event()

    def reader(name: str) -> None:
        with lock.read():
            both_in.wait()  # two readers inside at once, or this times out
            order.append(f"{name} in")
            release.wait(10)
            order.append(f"{name} out")

    def writer() -> None:
        with lock.write():
            order.append("writer")

    def late_reader() -> None:
        with lock.read():
            order.append("late reader")

    readers = [threading.Thread(target=reader, args=(n,)) for n in ("r1", "r2")]
    for t in readers:
        t.start()
    while len(order) < 2:
        time.sleep(0.01)
    w = threading.Thread(target=writer)
    w.start()
    while not lock._writers_waiting:
        time.sleep(0.01)
    late = threading.Thread(target=late_reader)
    late.start()
    time.sleep(0.2)
    assert "writer" not in order and "late reader" not in order  # the writer waits for both
    release.set()
    for t in [*readers, w, late]:
        t.join(10)
    assert sorted(order[:2]) == ["r1 in", "r2 in"]
    assert order[4:] == ["writer", "late reader"]  # the waiting writer went first


def test_an_exception_inside_releases_the_lock() -> None:
    lock = ReadWriteLock()
    for take in (lock.read, lock.write):
        try:
            with take():
                raise RuntimeError("boom")
        except RuntimeError:
            pass
    with lock.write():  # would block forever if either had leaked
        pass
