"""The one atomic writer (``shared_transforms.io.files``): all or nothing, no temporary left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from shared_transforms.io.files import TMP_PREFIX, atomic_path, write_text_atomic


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


def test_files_that_belong_together_appear_together(tmp_path):
    """Issue 9.10: an image and its uncertainty map are renamed only when both are written."""
    from shared_transforms.io.files import atomic_paths

    paths = [tmp_path / "a_cfm.nii.gz", tmp_path / "a_cfm_std.nii.gz"]
    with pytest.raises(RuntimeError), atomic_paths(paths) as tmps:
        Path(tmps[0]).write_text("mean")
        raise RuntimeError("killed before the second was written")
    assert os.listdir(tmp_path) == []  # neither appears, and no temporary is left
    with atomic_paths(paths) as tmps:
        for t, text in zip(tmps, ("mean", "std")):
            Path(t).write_text(text)
    assert [p.read_text() for p in paths] == ["mean", "std"]
    assert sorted(os.listdir(tmp_path)) == ["a_cfm.nii.gz", "a_cfm_std.nii.gz"]


def test_ids_become_safe_names_and_an_unwritable_folder_is_named(tmp_path):
    from shared_transforms.errors import InputError
    from shared_transforms.io.files import check_writable_folder, safe_name

    assert safe_name("../x") == "x" and safe_name("a/b c") == "a_b_c" and safe_name("thick 3 mm") == "thick_3_mm"
    assert safe_name("sub-01.v2") == "sub-01.v2"
    with pytest.raises(ValueError):
        safe_name("../")
    assert check_writable_folder(tmp_path / "new") == str(tmp_path / "new") and (tmp_path / "new").is_dir()
    assert os.listdir(tmp_path / "new") == []  # the probe is gone
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="output folder cannot be written"):
        check_writable_folder(tmp_path / "file" / "out")


def test_stale_temporaries_of_a_killed_writer_are_cleaned_and_a_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from shared_transforms.io.files import TMP_PREFIX, _host_tag, atomic_path, clean_stale_temporaries

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    with atomic_path(tmp_path / "x.nii.gz") as tmp:  # the writer's own temporaries follow the pattern cleaned
        assert os.path.basename(tmp).startswith(f"{TMP_PREFIX}{_host_tag()}_{os.getpid()}_")
    stale = tmp_path / f"{TMP_PREFIX}{_host_tag()}_{dead}_abc.nii.gz"
    live = tmp_path / f"{TMP_PREFIX}{_host_tag()}_{os.getpid()}_def.nii.gz"
    user = tmp_path / ".tmp_notes.txt"  # not this project's pattern
    user_pid = tmp_path / f".tmp_{dead}_notes.txt"  # issue 29.4: a user's file with a dead pid in its name
    other_host = tmp_path / f"{TMP_PREFIX}00000000_{dead}_abc.nii.gz"  # another machine's writer on a shared folder
    for p in (stale, live, user, user_pid, other_host):
        p.write_text("x")
    assert clean_stale_temporaries(tmp_path) == [str(stale)]
    assert live.exists() and user.exists() and user_pid.exists() and other_host.exists() and not stale.exists()
    assert clean_stale_temporaries(tmp_path / "missing") == []
