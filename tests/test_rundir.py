"""Writes are whole or absent: a failed write leaves the previous file and no temporary behind."""

import numpy as np
import pytest

from onereason.rundir import atomic_path, write_text


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
