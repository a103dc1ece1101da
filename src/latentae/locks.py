"""One writer per run folder: ``OUT/.latentae-lock`` (``files.LOCK_NAME``).

A command that writes a run folder (``train``, ``diffusion train``, ``encode``,
``diffusion sample``) takes an exclusive ``flock`` on the lock file in it for as long as
it writes, and records its pid, host, command and start time there. A second process on
the same folder is refused at once with a message naming the first. The kernel drops a
``flock`` when its process dies (even by SIGKILL), so the file a killed run leaves is a
stale lock that the next run takes over, with a note naming the dead process. A process
may take the same folder again (a command called twice in one process).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from latentae.cards import command_line
from latentae.errors import InputError
from latentae.files import LOCK_NAME

__all__ = ["FolderLockedError", "hold", "lock_folder", "release_folder"]

_held: dict[Path, int] = {}  # resolved folder -> fd of its lock file, in this process


class FolderLockedError(InputError):
    """Another process holds the folder's lock."""


def _key(folder: str | os.PathLike) -> Path:
    return Path(os.path.realpath(folder))


def lock_folder(folder: str | os.PathLike) -> Path:
    """Take the lock of ``folder`` (made if missing) until :func:`release_folder` or the
    end of the process; raise :class:`FolderLockedError` naming the holder when another
    process has it. Returns the lock file."""
    key = _key(folder)
    path = key / LOCK_NAME
    if key in _held:
        return path
    try:
        key.mkdir(parents=True, exist_ok=True)
    except OSError:
        return path  # a file, or not writable: the command's own check says so
    fd = _flock(path, folder)
    old = _read(path)
    if old.get("pid") is not None:
        print(f"note: {folder}: took over the lock of {_describe(old)}, which is no longer "
              "running", file=sys.stderr)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command_line(),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    _held[key] = fd
    return path


def _flock(path: Path, folder: str | os.PathLike) -> int:
    """An fd of ``path`` holding its exclusive flock (a file removed by its holder
    meanwhile is opened again)."""
    for _ in range(3):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise FolderLockedError(f"{folder} is in use by {_describe(_read(path))}: wait "
                                    "for it to finish (or stop it), or choose another "
                                    "output folder") from None
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)  # unlinked by the holder as we opened it: try the new file
    raise FolderLockedError(f"{folder}: its lock file keeps changing: another process "
                            "is starting and stopping there; try again")


def release_folder(folder: str | os.PathLike, remove: bool = False,
                   remove_folder: bool = False) -> None:
    """Drop this process's lock of ``folder`` (``remove``: delete the lock file;
    ``remove_folder``: and the folder, when that leaves it empty)."""
    key = _key(folder)
    fd = _held.pop(key, None)
    if fd is None:
        return
    if remove:
        with contextlib.suppress(OSError):
            os.unlink(key / LOCK_NAME)
        if remove_folder:
            with contextlib.suppress(OSError):
                key.rmdir()
    os.close(fd)


@contextlib.contextmanager
def hold(folder: str | os.PathLike) -> Iterator[None]:
    """:func:`lock_folder` around a block; the lock file is removed after it, and the
    folder too when the block made it and left it empty (it failed before writing)."""
    key = _key(folder)
    if key in _held:  # the caller holds it already
        yield
        return
    existed = key.is_dir()
    lock_folder(folder)
    if key not in _held:  # could not be made: the command refuses it
        yield
        return
    try:
        yield
    finally:
        release_folder(folder, remove=True, remove_folder=not existed)


def _read(path: Path) -> dict:
    try:
        record = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _describe(record: dict) -> str:
    if not record:
        return "another process (its lock file names none)"
    what = record.get("command") or "another latentae process"
    return (f"`{what}` (pid {record.get('pid')} on host {record.get('host')}, since "
            f"{record.get('since')})")
