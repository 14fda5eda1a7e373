"""Writes are whole or absent: a failed write leaves the previous file and no temporary behind."""

import numpy as np
import pytest

from onereason.rundir import atomic_dir, atomic_path, write_text


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "deep" / "eval.json"
    write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in path.parent.iterdir()] == ["eval.json"]


def test_the_temporary_keeps_the_suffix_writers_need(tmp_path):
    """np.save / np.savez / savefig pick behaviour from the suffix: the temporary keeps it."""
    with atomic_path(tmp_path / "rows.npz") as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path
        np.savez(tmp, ids=np.arange(3))
    assert np.load(tmp_path / "rows.npz")["ids"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["rows.npz"]


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    out = tmp_path / "tokenizer"
    out.mkdir()
    (out / "old.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            tmp.mkdir()
            (tmp / "new.json").write_text("half")
            raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer"] and (out / "old.json").read_text() == "old"
    with atomic_dir(out) as tmp:
        tmp.mkdir()
        (tmp / "new.json").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.json"] and [p.name for p in tmp_path.iterdir()] == ["tokenizer"]
