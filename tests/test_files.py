"""The one atomic writer (``shared_transforms.files``): all or nothing, no temporary left behind."""

from __future__ import annotations

import os
import stat

import pytest

from shared_transforms.files import TMP_PREFIX, atomic_path, write_text_atomic


def test_write_text_atomic_replaces_whole_and_keeps_usual_permissions(tmp_path):
    path = tmp_path / "sub" / "table.csv"
    assert write_text_atomic(path, "a,b\n1,2\n") == str(path)
    assert path.read_text() == "a,b\n1,2\n"
    write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600
    assert not [p for p in path.parent.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path) as tmp:
            assert tmp.endswith(".pt") and os.path.dirname(tmp) == str(tmp_path)
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_the_temporary_keeps_a_double_ending(tmp_path):
    with atomic_path(tmp_path / "x.nii.gz") as tmp:
        assert tmp.endswith(".nii.gz")  # nibabel picks gzip from the name
        open(tmp, "wb").close()
    assert (tmp_path / "x.nii.gz").is_file()
