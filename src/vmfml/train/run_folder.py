"""A run folder belongs to one run at a time, and holds only what vmfml wrote or was told to
replace.

- **Owned while training.** A run holds an exclusive `flock` on `.vmfml-lock` in its folder
  for as long as it trains; the file names the holder (pid, host, start time). A second run
  into the same folder is refused at once, naming it. The kernel drops the lock when the
  holder ends, even killed, so a stale lock never blocks a folder. Under torchrun, process 0
  holds it; `vmfml train --nproc N` takes it before launching torchrun, and its processes run
  under it (`HELD_ENV`).
- **Its own files only.** `.vmfml-files.json` records each file the run writes (size and
  modification time); a checkpoint is known by its content. A file of `RUN_FILES` that vmfml
  did not write (a user's own config.yaml or history.json) is never replaced without
  `--overwrite` (`foreign_files`).
- **A failed start leaves nothing.** A run that fails before its first checkpoint removes the
  files it wrote, and the folders it created.
- **A failed write is one line.** `write` turns an `OSError` (a full disk) into a `ValueError`
  that names the file and says what is kept (files are written atomically: the previous one).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmfml.files import write_text_atomic

LOCK = ".vmfml-lock"
MANIFEST = ".vmfml-files.json"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
# What `vmfml classify` needs beside the network (`train.open_set`).
CLASSIFIER = "classifier.pt"
# What a run writes into its folder (the plots only with --plots true).
RUN_FILES = (
    "config.yaml",
    CHECKPOINT,
    BEST,
    CLASSIFIER,
    "metrics.json",
    "history.json",
    "training_curves.png",
    "embedding.png",
    "reliability.png",
)
# What the trackers of --log-to write (`train.loggers`): removed with the run's files when a new
# run starts, never checked as the user's own (they change as the tracker writes them).
TRACKER_FILES = ("tensorboard", "mlflow.db", "mlflow-artifacts", "mlflow_run.json")
# Set by `vmfml train --nproc N` for the torchrun it starts: the lock file it holds.
HELD_ENV = "VMFML_RUN_FOLDER_HELD"


@dataclass
class RunFolder:
    path: Path
    # Whether this process writes the run's files (process 0 of a torchrun launch).
    owner: bool = True
    # Set once the run has a checkpoint of its own: a failure after it is not a failed start.
    started: bool = False
    written: set[str] = field(default_factory=set)

    def write(self, name: str, write: Callable[[Path], object]) -> None:
        """Write run file `name` with `write(path)` (an atomic writer) and record it as vmfml's."""
        path = self.path / name
        existed = path.exists()
        try:
            write(path)
        except OSError as err:
            kept = f"the previous {name} is kept" if existed else f"{name} was not written"
            raise ValueError(f"cannot write {path}: {err.strerror or err}; {kept}") from err
        self.written.add(name)
        try:
            self._record(name)
        except OSError as err:
            raise ValueError(
                f"cannot write {self.path / MANIFEST}: {err.strerror or err}; {name} is written"
            ) from err
        if name == CHECKPOINT:
            self.started = True

    def remove_run_files(self) -> None:
        """A new run replaces the previous one whole: none of its files is left to be mixed in."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for name in TRACKER_FILES:
            if (self.path / name).is_dir():
                shutil.rmtree(self.path / name)
            else:
                (self.path / name).unlink(missing_ok=True)
        self._forget(RUN_FILES)

    def _manifest(self) -> dict[str, Any]:
        try:
            files = json.loads((self.path / MANIFEST).read_text())["files"]
            return dict(files) if isinstance(files, dict) else {}
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def _record(self, name: str) -> None:
        stat = (self.path / name).stat()
        files = {**self._manifest(), name: [stat.st_size, stat.st_mtime_ns]}
        write_text_atomic(self.path / MANIFEST, json.dumps({"files": files}))

    def _forget(self, names: tuple[str, ...] | set[str]) -> None:
        files = {k: v for k, v in self._manifest().items() if k not in names}
        if files:
            write_text_atomic(self.path / MANIFEST, json.dumps({"files": files}))
        else:
            (self.path / MANIFEST).unlink(missing_ok=True)

    def foreign_files(self) -> list[str]:
        """The files of `RUN_FILES` in the folder that vmfml did not write: not recorded in the
        manifest as they are now (checkpoints: not vmfml checkpoints). A folder without a
        manifest (a run of an older vmfml) is vmfml's when its checkpoint.pt is one."""
        from vmfml.train.checkpoint import load_checkpoint

        def ours_by_content(name: str) -> bool:
            try:
                load_checkpoint(self.path / name, mmap=True)
            except (ValueError, OSError):
                return False
            return True

        present = [name for name in RUN_FILES if (self.path / name).is_file()]
        if not (self.path / MANIFEST).is_file():
            old_run = CHECKPOINT in present and ours_by_content(CHECKPOINT)
            return [] if old_run else present
        recorded = self._manifest()
        foreign = []
        for name in present:
            if name in (CHECKPOINT, BEST):
                ours = ours_by_content(name)
            else:
                stat = (self.path / name).stat()
                ours = recorded.get(name) == [stat.st_size, stat.st_mtime_ns]
            if not ours:
                foreign.append(name)
        return foreign


@contextlib.contextmanager
def claim(path: Path, *, owner: bool = True, lock: bool = True) -> Iterator[RunFolder]:
    """Hold run folder `path` (made if missing) for the duration of the block.

    `owner`: this process writes the folder's files (False: another process of a torchrun
    launch does; nothing is made, locked or removed). `lock`: take the lock (False when the
    `vmfml train --nproc` that launched this process holds it).
    """
    folder = RunFolder(path, owner=owner)
    if not owner:
        yield folder
        return
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"--out-dir {path} is a file, not a folder; give the folder for the run's files "
            "(it is made if missing)"
        )
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a parent that is a file, a read-only place, ...
        raise ValueError(f"cannot make the run folder {path}: {err.strerror or err}") from None
    fd = None
    try:
        fd = _lock(path) if lock else None
        yield folder
    finally:
        if not folder.started:
            for name in folder.written:
                (path / name).unlink(missing_ok=True)
            # On a full disk, the error that ended the run is the one to report.
            with contextlib.suppress(OSError):
                folder._forget(folder.written)
        if fd is not None:
            (path / LOCK).unlink(missing_ok=True)  # still held: no one else can be using it
            os.close(fd)
        for made in created:  # deepest first; only those left empty
            try:
                made.rmdir()
            except OSError:
                break


def _lock(path: Path) -> int:
    """Take the folder's lock, or refuse naming its holder. Returns the open lock file."""
    lock = path / LOCK
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 400).decode(errors="replace").strip() or "starting up"
            os.close(fd)
            raise ValueError(
                f"{path} is in use by another run ({holder}); two runs in one folder would mix "
                "their files: wait for it to end, or use --out-dir NEW"
            ) from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its holder removed the file as we opened it: lock the new one
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    os.ftruncate(fd, 0)
    os.write(
        fd,
        f"vmfml train, pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode(),
    )
    return fd


def held_by_launcher(path: Path) -> bool:
    """Whether the `vmfml train --nproc N` that started this process holds `path`'s lock."""
    return os.environ.get(HELD_ENV) == str((path / LOCK).resolve())
