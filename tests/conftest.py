"""Shared fixtures: tiny synthetic volumes written as NIfTI files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "2")


REPO = Path(__file__).resolve().parents[1]


def load_bundle_scripts(bundle: str):
    """Import ``bundles/<bundle>/scripts`` as the package ``<bundle>_bundle_scripts`` (every bundle names its code
    package ``scripts``, so the tests of several bundles in one process need distinct names). Returns the package."""
    import importlib.util

    name = f"{bundle}_bundle_scripts"
    if name in sys.modules:
        return sys.modules[name]
    folder = REPO / "bundles" / bundle / "scripts"
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def phantom(shape=(24, 28, 20), seed=0) -> np.ndarray:
    """A smooth head-like phantom: an ellipsoid 'brain' with a brighter core and a darker rim, in [0, 1]."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r = np.sqrt(sum((g / a) ** 2 for g, a in zip(grid, (0.8, 0.85, 0.8))))
    vol = np.where(r < 1, 0.4, 0.0) + np.where(r < 0.6, 0.4, 0.0) + 0.2 * np.where(r < 1, grid[0] * 0.5 + 0.5, 0)
    return (vol + 0.01 * rng.standard_normal(shape) * (r < 1)).astype(np.float32)


def save(path, data, affine=None) -> str:
    affine = np.eye(4) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64)), str(path))
    return str(path)


def tiny_subjects(folder, n: int, splits: tuple[int, int, int]) -> dict:
    """``n`` tiny subjects written to ``folder``: high field 1 mm (16, 32, 24), low field 2 x 2 x 4 mm (block means
    plus noise), brain mask; and ``folder/datalist.json`` with ``splits`` = (training, validation, testing) counts.
    Returns {"dir", "datalist", "items"}."""
    import json

    items = []
    for i in range(n):
        high = phantom((16, 32, 24), seed=i)
        low = high.reshape(8, 2, 16, 2, 6, 4).mean(axis=(1, 3, 5))
        low = low + 0.03 * np.random.default_rng(10 + i).standard_normal(low.shape).astype(np.float32)
        aff_low = np.diag([2.0, 2.0, 4.0, 1.0])
        aff_low[:3, 3] = [0.5, 0.5, 1.5]
        items.append({
            "subject": f"t{i}",
            "high": save(folder / f"t{i}_high.nii.gz", high),
            "low": save(folder / f"t{i}_low.nii.gz", low, aff_low),
            "mask": save(folder / f"t{i}_mask.nii.gz", (high > 0.1).astype(np.uint8)),
        })
    n_train, n_val, _ = splits
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps({"training": items[:n_train], "validation": items[n_train:n_train + n_val],
                                    "testing": items[n_train + n_val:]}))
    return {"dir": folder, "datalist": str(datalist), "items": items}


@pytest.fixture
def tiny_pair(tmp_path):
    """A low/high/mask triple on different grids: high 1 mm (24, 28, 20), low 2 x 2 x 4 mm."""
    high = phantom()
    mask = (high > 0.1).astype(np.uint8)
    low = high.reshape(12, 2, 14, 2, 5, 4).mean(axis=(1, 3, 5))  # 2x2x4 block means: voxel centres as below
    low = low + 0.02 * np.random.default_rng(1).standard_normal((12, 14, 5)).astype(np.float32)
    aff_low = np.diag([2.0, 2.0, 4.0, 1.0])
    aff_low[:3, 3] = [0.5, 0.5, 1.5]  # voxel centres of the 2x2x4 blocks
    return {
        "high": save(tmp_path / "s1_high.nii.gz", high),
        "low": save(tmp_path / "s1_low.nii.gz", low, aff_low),
        "mask": save(tmp_path / "s1_mask.nii.gz", mask),
    }
