"""The one atomic single-file write (core/files.py), on real files."""
import os

import pytest

from georeasoner_plugin.core.files import atomic_write_bytes, atomic_write_text


def test_writes_replaces_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "answer.json"
    assert atomic_write_text(target, "first ünïcode") == target
    assert target.read_text(encoding="utf-8") == "first ünïcode"
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["answer.json"]


def test_no_overwrite_keeps_the_existing_file(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("precious")
    with pytest.raises(FileExistsError):
        atomic_write_text(target, "new", overwrite=False)
    assert target.read_text() == "precious" and os.listdir(tmp_path) == ["keep.txt"]
    fresh = atomic_write_text(tmp_path / "fresh.txt", "new", overwrite=False)
    assert fresh.read_text() == "new"


def test_a_failed_write_changes_nothing(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(target, "\udc80 lone surrogate")  # fails before anything is written
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "missing-folder" / "b.txt", "x")
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "dir", "a folder is not replaced by a file")
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["a.txt", "dir"]
