"""The benchmark's stress test: bundles on low fields pushed one factor at a time to and past the edge of training.

    python tools/benchmark.py --stress true --bundles interpolation,unet,cfm --datalist demo_data/datalist.json \\
        --out_dir bench/stress [--stress_conditions "snr 4,sagittal"] [--max_subjects 2]

For every subject of the split, the high field (normalised to [0, 1] by its 1st-99th percentiles inside the mask,
:class:`shared_transforms.transforms.intensity.PercentileNormalize`) is
degraded by :meth:`shared_transforms.simulation.dictionary.RandomLowFieldDegradationd.fixed`: every factor at its
typical value (:data:`shared_transforms.simulation.degradation.TYPICAL`: an axial 5 mm, 1.5 mm in-plane,
k-space-truncated scan at WM SNR 20 with contrast 0.75) except the one the condition names (:data:`CONDITIONS`). The
seed is the same for a subject in every condition, so the noise and the bias field differ only by the factor studied.
Each condition's pairs (the new low field, the original high field and mask) are written under
``<out_dir>/stress_data/<condition>/`` with their own datalist, and :func:`benchmark.benchmark` runs on it into
``<out_dir>/<condition>/``. One table
follows: rows are bundles, columns are conditions, cells are PSNR / SSIM inside the mask (mean over subjects):
``stress.md`` and ``stress.csv``.

Written here: the loop over conditions and the table; the degradation, the metrics and the per-condition benchmark
are the project's.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from shared_transforms.errors import InputError
from shared_transforms.io.datalist import pair_items
from shared_transforms.io.files import safe_name, write_text_atomic
from shared_transforms.io.volumes import LoadVolumed, write_nifti_atomic
from shared_transforms.simulation.degradation import TYPICAL
from shared_transforms.simulation.dictionary import RandomLowFieldDegradationd
from shared_transforms.transforms.intensity import PercentileNormalize

#: condition -> the factors that differ from ``TYPICAL`` (one factor at a time). Training ranges (RANDOMISED): SNR
#: 4-60, thickness 2-7 mm, every axis, contrast 0.3-1.2, both PSFs.
CONDITIONS: dict[str, dict] = {
    "snr 4": {"snr_wm": 4.0},
    "snr 8": {"snr_wm": 8.0},
    "snr 16": {"snr_wm": 16.0},
    "thick 3 mm": {"slice_thickness_mm": 3.0},
    "thick 5 mm": {"slice_thickness_mm": 5.0},
    "thick 7 mm": {"slice_thickness_mm": 7.0},
    "axial": {"axis": 2},
    "coronal": {"axis": 1},
    "sagittal": {"axis": 0},
    "contrast 0.3": {"contrast_scale": 0.3},
    "contrast 0.6": {"contrast_scale": 0.6},
    "k-space psf": {"psf": "kspace"},
    "gaussian psf": {"psf": "gaussian"},
}


def slug(name: str) -> str:
    """A folder or file name for a condition or a subject id: ``"thick 3 mm"`` -> ``"thick_3_mm"``, ``"../x"`` ->
    ``"x"`` (:func:`shared_transforms.io.files.safe_name`)."""
    return safe_name(name)


def parse_conditions(value: str | Sequence[str] | None) -> list[str]:
    """Condition names from a comma-separated string or a list (default: all of :data:`CONDITIONS`)."""
    if value in (None, "", ()):
        return list(CONDITIONS)
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        raise InputError("--stress_conditions", f"unknown condition(s) {unknown}; known: {', '.join(CONDITIONS)}")
    return names


def make_stress_pairs(
    datalist: str, split: str, out_dir: str, conditions: Sequence[str], max_subjects: int | None = None, seed: int = 0
) -> dict[str, str]:
    """Write each condition's degraded low fields and datalist; returns condition -> datalist path."""
    items = pair_items(datalist, split)
    if max_subjects is not None:
        items = items[: max(1, int(max_subjects))]
    load = LoadVolumed(["label", "mask"], allow_missing_keys=True)
    normalise = PercentileNormalize(1.0, 99.0)
    rows: dict[str, list[dict]] = {name: [] for name in conditions}
    for index, item in enumerate(tqdm(items, desc="stress pairs", unit="subject", leave=False)):
        d = load({k: item[k] for k in ("label", "mask") if item.get(k)})
        mask = d.get("mask")
        high01 = normalise(d["label"], mask)  # the degradation takes [0, 1] images
        for name in conditions:
            sim = RandomLowFieldDegradationd.fixed("image", mask_key="mask" if mask is not None else None,
                                                   **CONDITIONS[name])
            sim.set_random_state(seed + index)
            data = {"image": high01, **({"mask": mask} if mask is not None else {})}
            low = sim(data)["image"]
            path = os.path.join(out_dir, "stress_data", slug(name), f"{slug(str(item['subject']))}_low.nii.gz")
            write_nifti_atomic(low[0], low.affine, path, "stress", f"stress low field ({name})")
            rows[name].append({"subject": str(item["subject"]), "low": os.path.abspath(path), "high": item["label"],
                               **({"mask": item["mask"]} if item.get("mask") else {})})
    paths = {}
    for name in conditions:
        path = os.path.join(out_dir, "stress_data", slug(name), "datalist.json")
        factors = {**TYPICAL, **CONDITIONS[name]}
        write_text_atomic(path, json.dumps({"testing": rows[name], "degradation": factors}, indent=2))
        paths[name] = path
    return paths


def stress_table(results: dict[str, list[dict]], bundles: Sequence[str]) -> tuple[str, list[dict]]:
    """Markdown (rows = bundles, columns = conditions, cells PSNR / SSIM inside the mask) and the CSV rows."""
    conditions = list(results)
    header = "| bundle | " + " | ".join(conditions) + " |"
    lines = [header, "| --- " * (len(conditions) + 1) + "|"]
    csv_rows = []
    for b in bundles:
        cells = []
        for c in conditions:
            mine = [r for r in results[c] if r["method"] == b]
            psnr = float(np.mean([float(r["psnr_mask"]) for r in mine]))
            ssim = float(np.mean([float(r["ssim_mask"]) for r in mine]))
            air = float(np.mean([float(r.get("air_mean", "nan")) for r in mine]))
            cells.append(f"{psnr:.2f} / {ssim:.3f}")
            csv_rows.append({"bundle": b, "condition": c, "subjects": len(mine), "psnr_mask": round(psnr, 4),
                             "ssim_mask": round(ssim, 5), "air_mean": round(air, 5)})
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines), csv_rows


def run_stress(benchmark_fn, bundles: list[str], datalist: str, split: str, out_dir: str, conditions: Sequence[str],
               max_subjects: int | None, command: str, **benchmark_kwargs) -> dict:
    """Make the pairs, benchmark every condition with ``benchmark_fn`` (:func:`benchmark.benchmark`), write the
    table. Returns ``{"markdown": path, "csv": path, "table": text}``."""
    pairs = make_stress_pairs(datalist, split, out_dir, conditions, max_subjects)
    results = {}
    for name in conditions:
        run = benchmark_fn(bundles, pairs[name], split="testing", out_dir=os.path.join(out_dir, slug(name)),
                           command=f"{command} (condition '{name}')", **benchmark_kwargs)
        results[name] = run["rows"]
    table, rows = stress_table(results, bundles)
    typical = ", ".join(f"{k} {v}" for k, v in TYPICAL.items())
    text = (f"# Stress test\n\nCommand: `{command}`\n\nDatalist `{datalist}`, split `{split}`; low fields made from "
            f"the high fields by shared_transforms.simulation.degradation with one factor changed per column from the typical "
            f"values ({typical}). Cells: PSNR (dB) / SSIM inside the mask, mean over subjects.\n\n{table}\n")
    md_path = write_text_atomic(os.path.join(out_dir, "stress.md"), text)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    csv_path = write_text_atomic(os.path.join(out_dir, "stress.csv"), buf.getvalue(), newline="")
    return {"markdown": md_path, "csv": csv_path, "table": table}
