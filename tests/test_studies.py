"""Issue 31.1: the studies live in ``tools/studies`` and run through one command, ``python tools/study.py <name>``."""

from __future__ import annotations

import importlib
import subprocess
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import study  # noqa: E402


def test_every_study_is_a_module_with_a_main_and_the_command_lists_them():
    assert study.STUDIES == ["amir_routing", "diffusion_iqt_seams", "flat_cascades", "flat_results", "flat_speed"]
    for name in study.STUDIES:
        module = importlib.import_module(f"studies.{name}")
        assert callable(module.main) and module.__doc__, name
    done = subprocess.run([sys.executable, "tools/study.py", "no_such_study"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "studies: amir_routing, diffusion_iqt_seams" in done.stderr


def test_a_study_given_bad_input_ends_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "tools/study.py", "amir_routing", "--stress_dir", str(tmp_path / "none")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (f"study.py amir_routing: {tmp_path / 'none'}: is not a folder (run "
                                                    "tools/benchmark.py --stress true first)")
