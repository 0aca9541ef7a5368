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


def test_the_package_is_laid_out_by_concern():
    """Issue 31.2: every module sits in a sub-package of one concern (the package's ``__init__`` and ``errors``
    aside), none is over 400 lines, and no tool or bundle edits ``sys.path``."""
    root = REPO / "shared_transforms"
    top = sorted(p.name for p in root.glob("*.py"))
    assert top == ["__init__.py", "errors.py"], top
    subs = sorted(p.parent.name for p in root.glob("*/__init__.py"))
    assert subs == ["engine", "inference", "io", "kspace", "metrics", "simulation", "transforms"], subs
    long = {str(p.relative_to(root)): n for p in root.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
    edits = [str(p.relative_to(REPO)) for folder in ("tools", "bundles") for p in (REPO / folder).rglob("*.py")
             if "sys.path.insert" in p.read_text() or "sys.path.append" in p.read_text()]
    assert not edits, edits
