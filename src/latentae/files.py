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

The one rule for output folders (:func:`prepare_output_dir`): ``OUT`` may be missing or
empty; an existing file is refused; a non-empty folder is refused unless ``--overwrite``
(which replaces what it holds), except that the resumable commands (``encode``,
``decode``, ``reconstruct``) continue a folder whose run record
(:data:`RUN_RECORD`, written before their first output) names the same command, input
and settings. Every command checks this before its slow part. With ``--overwrite``, a
folder that holds one of the command's inputs, or lies inside one, is refused before
anything is deleted (:func:`check_inputs_apart`). An OUT that is a symlink to a folder
is written through (the folder it points to is the output).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from latentae.errors import DiskFullError, InputError

__all__ = ["LOCK_NAME", "RUN_RECORD", "atomic_dir", "atomic_path", "atomic_write",
           "atomic_write_bytes", "atomic_write_text", "check_inputs_apart", "check_inside",
           "check_writable", "disk_error", "is_empty", "prepare_output_dir", "refuse_file",
           "start_run_dir"]

_FULL = (errno.ENOSPC, errno.EDQUOT)
RUN_RECORD = ".latentae-run.json"  # command, input and settings of a resumable run
LOCK_NAME = ".latentae-lock"  # pid and host of the process writing a folder (locks.py)
_TEMPORARY = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")  # what _temporary names look like


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def disk_error(e: OSError, path: Path, needed: int | None = None) -> Exception:
    """``e`` as the error a user should see: a :class:`DiskFullError` for a full disk
    (with the size that was being written, when known), else the same kind of
    ``OSError`` naming ``path`` (``[Errno 5] Input/output error: 'PATH'``)."""
    if isinstance(e, DiskFullError):
        return e
    if e.errno not in _FULL:
        if e.filename is not None or e.errno is None:
            return e
        return type(e)(e.errno, e.strerror or str(e), str(path))
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
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder; give a file name")
    try:
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # name the file the user asked for, not our hidden temporary
        raise disk_error(type(e)(e.errno, e.strerror or str(e), str(path)), path) from e


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
    """UTF-8; a file name that was not valid UTF-8 (a lone surrogate, as Python reads
    it) is written back as its original bytes."""
    atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))


def _remove(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def check_writable(path: str | os.PathLike | None) -> None:
    """Refuse, before the work, a file a command writes at its end (``--json PATH``,
    ``diffusion ref-stats --out STATS.npz``, ...): a folder there, a missing folder or a
    file above it, or a folder without write permission (a read-only mount) is an
    ``InputError`` naming ``path``, not the hidden temporary written beside it (sweep
    RO08/RO10: "Read-only file system: '.s.json.x9jvcnem.tmp'" after the whole work).
    ``None`` and ``-`` (standard output) pass."""
    if path is None or str(path) == "-":
        return
    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder; give a file name")
    parent = path.absolute().parent
    above = next(p for p in (parent, *parent.parents) if p.exists())
    if not above.is_dir():
        raise InputError(f"cannot write {path}: {above} is a file, not a folder")
    if above != parent:
        raise InputError(f"cannot write {path}: its folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: no write permission on {parent}")


def prepare_output_dir(out: str | os.PathLike, overwrite: bool = False,
                       run: dict[str, Any] | None = None,
                       inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """The one rule for commands that write a folder (module docstring); checks only,
    creates nothing. ``out`` may be missing or empty; an existing file, a folder above
    that is a file or an unwritable folder is refused; a non-empty folder is refused
    unless ``overwrite`` or, for a resumable command (``run``: its command, input and
    settings), unless its run record equals ``run``. With ``overwrite``, ``inputs`` (the
    command's model, data, checkpoint ... paths) must lie apart from ``out``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is a file, not a folder: choose another output")
    above = next((p for p in (out, *out.absolute().parents) if p.exists()), None)
    if above is not None and not above.is_dir():
        raise InputError(f"cannot write {out}: {above} is a file, not a folder")
    if above is not None and not os.access(above, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {out}: no write permission on {above}")
    if overwrite:
        check_inputs_apart(out, inputs)
    if not out.is_dir() or overwrite or is_empty(out):
        return out
    if run is None:
        raise InputError(f"{out} is not empty: choose another output folder or pass "
                         "--overwrite to replace what it holds")
    _check_run_record(out, run)
    return out


def refuse_file(out: str | os.PathLike, flag: str = "--out") -> Path:
    """``out`` may be missing or a folder; a file there, or a file above it, is an
    ``InputError`` naming ``flag`` (checked before any work: a raw ``[Errno 17] File
    exists`` after it named neither, sweep ST06/DEMO01)."""
    out = Path(out)
    above = next((p for p in (out, *out.absolute().parents) if p.exists()), None)
    if above is not None and not above.is_dir():
        what = f"{out} is a file" if above == out else f"{out}: {above} is a file"
        raise InputError(f"{flag} {what}; give a folder")
    return out


def is_empty(folder: str | os.PathLike) -> bool:
    """``folder`` holds nothing but a lock file (:data:`LOCK_NAME`)."""
    return all(p.name == LOCK_NAME for p in Path(folder).iterdir())


def check_inputs_apart(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None],
                       deletes: Iterable[str | os.PathLike] | None = None) -> None:
    """Refuse ``--overwrite`` when an input (an existing path among ``inputs``; preset
    names and ``None`` are skipped) lies inside what it would delete (``deletes``, by
    default all of ``out``), or is that, or holds it: checked before anything is deleted."""
    gone = [Path(d) for d in (deletes if deletes is not None else [out])]
    for given in inputs:
        if given is None or not str(given) or not os.path.lexists(given):
            continue
        src = Path(given).resolve()
        for d in gone:
            dst = d.resolve()
            if src == dst or dst in src.parents:
                raise InputError(f"--overwrite would delete the input {given}: it lies "
                                 f"inside the output {out}; choose another output folder "
                                 "(or move the input out of it first)")
            if src in dst.parents:
                raise InputError(f"--overwrite would replace part of the input {given}: "
                                 f"the output {out} lies inside it; choose an output "
                                 "folder outside it")


def _check_run_record(out: Path, run: dict[str, Any]) -> None:
    """A non-empty ``out`` continues only the run its record describes."""
    command = run.get("command", "this command")
    try:
        old = json.loads((out / RUN_RECORD).read_text())
    except FileNotFoundError:
        raise InputError(f"{out} is not empty and holds no earlier `latentae {command}` "
                         "run: choose another output folder or pass --overwrite to "
                         "replace what it holds") from None
    except (OSError, ValueError):
        old = {}
    run = json.loads(_record_text(run))  # tuples as lists, as the record holds them
    if old == run:
        return
    if not isinstance(old, dict):
        old = {}
    diff = [f"{k}={old.get(k)!r} (this run: {v!r})" for k, v in run.items()
            if old.get(k) != v]
    raise InputError(f"{out} holds the outputs of another `latentae {old.get('command', '?')}` "
                     f"run: {'; '.join(diff) or 'its record differs'}. Pass --overwrite "
                     "to replace them, or choose another output folder")


def start_run_dir(out: str | os.PathLike, run: dict[str, Any], overwrite: bool = False
                  ) -> Path:
    """Make ``out`` ready for the first output of a resumable run (after
    :func:`prepare_output_dir`): with ``overwrite`` empty it first; write the run record;
    remove temporaries a killed run left. Returns ``out``."""
    out = prepare_output_dir(out, overwrite, run)
    if overwrite and out.is_dir():
        _empty(out)
    made = _make_parents(out)
    for stale in out.rglob(".*.tmp"):
        if _TEMPORARY.fullmatch(stale.name) and stale.is_file():
            _remove(str(stale))
    if not (out / RUN_RECORD).is_file():
        try:
            atomic_write_text(out / RUN_RECORD, _record_text(run))
        except BaseException:
            _remove_made(made)
            raise
    return out


def _record_text(run: dict[str, Any]) -> str:
    return json.dumps(run, indent=2, sort_keys=True) + "\n"


def _empty(folder: Path) -> None:
    """Remove everything inside ``folder`` (``--overwrite``)."""
    for p in folder.iterdir():
        if p.name == LOCK_NAME:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = False,
               inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``out``; on success it becomes ``out``
    (replacing an old one only with ``overwrite``), on failure it is removed, with any
    parent folders made for it. A symlinked ``out`` stays a link: the folder it points
    to is the one replaced. ``inputs``: as for :func:`prepare_output_dir`."""
    shown = prepare_output_dir(out, overwrite, inputs=inputs)
    out = Path(os.path.realpath(shown)) if shown.is_symlink() else shown
    made = _make_parents(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        _swap_in(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_made(made)
        if isinstance(e, DiskFullError):  # name the folder, not its hidden temporary
            raise DiskFullError(str(e).replace(str(tmp), str(shown))) from e
        if isinstance(e, OSError):
            err = disk_error(e, shown)
            if isinstance(err, OSError) and str(tmp) in str(err.filename or ""):
                err = type(err)(err.errno, err.strerror,
                                str(err.filename).replace(str(tmp), str(shown)))
            raise err from e
        raise


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` onto ``out``, an old ``out`` moved aside first (a crash in between
    leaves the old or the new folder) and removed after; nothing ``.old`` stays."""
    old = tmp.with_name(tmp.name[:-len(".tmp")] + ".old")
    moved = False
    try:
        if out.exists():
            os.replace(out, old)
            moved = True
        os.replace(tmp, out)
    except BaseException:
        if moved and not out.exists():
            os.replace(old, out)  # put the old folder back
        raise
    if moved:
        shutil.rmtree(old, ignore_errors=True)


def _remove_made(made: list[Path]) -> None:
    """Remove the folders :func:`_make_parents` made, where they are still empty."""
    for d in reversed(made):
        with contextlib.suppress(OSError):
            d.rmdir()


def _make_parents(folder: Path) -> list[Path]:
    """``folder`` and its missing parents, created; returns those made (outermost first)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def check_inside(root: str | os.PathLike, name: str) -> Path:
    """``root / name`` resolved, refused unless it lies under ``root``: a name read from
    a file (a shard key, a tar member, a config field) must never leave the folder."""
    if "\0" in name:
        raise InputError(f"the name {name!r} holds a NUL byte, which no file name can: "
                         "refusing it")
    root_r = Path(root).resolve()
    target = (root_r / name).resolve()
    if name.startswith(("/", "\\")) or (target != root_r and root_r not in target.parents):
        raise InputError(f"the name {name!r} would write outside {root}: refusing it")
    return target
