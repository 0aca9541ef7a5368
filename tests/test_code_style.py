"""Issue 13.2, style: the Python an exported archive carries (the bundle's ``scripts/`` with the vendored
``shared_transforms``) passes the Model Zoo's code-format checks: black (120 columns, ``--skip-magic-trailing-comma``),
isort (profile black) and flake8 with the Zoo's plugins and ``setup.cfg`` (``tests/zoo_setup.cfg``).

The archive is staged as ``tools/export_bundle.py`` writes it, and checked from inside the bundle folder, as the Zoo
checks a bundle in its ``models/<name>/``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import export_bundle

BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs").is_dir())
SETTINGS = REPO / "tests" / "zoo_setup.cfg"
CHECKS = {
    "black": ["-m", "black", "--check", "--line-length", "120", "--skip-magic-trailing-comma", "scripts"],
    "isort": ["-m", "isort", "--check-only", "--diff", "--settings-path", str(SETTINGS), "scripts"],
    "flake8": ["-m", "flake8", "--config", str(SETTINGS), "scripts"],
}


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    folder = tmp_path_factory.mktemp("staged")
    return {name: export_bundle.stage_bundle(name, folder) for name in BUNDLES}


def test_flake8_has_the_zoo_plugins():
    out = subprocess.run([sys.executable, "-m", "flake8", "--version"], capture_output=True, text=True, check=True)
    for plugin in ("flake8-bugbear", "flake8-comprehensions", "pep8-naming"):
        assert plugin in out.stdout, f"{plugin} is not installed (the Zoo's flake8 selects its checks): {out.stdout}"


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("name", BUNDLES)
def test_the_archive_code_passes_the_zoo_style_checks(staged, name, check):
    proc = subprocess.run([sys.executable, *CHECKS[check]], cwd=staged[name], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{check} on {name}'s archive scripts:\n{(proc.stdout + proc.stderr)[-5000:]}"
