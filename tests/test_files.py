"""``latentae.files``: a write lands whole or not at all, leaves no temporary behind,
and a full disk is a ``DiskFullError`` naming the path."""

from __future__ import annotations

import errno
import os

import pytest

from latentae.errors import DiskFullError, InputError
from latentae.files import (
    atomic_dir,
    atomic_path,
    atomic_write,
    atomic_write_bytes,
    prepare_output_dir,
)


def test_writes_land_whole_and_failures_leave_the_old_file(tmp_path):
    atomic_write_bytes(tmp_path / "a", b"old")
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "a") as f:
        f.write(b"half")
        raise RuntimeError
    assert (tmp_path / "a").read_bytes() == b"old"
    with atomic_path(tmp_path / "b") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".b.")
        tmp.write_bytes(b"by name")
    assert (tmp_path / "b").read_bytes() == b"by name"
    with pytest.raises(ValueError), atomic_path(tmp_path / "c") as tmp:
        tmp.write_bytes(b"x")
        raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_a_full_disk_is_a_disk_full_error(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(DiskFullError, match="no space left .* writing"):
        atomic_write_bytes(tmp_path / "big", b"x" * 1000)
    assert list(tmp_path.iterdir()) == []


def test_output_folders_follow_one_rule(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(InputError, match="--overwrite"):
        prepare_output_dir(tmp_path / "full")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        prepare_output_dir(tmp_path / "file" / "out")
    with atomic_dir(tmp_path / "full", overwrite=True) as tmp:
        (tmp / "y").write_text("y")
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["y"]
