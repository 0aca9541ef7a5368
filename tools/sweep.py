#!/usr/bin/env python
"""A bundle's settings swept on one datalist split: quality and seconds per volume per setting, in one table.

    python tools/sweep.py --bundle diffusion_iqt --datalist demo_data/datalist.json \\
        --grid '{"sampler": ["ancestral", "ddim"], "num_steps": [2, 5, 10, 20]}' --out_dir bench/diffusion_iqt_steps

Every combination of the ``--grid`` values (config ids of the bundle's ``inference.json``, as ``tools/benchmark.py
--overrides`` takes them) is one run of :func:`benchmark.benchmark` on the split, into ``out_dir/<setting>/``
(its ``results.csv``, ``results.md``, ``figure.png``); the same subjects and the same seeds for every setting. Then
``sweep.csv`` (one row per setting: the grid values, mean and std over subjects of PSNR and SSIM inside the mask,
the striping index, seconds per volume, network evaluations per volume) and ``sweep.md`` (the table, with the date,
device and command) in ``out_dir``. Options as the benchmark's: ``--split``, ``--device``, ``--weights``,
``--max_subjects``, ``--lpips_net``.

This is the step study of a sampler (cfm's: ``--grid '{"solver": ["euler", "midpoint", "heun"], "num_steps": [1, 2,
4, 8, 16]}'``), and works for any other config value (windows, overlap, precision). The table also gives the network's
GFLOP per volume and the rate achieved (GFLOP over seconds), and its header the machine's matrix-product rates in
float32 and bfloat16 (:func:`benchmarking.measure.reference_rates`), measured in the same process, so that seconds
from two machines can be compared.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
from typing import Any

import numpy as np

from shared_transforms.errors import InputError
from shared_transforms.io.files import write_text_atomic

import benchmark  # tools/benchmark.py and its package, beside this file (a script's folder is first on its path)
from benchmarking import measure, report

COLUMNS = ("psnr_mask", "ssim_mask", "striping_index", "seconds_per_volume")


def settings(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the grid's order (the last id varies fastest)."""
    if not isinstance(grid, dict) or not grid:
        raise InputError("--grid", "must be a JSON object of config ids to lists of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise InputError("--grid", f"'{key}' must map to a non-empty list, got {values!r}")
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def setting_name(setting: dict[str, Any]) -> str:
    """A folder name for a setting: ``sampler-ddim_num_steps-5``."""
    return "_".join(f"{k}-{v}" for k, v in setting.items()).replace("/", "-").replace(" ", "")


def summarise(setting: dict[str, Any], rows: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = dict(setting)
    out["subjects"] = len(rows)
    for col in COLUMNS:
        values = np.asarray([float(r[col]) for r in rows], dtype=np.float64)
        out[f"{col}_mean"], out[f"{col}_std"] = float(values.mean()), float(values.std())
    out["evaluations_per_volume"] = float(np.mean([float(r["evaluations_per_volume"]) for r in rows]))
    gflop = [r.get("gflop_per_volume") for r in rows]
    known = all(g not in (None, "") for g in gflop)
    out["gflop_per_volume"] = float(np.mean([float(g) for g in gflop])) if known else None
    seconds = out["seconds_per_volume_mean"]
    out["achieved_gflops"] = out["gflop_per_volume"] / seconds if known and seconds > 0 else None
    return out


def markdown(summary: list[dict], keys: list[str]) -> str:
    head = [*keys, "PSNR mask (dB)", "SSIM mask", "striping index", "s / volume", "network evaluations / volume",
            "GFLOP / volume", "achieved GFLOP/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        cells = [str(s[k]) for k in keys] + [
            f"{s['psnr_mask_mean']:.2f} ± {s['psnr_mask_std']:.2f}",
            f"{s['ssim_mask_mean']:.4f} ± {s['ssim_mask_std']:.4f}",
            f"{s['striping_index_mean']:.3f} ± {s['striping_index_std']:.3f}",
            f"{s['seconds_per_volume_mean']:.1f} ± {s['seconds_per_volume_std']:.1f}",
            f"{s['evaluations_per_volume']:.0f}",
            "-" if s["gflop_per_volume"] is None else f"{s['gflop_per_volume']:,.0f}",
            "-" if s["achieved_gflops"] is None else f"{s['achieved_gflops']:,.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep(
    bundle: str,
    datalist: str,
    grid: dict[str, list],
    split: str = "testing",
    out_dir: str = "bench/sweep",
    device: str | None = None,
    weights: str | None = None,
    max_subjects: int | None = None,
    lpips_net: str | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Run the sweep (see the module docstring); returns ``{"summary": [...], "csv": path, "markdown": path}``."""
    combos = settings(grid)
    summary = []
    for setting in combos:
        folder = os.path.join(out_dir, setting_name(setting))
        result = benchmark.benchmark([bundle], datalist, split=split, out_dir=folder, device=device,
                                     overrides={bundle: setting}, weights={bundle: weights} if weights else None,
                                     max_subjects=max_subjects, lpips_net=lpips_net, max_figure_subjects=1,
                                     command=command)
        summary.append(summarise(setting, result["rows"]))
        print(markdown(summary[-1:], list(grid)).splitlines()[-1], flush=True)
    os.makedirs(out_dir, exist_ok=True)
    csv_path = report.write_csv(summary, os.path.join(out_dir, "sweep.csv"))
    dev = benchmark.resolve_device(device)
    n = summary[0]["subjects"]
    table = markdown(summary, list(grid))
    md_path = os.path.join(out_dir, "sweep.md")
    header = report.report_header(dev, datalist, split, n, command, measure.reference_rates(dev))
    write_text_atomic(md_path, header + "\n\n" + table + "\n")
    return {"summary": summary, "csv": csv_path, "markdown": md_path, "table": table}


_CLI_ARGV: list[str] | None = None


def command_line(arguments: dict[str, Any]) -> str:
    """The command that produced the sweep: ``sys.argv`` when run as a script, else the call's arguments."""
    if _CLI_ARGV is not None:
        return "python " + shlex.join(_CLI_ARGV)
    parts = ["python", "tools/sweep.py"]
    for key, value in arguments.items():
        if value is not None:
            parts += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return shlex.join(parts)


def main(
    bundle: str,
    grid: str | dict,
    datalist: str = "demo_data/datalist.json",
    split: str = "testing",
    out_dir: str = "bench/sweep",
    device: str | None = None,
    weights: str | None = None,
    max_subjects: int | None = None,
    lpips_net: str | None = "none",
) -> None:
    """Sweep ``grid`` (JSON: config id -> list of values) of ``bundle`` on ``datalist``'s ``split``."""
    arguments = dict(locals())
    if isinstance(grid, str):
        try:
            grid = json.loads(grid)
        except json.JSONDecodeError as err:
            raise InputError("--grid", f"is not valid JSON ({err.msg})") from None
    if isinstance(lpips_net, str) and lpips_net.strip().lower() in ("", "none"):
        lpips_net = None
    result = sweep(str(bundle), str(datalist), grid, split=split, out_dir=str(out_dir), device=device,
                   weights=weights, max_subjects=None if max_subjects in (None, "") else int(max_subjects),
                   lpips_net=lpips_net, command=command_line(arguments))
    print(result["table"])
    print(f"wrote {result['csv']}, {result['markdown']}")


if __name__ == "__main__":
    benchmark.run_command_line(main, "sweep", globals())
