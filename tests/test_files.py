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


def test_stale_temporaries_of_a_killed_writer_are_cleaned_and_a_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from shared_transforms.files import clean_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".tmp_{int(dead.stdout)}_abc.nii.gz"
    live = tmp_path / f".tmp_{os.getpid()}_def.nii.gz"
    user = tmp_path / ".tmp_notes.txt"  # not this project's pattern
    for p in (stale, live, user):
        p.write_text("x")
    assert clean_stale_temporaries(tmp_path) == [str(stale)]
    assert live.exists() and user.exists() and not stale.exists()
    assert clean_stale_temporaries(tmp_path / "missing") == []
