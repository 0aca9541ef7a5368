"""tools/profile_run.py: a bundle run timed by phase (issue 30.1)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow
def test_a_run_is_timed_by_phase_and_writes_its_output(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "profile_run.py"), str(REPO / "bundles/interpolation/configs/inference.json"),
         "--output_dir", str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    table = {m.group(1).strip(): float(m.group(2)) for m in re.finditer(r"^\| ([^|]+) \| \**([\d.]+)\** \|$", out.stdout, re.M)}
    assert {"start-up (interpreter and imports)", "resample to the target grid", "write the NIfTI files"} <= set(table)
    assert table["resample to the target grid"] > 0 and table["write the NIfTI files"] > 0
    whole = next(v for k, v in table.items() if k.startswith("**whole command**"))
    assert whole >= sum(v for k, v in table.items() if not k.startswith("**")) - 0.5
    assert (tmp_path / "sample_low_interpolation.nii.gz").exists()
