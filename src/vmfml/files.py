"""Output files appear whole or not at all, even when the writer is killed (SIGKILL) midway.

One file: `atomic_write` writes a temporary file in the target's folder and renames it over the
target. A folder of several files: `atomic_folder` writes a complete new folder beside the target
and swaps it in with one rename, so that a reader never sees files of two versions mixed.

Every temporary entry that belongs to a target `.../NAME` is called `.NAME.<host>-<pid>-<random>.tmp`
(a file, or a folder for `atomic_folder` and `scratch_dir`). A process killed midway cannot remove
its own; the next write of the same target removes those whose process is gone
(`remove_stale_temps`), and never those of a process still running.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call `write(tmp_path)`, then rename the temporary file over `path`.

    A crash mid-write leaves any previous file intact (`os.replace` is atomic on POSIX); an
    exception in `write` (a failed check, say) removes the temporary file and leaves `path` as it
    was. A symbolic link at `path` stays a link: the file it points to is the one replaced.
    The file gets the usual permissions (0666 minus the umask), not mkstemp's private 0600,
    so that an index written by one user can be served by another.
    """
    path = write_target(Path(path))
    if path.is_dir():
        raise ValueError(f"cannot write the file {path}: it is a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_target(path: Path) -> Path:
    """The file a write to `path` replaces: the target of a symbolic link (so that the link
    stays a link, as with any program that writes through it), else `path` itself."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def check_output_file(path: str | Path, flag: str, make_folders: bool = False) -> Path:
    """Refuse, before any work, an output file that cannot be written where the user said;
    returns it as a Path. `flag` names the option in the messages (e.g. "--out").

    Refused: a folder; a path below a file; a folder that does not exist, unless `make_folders`
    (the write creates it); a folder this process cannot create files in, found by creating and
    removing an empty temporary file there (the nearest existing folder, when folders are still
    to be made), so read-only mounts and access lists count, not only the mode bits. A symbolic
    link is checked at its target, where the write lands.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give the file to write")
    target = write_target(path).absolute()
    folder = target.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{flag} {path}: {folder} is a file, not a folder")
    if folder != target.parent and not make_folders:
        raise FileNotFoundError(f"{flag} {path}: the folder {target.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=TMP_SUFFIX, dir=folder)
    except OSError as err:
        raise ValueError(
            f"{flag} {path}: cannot create files in the folder {folder} ({err.strerror}); "
            "give a path in a folder you can write to"
        ) from None
    os.close(fd)
    os.unlink(tmp)
    return path


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file (metrics, history, a config, a report) through `atomic_write`: a
    killed process leaves the previous file or the new one, never half of one."""
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))


def save_figure_atomic(fig: Any, path: str | Path, dpi: int) -> None:
    """`fig.savefig` as a PNG through `atomic_write` (the temporary name has no .png suffix)."""
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))


def atomic_folder(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write(folder)` on a new empty folder, then swap it in for `path` in one step.

    The new folder is made beside `path` (same file system). If `path` does not exist the folder
    is renamed to it; if it does, the two are exchanged atomically (Linux `renameat2`), and the old
    one is removed. Where the exchange is not supported, the old folder is first renamed aside:
    a crash between the two renames leaves no `path` at all (a reader finds nothing, never a mix)
    and both versions whole under temporary names.

    `path` itself must not be a file; a link to a folder is followed (the swap happens at the
    folder the link points to). Callers check that an existing `path` holds only their own files:
    the whole folder is replaced.

    Returns:
        the folder written (the resolved `path`).
    """
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_dir():
        raise ValueError(f"{path} exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    staging = Path(
        tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=TMP_SUFFIX, dir=target.parent)
    )
    old: Path | None = None
    try:
        write(staging)
        os.chmod(staging, 0o777 & ~_umask())
        if not target.exists():
            os.rename(staging, target)
        elif exchange(staging, target):
            old = staging  # now holds the previous version
        else:
            old = Path(
                tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=TMP_SUFFIX, dir=target.parent)
            )
            os.rename(target, old)  # replaces the empty placeholder folder
            os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and old != staging and not target.exists():
            os.rename(old, target)  # put the previous version back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def scratch_dir(path: Path) -> Path:
    """A new private folder beside `path` for intermediate files of writing it (same file system,
    so a result can be renamed out of it). Remove it when done; if the process is killed, the
    next write of `path` does."""
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    return Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=TMP_SUFFIX, dir=path.parent))


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files and folders of `path` left by processes that no longer run.

    Only entries made on this host by a process that is gone are removed: a concurrent writer's
    are left alone. Returns what was removed.
    """
    path = Path(path)
    pattern = re.compile(
        rf"^\.{re.escape(path.name)}\.([0-9a-f]{{8}})-(\d+)-[^/]*{re.escape(TMP_SUFFIX)}$"
    )
    removed: list[Path] = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if not match or match.group(1) != _host_tag() or _process_alive(int(match.group(2))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def temp_entries(path: Path) -> list[Path]:
    """The temporary entries of `path` that exist now (of any process, on any host)."""
    path = Path(path)
    prefix, suffix = f".{path.name}.", TMP_SUFFIX
    try:
        return sorted(
            p
            for p in path.parent.iterdir()
            if p.name.startswith(prefix) and p.name.endswith(suffix)
        )
    except OSError:
        return []


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """The SHA-256 of a file, read in 4 MiB chunks (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux `renameat2(RENAME_EXCHANGE)`).

    Returns False where the system or the file system cannot (the paths are then untouched).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # no renameat2 in this C library (glibc < 2.28, musl)
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{_host_tag()}-{os.getpid()}-"


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OverflowError:
        return False
    return True


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
