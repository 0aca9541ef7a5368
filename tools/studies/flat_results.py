"""The bundle's results table: every model at every mask setting, scored by ``configs/evaluate.json``, in one table.

For each model and each setting (4x and 8x, random and equispaced, fastMRI's centre fractions) this runs the
bundle's own evaluation command through MONAI's bundle runner (one process each, so every cell is exactly the
command printed beside the table), keeps its ``metrics_summary.json`` under ``<work_dir>/<model>_<R>x_<pattern>``
(a cell whose summary exists is not run again: the table can be built in pieces), and writes the table as markdown
(``<out_dir>/results.md``) and JSON (``results.json``). Cells: PSNR (mean +- std over volumes) and SSIM inside the
brain mask, the project's metrics; fastMRI's PSNR, SSIM and NMSE (data range the reference volume's maximum).

Run from the repository root::

    python tools/study.py flat_results --datalist demo_data_random/datalist.json --num_slices 64 \\
        --models "{'zero-filled': 'zero_filled', 'FLAT': ['bundles/flat/models/model.pt', 'flow'], \\
                   'unrolled': ['~/runs/flat_vanilla/model.pt', 'learned_steps']}"

A model is ``name: [checkpoint, mode]`` (``mode`` ``flow`` or ``learned_steps``, as in the configs), optionally
with a third element of config overrides (``{'share_weights': False}``), or ``name: 'zero_filled'`` for the
zero-filled baseline (no weights).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from shared_transforms.io.files import write_text_atomic

from benchmarking.measure import Stopwatch

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "flat"
CONFIGS = f"[{str(BUNDLE / 'configs' / 'train.json')!r},{str(BUNDLE / 'configs' / 'evaluate.json')!r}]"
#: (acceleration, centre fraction, pattern): fastMRI's settings
SETTINGS = ((8.0, 0.04, "random"), (8.0, 0.04, "equispaced"), (4.0, 0.08, "random"), (4.0, 0.08, "equispaced"))


def eval_command(spec, datalist: str, num_slices: int, setting: tuple, output_dir: str) -> list[str]:
    """The bundle runner's argument list for one cell."""
    acceleration, center_fraction, pattern = setting
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        CONFIGS,
        "--datalist",
        datalist,
        "--eval_num_slices",
        str(int(num_slices)),
        "--acceleration",
        f"{acceleration:g}",
        "--center_fraction",
        f"{center_fraction:g}",
        "--mask_pattern",
        pattern,
        "--output_dir",
        output_dir,
    ]
    if spec == "zero_filled":
        return cmd + [
            "--network_def",
            "{'_target_': 'scripts.network.ZeroFilled'}",
            "--validate#checkpoint_loader#_disabled_",
            "true",
            "--mode",
            "zero_filled",
        ]
    ckpt, mode, *extra = spec
    cmd += ["--ckpt_path", os.path.abspath(os.path.expanduser(ckpt)), "--mode", mode]
    for key, value in (extra[0] if extra else {}).items():  # e.g. {'share_weights': False}
        cmd += [f"--{key}", repr(value)]  # a Python literal, as fire (the runner's parser) reads it
    return cmd


def portable(text: str) -> str:
    """``text`` without this machine's paths: the interpreter as ``python``, the repository root dropped (commands
    run from it), the home folder as ``~``."""
    text = text.replace(sys.executable, "python").replace(str(BUNDLE.parents[1]) + os.sep, "")
    return text.replace(os.path.expanduser("~") + os.sep, "~" + os.sep)


def _cell_name(name: str, setting: tuple) -> str:
    return f"{name.replace(' ', '_')}_{setting[0]:g}x_{setting[2]}"


def _fmt(summary: dict | None, key: str, digits: int, std: bool = False) -> str:
    if not summary or not isinstance(summary.get(key), dict) or not math.isfinite(summary[key]["mean"]):
        return "not run"
    text = f"{summary[key]['mean']:.{digits}f}"
    return text + f" ± {summary[key]['std']:.{digits}f}" if std else text


def markdown(cells: dict, models: list[str]) -> str:
    """Two tables (rows: models; columns: settings): in-mask PSNR/SSIM and fastMRI PSNR/SSIM/NMSE."""
    heads = [f"{s[0]:g}x {s[2]}" for s in SETTINGS]
    out = []
    for title, parts in (
        (
            "Inside the brain mask: PSNR (dB, mean ± std over volumes) / SSIM",
            (("psnr_mask", 2, True), ("ssim_mask", 4, False)),
        ),
        (
            "fastMRI's metrics (data range = the reference volume's maximum): PSNR (dB) / SSIM / NMSE",
            (("fastmri_psnr", 2, True), ("fastmri_ssim", 4, False), ("fastmri_nmse", 4, False)),
        ),
    ):
        out += [f"**{title}**", "", "| model | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
        for m in models:
            row = []
            for s in SETTINGS:
                summary = cells.get(_cell_name(m, s))
                vals = [_fmt(summary, k, d, sd) for k, d, sd in parts]
                row.append("not run" if all(v == "not run" for v in vals) else " / ".join(vals))
            out.append(f"| {m} | " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def main(
    models: dict,
    datalist: str,
    num_slices: int = 64,
    work_dir: str = "~/runs/flat_results",
    out_dir: str = "bundles/flat/docs",
    rerun: bool = False,
    only: str | None = None,
) -> str:
    """Evaluate every missing cell (``only``: a comma list of model names to run now; the table shows all), then
    write the table; returns the markdown."""
    work = Path(os.path.expanduser(work_dir))
    datalist = os.path.abspath(os.path.expanduser(datalist))
    chosen = set(only.split(",")) if isinstance(only, str) else set(only or models)
    cells, commands = {}, {}
    for name, spec in models.items():
        for s in SETTINGS:
            cell = _cell_name(name, s)
            out = work / cell
            cmd = eval_command(spec, datalist, num_slices, s, str(out))
            commands[cell] = cmd
            summary_path = out / "metrics_summary.json"
            if name in chosen and (rerun or not summary_path.is_file()):
                print(f"[results] {cell} ...", flush=True)
                with Stopwatch() as watch:
                    done = subprocess.run(cmd, check=False, cwd=BUNDLE.parents[1], capture_output=True, text=True)
                if done.returncode != 0:
                    print(done.stdout[-2000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
                    raise RuntimeError(f"the evaluation of {cell} failed (exit {done.returncode})")
                print(f"[results] {cell} done in {watch.seconds:.0f} s", flush=True)
            if summary_path.is_file():
                cells[cell] = json.loads(summary_path.read_text())
    table = markdown(cells, list(models))
    os.makedirs(out_dir, exist_ok=True)
    write_text_atomic(os.path.join(out_dir, "results.md"), table)
    write_text_atomic(
        os.path.join(out_dir, "results.json"),
        json.dumps(
            {
                "models": dict(models),
                "datalist": portable(datalist),
                "num_slices": num_slices,
                "cells": cells,
                "commands": {k: portable(" ".join(["python", *v[1:]])) for k, v in commands.items()},
            },
            indent=2,
        ),
    )
    print(table)
    return table
