"""Issue 13.1: every bundle exports as an archive that runs from its unpacked folder alone.

The archive is built by ``tools/export_bundle.py``, unpacked in a temporary folder away from the repository, and run
there with the repository off ``sys.path`` (``tests/run_without_repo.py``), through MONAI's bundle runner and
through a ``ConfigWorkflow`` on the folder, on a tiny volume.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import phantom, save

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import export_bundle

BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs").is_dir())


def _run(args: list[str], cwd: Path) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, str(REPO / "tests" / "run_without_repo.py"), str(REPO), *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-6000:]}"
    return out


def test_config_and_script_rewriting():
    cfg = '{"imports": ["$import shared_transforms"], "x": {"_target_": "shared_transforms.io.SaveVolumed"}, ' \
          '"y": {"_target_": "scripts.network.Net"}, "z": "$shared_transforms.sample.sample_paths()"}'
    out = json.loads(export_bundle.rewrite_config_text(cfg))
    assert out["imports"] == ["$import scripts.shared_transforms as shared_transforms"]
    assert out["x"]["_target_"] == "scripts.shared_transforms.io.SaveVolumed"
    assert out["y"]["_target_"] == "scripts.network.Net" and out["z"] == "$shared_transforms.sample.sample_paths()"
    py = "from shared_transforms.ode import solve\n    from shared_transforms import io\nimport shared_transforms\n"
    assert export_bundle.rewrite_script_text(py) == (
        "from .shared_transforms.ode import solve\n    from .shared_transforms import io\nfrom . import shared_transforms\n")


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_the_archive_runs_from_its_unpacked_folder_alone(name, tmp_path):
    archive = Path(export_bundle.export_bundle(name, str(tmp_path / "dist")))
    version = json.loads((REPO / "bundles" / name / "configs" / "metadata.json").read_text())["version"]
    assert archive.name == f"{name}_v{version}.zip"
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        assert all(n.startswith(f"{name}/") for n in names)
        z.extractall(tmp_path / "unpacked")
    folder = tmp_path / "unpacked" / name
    assert (folder / "scripts" / "shared_transforms" / "sample_data" / "sample_low.nii.gz").is_file()
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    assert {"nibabel", "pytorch-ignite", "einops"} <= set(meta["required_packages_version"])
    for cfg in (folder / "configs").glob("*.json"):  # no path or module of the repository is left
        text = cfg.read_text()
        assert str(REPO) not in text and '"_target_": "shared_transforms.' not in text, cfg.name
    scan = save(tmp_path / "scan.nii.gz", phantom((16, 32, 24)))
    log = _run(["run", "--config_file", "configs/inference.json", "--input_path", scan, "--output_dir",
                str(tmp_path / "o1"), "--device", "cpu"], cwd=folder)
    assert str(tmp_path / "o1" / f"scan_{name}.nii.gz") in log
    log = _run(["workflow", "--config_file", "configs/inference.json", "--input_path", scan, "--output_dir",
                str(tmp_path / "o2"), "--device", "cpu"], cwd=folder)
    assert f"vendored: {folder / 'scripts' / 'shared_transforms' / '__init__.py'}" in log
    a = nib.load(tmp_path / "o1" / f"scan_{name}.nii.gz").get_fdata()
    b = nib.load(tmp_path / "o2" / f"scan_{name}.nii.gz").get_fdata()
    assert np.isfinite(a).all() and np.allclose(a, b, atol=1e-6)
    if (folder / "models" / "model.pt").is_file():  # issue 13.2, part: the Zoo's network checks on the archive
        log = _run(["verify_net_in_out", "--net_id", "network_def", "--meta_file", "configs/metadata.json",
                    "--config_file", "configs/inference.json"], cwd=folder)
        assert "data shape of network is verified with no error" in log
        ts = tmp_path / f"{name}.ts"
        _run(["ckpt_export", "--net_id", "network_def", "--filepath", str(ts), "--ckpt_file", "models/model.pt",
              "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json"], cwd=folder)
        assert ts.is_file() and ts.stat().st_size > 0
    # a second export replaces its own archive; a user's file at that name is refused
    export_bundle.export_bundle(name, str(tmp_path / "dist"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / archive.name).write_text("not an archive of ours")
    with pytest.raises(Exception, match="not written by export_bundle"):
        export_bundle.export_bundle(name, str(tmp_path / "mine"))
