"""Packaging (issue 31.5): a wheel of the project holds every sub-package of ``shared_transforms`` and the shipped
sample, and setuptools builds it without warning that a folder is ambiguous."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_the_sub_packages_and_the_sample_without_a_warning(tmp_path):
    src = tmp_path / "src"  # a copy, so that the build leaves nothing in the working tree
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv*", "demo_data*", "bundles", "tests", "tools",
                                                             "outputs", "eval", "bench", "build", "*.egg-info"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-v", "-w",
         str(tmp_path / "wheel")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    said = proc.stdout + proc.stderr
    assert "absent from the `packages` configuration" not in said
    names = zipfile.ZipFile(next((tmp_path / "wheel").glob("*.whl"))).namelist()
    expected = {p.relative_to(REPO).as_posix() for p in (REPO / "shared_transforms").rglob("*.py")}
    expected |= {p.relative_to(REPO).as_posix() for p in (REPO / "shared_transforms" / "sample_data").iterdir()}
    assert expected <= set(names), sorted(expected - set(names))
