"""Issue 29.3 and 29.7: faults of the machine (no room on the disk, no memory) and input the libraries describe in
several lines (a datalist nested 100k deep, a subject id of "..", a damaged NIfTI, a checkpoint holding code) end
in one ``error:`` line; a file too large for memory is one failure of a batch, not the end of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, phantom, save

from shared_transforms.engine.checkpoint import read_state_dict
from shared_transforms.io.datalist import load_datalist, output_stems
from shared_transforms.errors import InputError, describe_fault
from shared_transforms.io.volumes import LoadVolume


def _interpolation(args, cwd, limits=None):
    """The interpolation bundle through MONAI's runner (its own process, under ``limits``: ``{resource: bytes}``);
    returns the exit code, the last line and the whole output."""

    def preexec():
        import resource

        for which, value in (limits or {}).items():
            resource.setrlimit(which, (value, value))

    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file",
         str(REPO / "bundles/interpolation/configs/inference.json"), *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
        preexec_fn=preexec if limits else None, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    lines = [ln for ln in proc.stdout.replace("\r", "\n").splitlines() if ln.strip()]
    return proc.returncode, (lines[-1] if lines else ""), proc.stdout


def test_faults_of_the_machine_are_one_line():
    import errno

    full = describe_fault(OSError(errno.ENOSPC, "No space left on device", "/out/a.nii.gz"))
    assert full.startswith("/out/a.nii.gz: the file system has no room") and "\n" not in full
    assert "out of memory" in describe_fault(MemoryError("Unable to allocate 8 GiB"))
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: 8 GB")
    assert "out of memory" in describe_fault(cpu)
    try:  # found in the chain MONAI's runner wraps it in
        try:
            json.loads("[" * 100_000 + "]" * 100_000)
        except RecursionError as inner:
            raise RuntimeError("Failed to evaluate ConfigExpression") from inner
    except RuntimeError as outer:
        assert "nested too deeply" in describe_fault(outer)
    assert describe_fault(ValueError("a bug")) is None  # a bug keeps its traceback as its report


def test_a_datalist_nested_too_deeply_is_refused_in_one_line(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="nested too deeply") as err:
        load_datalist(path)
    assert str(path) in str(err.value)
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(InputError, match="not a text"):
        load_datalist(path)


def test_a_subject_id_that_names_nothing_falls_back_to_the_path():
    """A subject id of ".." (or "/") gives no file name; the outputs are named by their paths instead."""
    stems = output_stems(["/d/a/T1w.nii.gz", "/d/b/T1w.nii.gz"], ["..", "/"])
    assert stems == ["a_T1w", "b_T1w"]
    assert output_stems(["/d/a/T1w.nii.gz", "/d/b/T1w.nii.gz"], ["../x", "y"]) == ["x_T1w", "y_T1w"]


def test_library_messages_of_several_lines_become_one(tmp_path):
    # nibabel's short read of an uncompressed file: "Expected N bytes, got M bytes ...\n - could the file be damaged?"
    good = save(tmp_path / "vol.nii", np.random.default_rng(0).random((32, 32, 32)).astype(np.float32))
    cut = tmp_path / "cut.nii"
    cut.write_bytes(open(good, "rb").read()[:5000])
    with pytest.raises(InputError) as err:
        LoadVolume()(str(cut))
    assert "\n" not in str(err.value) and str(cut) in str(err.value)

    # torch's weights_only refusal: a paragraph suggesting weights_only=False; here one line, without that advice
    class Code:
        def __reduce__(self):
            return (os.getcwd, ())

    torch.save({"w": Code()}, tmp_path / "code.pt")
    with pytest.raises(InputError) as err:
        read_state_dict(tmp_path / "code.pt")
    msg = str(err.value)
    assert "\n" not in msg and "was not loaded" in msg and "getcwd" in msg and "weights_only` set to `False" not in msg


@pytest.mark.slow
def test_a_full_disk_ends_in_one_line_and_leaves_nothing(tmp_path):
    """No room for the output (the file-size limit stands in for a full disk: the same write error, EFBIG for
    ENOSPC): one error line naming the output, no file and no temporary left in the output folder."""
    import resource

    out = tmp_path / "out"
    rc, last, _ = _interpolation(
        ["--input_path", str(REPO / "shared_transforms/sample_data/sample_low.nii.gz"), "--output_dir", str(out)],
        tmp_path, {resource.RLIMIT_FSIZE: 64 * 1024},
    )
    assert rc != 0 and last.startswith(f"error: {out / 'sample_low_interpolation.nii.gz'}: the file system has no room"), last
    assert os.listdir(out) == []


def _baseline_peak_bytes() -> int:
    """The virtual memory peak of a process that imports what a bundle run imports."""
    code = ("import torch, monai, ignite, nibabel, scipy, skimage; "
            "print(open('/proc/self/status').read().split('VmPeak:')[1].split()[0])")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) * 1024


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc to size the memory limit")
def test_a_file_too_large_for_memory_is_one_failure_of_a_batch(tmp_path):
    """Issue 29.3: a file within the voxel limit (640^3, 1 GB of float32) whose data does not fit the memory the
    process may use: that file fails in one line, the other is written, the summary lists both, exit non-zero."""
    import resource

    folder = tmp_path / "in"
    folder.mkdir()
    save(folder / "a_good.nii.gz", phantom((40, 40, 24)), np.diag([1.5, 1.5, 3.0, 1.0]))
    n = 640
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((n, n, n))
    hdr.set_data_dtype(np.float32)
    hdr.set_qform(np.eye(4), 1)
    hdr.set_sform(np.eye(4), 1)
    with open(folder / "b_big.nii", "wb") as f:  # a sparse file: 1 GB declared, almost nothing on disk
        hdr.write_to(f)
        f.seek(int(hdr.get_data_offset()) + n**3 * 4 - 1)
        f.write(b"\x01")
    limit = _baseline_peak_bytes() + 1600 * 2**20
    rc, last, text = _interpolation(["--input_path", str(folder), "--output_dir", str(tmp_path / "o")], tmp_path,
                                    {resource.RLIMIT_AS: limit})
    assert rc != 0 and last.startswith("error:") and "1 of 2 inputs failed" in last, last
    assert "b_big.nii: does not fit in this machine's memory" in text
    assert (tmp_path / "o" / "a_good_interpolation.nii.gz").exists()
    summary = json.loads((tmp_path / "o" / "interpolation_summary.json").read_text())
    assert [f["input"] for f in summary["failed"]] == [str(folder / "b_big.nii")]


@pytest.mark.slow
def test_a_deep_datalist_and_a_dotdot_subject_through_the_runner(tmp_path):
    """A datalist nested 100k deep is refused in one line; a datalist whose subjects are ".." names its outputs by
    their paths, inside the output folder."""
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    rc, last, _ = _interpolation(["--input_path", str(deep), "--output_dir", str(tmp_path / "o1")], tmp_path)
    assert rc != 0 and last.startswith(f"error: {deep}: is nested too deeply"), last
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        save(tmp_path / sub / "T1w.nii.gz", phantom((40, 40, 24)), np.diag([1.5, 1.5, 3.0, 1.0]))
    items = [{"subject": "..", "low": str(tmp_path / s / "T1w.nii.gz")} for s in ("a", "b")]
    (tmp_path / "dl.json").write_text(json.dumps({"testing": items}))
    rc, last, _ = _interpolation(["--input_path", str(tmp_path / "dl.json"), "--output_dir", str(tmp_path / "o2")],
                                 tmp_path)
    assert rc == 0, last
    assert sorted(f for f in os.listdir(tmp_path / "o2") if f.endswith(".nii.gz")) == [
        "a_T1w_interpolation.nii.gz", "b_T1w_interpolation.nii.gz"]
