"""Issue 13.1: every bundle exports as an archive that runs from its unpacked folder alone.

The archive is built by ``tools/export_bundle.py``, unpacked in a temporary folder away from the repository, and run
there with the repository off ``sys.path`` (``tests/run_without_repo.py``), through MONAI's bundle runner and
through a ``ConfigWorkflow`` on the folder, on a tiny volume.
"""

from __future__ import annotations

import json
import os
import shutil
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


#: bundles whose network does not export to ONNX yet (the other Zoo checks still run), and why
#: bundles without an ONNX export, and why (none since issue 31.4)
NO_ONNX: dict[str, str] = {}

#: bundles whose network TorchScript cannot script, so ``ckpt_export`` traces it (``use_trace``), and why
TRACED_TORCHSCRIPT = {
    "amir": "MONAI's OverlapPatchEmbed (the network's patch embedding) has no TorchScript-compilable forward",
}

#: bundles whose ONNX graph has a fixed image size (the batch stays dynamic), and why
FIXED_SIZE_ONNX = {
    "flat": "MONAI's divisible_pad_t (inside the network's U-Net) rounds the size up with a bitwise or, which torch's "
    "dynamo ONNX exporter cannot translate for a symbolic size",
    "diffusion_iqt": "the cross-batch border (scripts/cross_batch.boundary_pad) cuts sub-patches with unfold, whose "
    "size and step ONNX holds as constants",
}


def _zoo_steps(folder: Path, name: str, archive: Path, tmp_path: Path) -> list[dict]:
    """The Model Zoo's checks of an unpacked archive, as ``monai.bundle`` function calls (the CLI commands'
    functions; run in one process by ``run_without_repo.py steps``, since each command would re-import MONAI):

    - ``verify_metadata`` against MONAI's schema (a schema already at ``filepath`` is used, not downloaded);
    - for a bundle with weights: ``verify_net_in_out``; ``ckpt_export`` (TorchScript); ``onnx_export`` (torch's
      dynamo exporter, batch and image size dynamic) and onnxruntime against the network at another batch and size
      than the export's (``onnx_compare``); the Zoo's import of a local archive, ``download`` from a ``file://`` URL
      and ``load`` from the downloaded folder.

    The ONNX export skips torch's graph optimisation and its own onnxruntime check (``optimize``/``verify``; the
    README's command keeps both): they take ~60 s of flat's ~110 s here, and ``onnx_compare`` checks more than
    ``verify`` does (a second batch and size).
    """
    steps = []
    schema = REPO.parent / "shared" / "schemas" / "meta_schema_20240725.json"
    if schema.is_file():
        shutil.copy(schema, tmp_path / "schema.json")
        steps.append({"call": "verify_metadata",
                      "args": {"meta_file": "configs/metadata.json", "filepath": str(tmp_path / "schema.json")}})
    if not (folder / "models" / "model.pt").is_file():
        return steps
    common = {"net_id": "network_def", "meta_file": "configs/metadata.json", "config_file": "configs/inference.json"}
    image = json.loads((folder / "configs" / "metadata.json").read_text())["network_data_format"]["inputs"]["image"]
    channels, dims = int(image["num_channels"]), len(image["spatial_shape"])
    axes = [0] if name in FIXED_SIZE_ONNX else [0, *range(2, 2 + dims)]
    onnx_kwargs = {"dynamo": True, "optimize": False, "opset_version": 18, "input_names": ["image"],
                   "output_names": ["pred"], "dynamic_axes": {"image": axes, "pred": axes}}
    # 2D: export at 64², compare at 96 x 64
    # 3D (a 3D network is costlier on the CPU): export at 24³, compare at 48 x 24²
    export_size, other_size = ([64, 64], [96, 64]) if dims == 2 else ([24, 24, 24], [48, 24, 24])
    size = export_size if name in FIXED_SIZE_ONNX else other_size
    zoo = tmp_path / "zoo"
    steps += [
        {"call": "verify_net_in_out", "args": common},
        {"call": "ckpt_export", "args": {**common, "filepath": str(tmp_path / f"{name}.ts"),
                                         "ckpt_file": "models/model.pt",
                                         **({"use_trace": True, "input_shape": [1, channels, *export_size]}
                                            if name in TRACED_TORCHSCRIPT else {})}},
    ]
    if name not in NO_ONNX:
        steps += [
            {"call": "onnx_export", "args": {**common, "filepath": str(tmp_path / f"{name}.onnx"),
                                             "ckpt_file": "models/model.pt", "use_trace": True,
                                             "input_shape": [1, channels, *export_size],
                                             "converter_kwargs": onnx_kwargs}},
            {"call": "onnx_compare", "args": {"onnx_file": str(tmp_path / f"{name}.onnx"),
                                              "shape": [2, channels, *size]}},
        ]
    steps += [
        {"call": "download", "args": {"name": name, "bundle_dir": str(zoo), "url": archive.as_uri()}},
        {"call": "load", "args": {"name": name, "bundle_dir": str(zoo)}, "cwd": str(zoo / name)},
    ]
    return steps


def test_an_archive_vendors_only_the_modules_its_bundle_uses():
    """Issue 31.2: the modules the configs and scripts name, closed over their imports; flat's k-space modules go
    only with flat, the real-data registration (SimpleITK) with none. Issue 31.1: of a bundle's own scripts, only
    those its configs call (and what they import) go, and a bundle holds no other (the studies are in tools/studies)."""
    used = {name: set(export_bundle.used_modules(REPO / "bundles" / name)) for name in BUNDLES}
    for name, mods in used.items():
        assert {"__init__.py", "errors.py", "io/__init__.py", "io/volumes.py", "io/sample.py"} <= mods, name
        assert "metrics/registration.py" not in mods and "simulation/synthesis.py" not in mods, name
        for rel in mods:  # every vendored module's own package imports resolve inside the vendored set
            assert (REPO / "shared_transforms" / rel).is_file(), rel
    assert {"kspace/sampling.py", "kspace/fastmri.py"} <= used["flat"]
    assert "kspace/sampling.py" not in used["interpolation"] and "inference/ode.py" in used["cfm"]
    assert "metrics/__init__.py" in used["unet"] and "metrics/core.py" in used["unet"]
    scripts = {name: set(export_bundle.used_scripts(REPO / "bundles" / name)) for name in BUNDLES}
    assert scripts["cfm"] >= {"__init__.py", "network.py", "inferer.py", "flow.py", "protocol.py"}
    for name in BUNDLES:  # the studies live in tools/studies (issue 31.1): a bundle's scripts are what its configs run
        folder = REPO / "bundles" / name / "scripts"
        present = {p.relative_to(folder).as_posix() for p in folder.rglob("*.py")} if folder.is_dir() else set()
        assert present - {"__init__.py"} <= scripts[name], f"{name}: {sorted(present - scripts[name])} are not used"
    assert scripts["interpolation"] == set()


def test_config_and_script_rewriting():
    cfg = '{"imports": ["$import shared_transforms"], "x": {"_target_": "shared_transforms.io.volumes.SaveVolumed"}, ' \
          '"y": {"_target_": "scripts.network.Net"}, "z": "$shared_transforms.io.sample.sample_paths()"}'
    out = json.loads(export_bundle.rewrite_config_text(cfg))
    assert out["imports"] == ["$import scripts.shared_transforms as shared_transforms"]
    assert out["x"]["_target_"] == "scripts.shared_transforms.io.volumes.SaveVolumed"
    assert out["y"]["_target_"] == "scripts.network.Net" and out["z"] == "$shared_transforms.io.sample.sample_paths()"
    py = "from shared_transforms.inference.ode import solve\n    from shared_transforms import io\nimport shared_transforms\n"
    assert export_bundle.rewrite_script_text(py) == (
        "from .shared_transforms.inference.ode import solve\n    from .shared_transforms import io\nfrom . import shared_transforms\n")


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
    # the common configs (links to bundles/_common in the repository) are whole files in the archive
    assert (folder / "configs" / "logging.conf").is_file() and not (folder / "configs" / "logging.conf").is_symlink()
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
    steps = _zoo_steps(folder, name, archive, tmp_path)  # issue 13.2: the Zoo's checks on the archive
    (tmp_path / "steps.json").write_text(json.dumps(steps))
    log = _run(["steps", str(tmp_path / "steps.json")], cwd=folder)
    if any(s["call"] == "verify_metadata" for s in steps):
        assert "metadata is verified with no error" in log, log[-3000:]
    if (folder / "models" / "model.pt").is_file():
        assert "data shape of network is verified with no error" in log
        for f in (f"{name}.ts", *([] if name in NO_ONNX else [f"{name}.onnx"])):
            assert (tmp_path / f).is_file() and (tmp_path / f).stat().st_size > 0, f
        if name not in NO_ONNX:
            (line,) = [ln for ln in log.splitlines() if ln.startswith("onnx_compare: ")]
            result = json.loads(line.removeprefix("onnx_compare: "))
            assert result["onnx_shape"] == result["torch_shape"], result
            assert result["max_abs_diff"] <= 1e-4 * max(1.0, result["max_abs_torch"]), result
        assert "loaded " in log and " parameters" in log, log[-2000:]
    # a second export replaces its own archive; a user's file at that name is refused
    export_bundle.export_bundle(name, str(tmp_path / "dist"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / archive.name).write_text("not an archive of ours")
    with pytest.raises(Exception, match="not written by export_bundle"):
        export_bundle.export_bundle(name, str(tmp_path / "mine"))
