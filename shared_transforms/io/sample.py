"""The sample every bundle's inference runs on by default: one simulated low-field volume, its high-field
reference and brain mask (a test subject of the demo data, made by ``tools/make_demo_data.py --write_sample``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
SAMPLE_FILES = {"low": "sample_low.nii.gz", "high": "sample_high.nii.gz", "mask": "sample_mask.nii.gz"}


def sample_paths() -> dict[str, str]:
    """``{"low": ..., "high": ..., "mask": ...}``: absolute paths of the shipped sample volumes."""
    paths = {k: str(SAMPLE_DIR / v) for k, v in SAMPLE_FILES.items()}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"the shipped sample is missing ({', '.join(missing)}); rebuild it with "
            "`python tools/make_demo_data.py --out_dir demo_data --write_sample true`"
        )
    return paths


def sample_info() -> dict:
    """Provenance of the sample (subject, simulator parameters, command), from ``sample_data/sample.json``."""
    path = SAMPLE_DIR / "sample.json"
    return json.loads(path.read_text()) if path.is_file() else {}
