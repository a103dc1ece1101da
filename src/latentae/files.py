"""The one place that writes files: atomic, tidy on failure, honest about full disks.

Every file latentae writes (checkpoints, safetensors, JSON, PNGs, shards, configs) goes
through :func:`atomic_write` (or its byte/text shorthands, or :func:`atomic_path` for
writers that need a file name): the data lands in a
temporary file beside the target, is flushed and ``fsync``'d, then renamed into place
with ``os.replace``, so a reader sees the old file or the new one, never half of one.
On any failure the temporary is removed (a full disk must not stay full because of us)
and ``ENOSPC``/``EDQUOT`` become :class:`~latentae.errors.DiskFullError` naming the
path and the device. Files get the user's umask, like any other file they write
(``tempfile`` would create them 0600).

:func:`atomic_dir` does the same for a whole output folder (an export, a conversion):
everything is written into a hidden sibling folder that is renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from latentae.errors import DiskFullError, InputError

__all__ = ["atomic_dir", "atomic_path", "atomic_write", "atomic_write_bytes",
           "atomic_write_text", "check_inside", "disk_error", "prepare_output_dir"]

_FULL = (errno.ENOSPC, errno.EDQUOT)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def disk_error(e: OSError, path: Path, needed: int | None = None) -> Exception:
    """``e`` as the error a user should see: a :class:`DiskFullError` for a full disk
    (with the size that was being written, when known), else ``e`` itself."""
    if e.errno not in _FULL:
        return e
    where = os.path.dirname(os.path.abspath(path)) or "."
    size = f" ({needed / 1e6:.1f} MB needed)" if needed else ""
    return DiskFullError(f"no space left on the device of {where} writing {path}{size}")


@contextlib.contextmanager
def _commit(tmp: str, path: Path, needed: int | None) -> Iterator[None]:
    """Around the writing of ``tmp``: on success give it the user's umask and rename it
    onto ``path``; on any exception remove it and re-raise (a full disk as
    :class:`DiskFullError`)."""
    try:
        yield
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise disk_error(e, path, needed) from e
    except BaseException:
        _remove(tmp)
        raise


def _temporary(path: Path) -> tuple[int, str]:
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb",
                 needed: int | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it replaces
    ``path``, on any exception it is removed and the exception re-raised (``OSError``
    for a full disk as :class:`DiskFullError`, naming ``needed`` bytes when given)."""
    path = Path(path)
    fd, tmp = _temporary(path)
    with _commit(tmp, path, needed), os.fdopen(fd, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """:func:`atomic_write` for writers that take a file name, not a file object
    (``safetensors.torch.save_file``, ``PIL.Image.save``): yields the temporary path beside
    ``path``; on success it is synced and renamed onto ``path``, on failure removed."""
    path = Path(path)
    fd, tmp = _temporary(path)
    os.close(fd)
    with _commit(tmp, path, needed):
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "wb", needed=len(data)) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _remove(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def prepare_output_dir(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """The one rule for commands that write a folder: ``out`` may be missing or empty;
    a non-empty folder is refused unless ``overwrite``; an existing file is refused."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is a file, not a folder: choose another output")
    above = next((p for p in out.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise InputError(f"cannot write {out}: {above} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} is not empty: choose another output folder or pass "
                         "--overwrite to replace it")
    return out


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``out``; on success it becomes ``out``
    (replacing an old one only with ``overwrite``), on failure it is removed."""
    out = prepare_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise disk_error(e, out) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_inside(root: str | os.PathLike, name: str) -> Path:
    """``root / name`` resolved, refused unless it lies under ``root``: a name read from
    a file (a shard key, a tar member, a config field) must never leave the folder."""
    root_r = Path(root).resolve()
    target = (root_r / name).resolve()
    if name.startswith(("/", "\\")) or (target != root_r and root_r not in target.parents):
        raise InputError(f"the name {name!r} would write outside {root}: refusing it")
    return target
