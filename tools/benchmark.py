#!/usr/bin/env python
"""Compare bundles side by side on one split of a datalist: image quality, speed and cost, in one process.

    python tools/benchmark.py --bundles interpolation,unet,cfm --datalist demo_data/datalist.json
    python tools/benchmark.py --bundles unet,cfm --datalist D/datalist.json --split testing --out_dir bench \\
        --device cuda --overrides '{"cfm": {"num_steps": 8, "solver": "heun"}}' --weights '{"unet": "path/model.pt"}' \\
        --max_subjects 10 --save_predictions true --lpips_net alex

Every bundle is built from its own ``configs/inference.json`` by MONAI's ``ConfigParser`` (after
:func:`shared_transforms.engine.bundle.activate_bundle`, since every bundle's code package is called ``scripts``), with
``--overrides`` applied to its config ids (e.g. ``num_steps``), its ``network_def`` built and its weights loaded
(``ckpt_path`` of the config, or ``--weights``; a bundle without a ``ckpt_path`` id, e.g. ``interpolation``, has none),
then its ``inferer`` runs ``inferer(image, network)`` on every item of the split. All bundles see the same input: the
pair aligned once per subject by :func:`shared_transforms.transforms.pipelines.pair_transforms` (low field onto the
high-field grid, both normalised to [0, 1]) and kept in memory (about 50 MB per 1 mm subject: use ``--max_subjects`` for
large splits). Each prediction (the mean when a sampler returns mean and std,
:mod:`shared_transforms.inference.uncertainty`), clamped to [0, 1], is scored with
:func:`shared_transforms.metrics.evaluate_volume`.

Writes to ``--out_dir``:

- ``results.csv``: one row per (method, subject): every key of ``evaluate_volume``, the striping index
  (:func:`shared_transforms.metrics.striping_index` across ``striping_axis``: the axis the bundle sliced along, or
  for a 3D bundle the one the 2D bundles slice along, against ``striping_within_axis``, the slice's axis that is
  not the acquisition's thick one; 1 = as consistent across slices as the high field), plus
  ``seconds_per_volume`` (the inferer call only, CUDA synchronised; the table gives the first volume's time apart,
  warm-up included, and the mean ± std, min-max of the others), ``seconds_with_model_load`` (plus the bundle's
  network build and weight load), ``unit``, ``evaluations_per_unit`` / ``evaluations_per_volume`` (network evaluations,
  as the bundle's :class:`~shared_transforms.inference.inferers.VolumeInferer` declares them),
  ``gflop_per_evaluation`` / ``gflop_per_volume`` (the network's floating-point operations, counted by
  :func:`benchmarking.measure.count_gflop_per_evaluation`), ``parameters`` and ``peak_memory_mb`` (what the bundle's load keeps plus its
  largest rise during one inference; see :class:`benchmarking.measure.PeakMemory`).
- ``results.md``: one row per method, mean ± std over subjects (population std), with a header naming the date,
  device, versions, datalist, split and the command line; printed at the end.
- ``figure.png``: per subject (up to ``--max_figure_subjects``) the mid-sagittal slice of the aligned low field, each
  method and the high field on one grey scale [0, 1], then each method's absolute error on [0, ``--error_max``].
- ``predictions/<subject>_<method>.nii.gz`` with ``--save_predictions true`` (on the high-field grid, its affine).

What is MONAI's / a library's: the config parsing and instantiation (``ConfigParser``), the transforms and the
inferers (the bundles'), the metrics (``evaluate_volume``), the weight loading and its errors (``load_weights``),
NIfTI writing (``write_nifti_atomic``), the figure (matplotlib), the FLOP count (torch's ``FlopCounterMode``, through
``shared_transforms.engine.flops``). Written here: the loop, the timing, the peak-memory sampler (psutil is not a
dependency; it reads the same ``/proc/self/status`` on Linux) and the table.
"""

from __future__ import annotations

import inspect
import json
import os
import shlex
import sys
from typing import Any

import fire
import torch
from tqdm.auto import tqdm

from shared_transforms.errors import InputError
from shared_transforms.io.datalist import pair_items
from shared_transforms.io.files import write_text_atomic
from shared_transforms.io.volumes import NORMALISED_NOTE, as_bool, write_nifti_atomic
from shared_transforms.metrics import LPIPS_BACKBONE_FILES, evaluate_volume, striping_index

from benchmarking.measure import reference_rates
from benchmarking.report import markdown_table, prediction_stem, report_header, save_figure, write_csv
from benchmarking.runner import (
    align_pairs,
    available_bundles,
    common_input_kind,
    common_spacing,
    configure_bundle,
    load_bundle,
    predict,
    striping_axes,
)

#: the CLI's own command (used in the report when ``main`` is called from Python).
SCRIPT = "tools/benchmark.py"
_CLI_ARGV: list[str] | None = None


def parse_bundles(value: Any) -> list[str]:
    """``"a,b"`` (or the tuple fire makes of it) -> ``["a", "b"]``; raises for a name that is not a bundle."""
    names = value.split(",") if isinstance(value, str) else list(value or [])
    names = [str(n).strip() for n in names if str(n).strip()]
    known = available_bundles()
    if not names:
        raise InputError("--bundles", f"no bundle given; available: {', '.join(known)}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError("--bundles", f"unknown bundle(s) {unknown}; available: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise InputError("--bundles", f"a bundle is named twice in {names}")
    return names


def parse_json_arg(value: Any, option: str, bundles: list[str]) -> dict[str, Any]:
    """A ``{"bundle": ...}`` option given as JSON text (or the dict fire already made of it); keys must be bundles
    of this run."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise InputError(option, f"is not valid JSON ({err}): {value!r}") from None
    if not isinstance(value, dict):
        raise InputError(option, f"must be a JSON object keyed by bundle name, got {value!r}")
    stray = [k for k in value if k not in bundles]
    if stray:
        raise InputError(option, f"names bundle(s) {stray} that are not in --bundles {bundles}")
    return value


def resolve_device(device: str | None) -> torch.device:
    """``--device``: "cpu", "cuda" (or "cuda:N"); None = CUDA when available."""
    if device is None or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(str(device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", f"is {device!r} but CUDA is not available here; use --device cpu")
    return dev


def command_line(arguments: dict[str, Any]) -> str:
    """The command that produced the run: ``sys.argv`` when run as a script, else the call's non-default arguments
    written as the equivalent command."""
    if _CLI_ARGV is not None:
        return "python " + shlex.join(_CLI_ARGV)
    defaults = {k: p.default for k, p in inspect.signature(main).parameters.items()}
    parts = ["python", SCRIPT]
    for key, value in arguments.items():
        if key in defaults and value == defaults[key] and key not in ("bundles", "datalist"):
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        elif isinstance(value, dict):
            value = json.dumps(value)
        parts += [f"--{key}", shlex.quote(str(value))]
    return " ".join(parts)


def benchmark(
    bundles: list[str],
    datalist: str,
    split: str = "testing",
    out_dir: str = "bench",
    device: str | None = None,
    overrides: dict | None = None,
    weights: dict | None = None,
    max_subjects: int | None = None,
    save_predictions: bool = False,
    lpips_net: str | None = "alex",
    max_figure_subjects: int = 3,
    error_max: float = 0.3,
    command: str = "",
) -> dict[str, Any]:
    """Run every bundle on every item of ``split`` and write the outputs (see the module docstring).

    Returns ``{"rows": [...], "csv": path, "markdown": path, "figure": path, "table": text}``.
    """
    dev = resolve_device(device)
    known = available_bundles()
    prepared = [configure_bundle(n, known[n], (overrides or {}).get(n, {}), (weights or {}).get(n), dev)
                for n in bundles]
    items = pair_items(datalist, split, common_input_kind(prepared))
    if max_subjects is not None:
        items = items[: max(1, int(max_subjects))]
    subjects = align_pairs(items, common_spacing(prepared))
    os.makedirs(out_dir, exist_ok=True)
    rows: list[dict] = []
    panels = [{"subject": s["subject"], "image": s["image"][0, s["image"].shape[1] // 2].numpy(),
               "label": s["label"][s["label"].shape[0] // 2], "preds": {}} for s in subjects[:max_figure_subjects]]
    progress = tqdm(total=len(prepared) * len(subjects), desc="benchmark", unit="volume")
    for bundle in prepared:
        progress.set_postfix_str(f"{bundle.name}: loading")
        load_bundle(bundle, dev)
        mine = []
        for i, s in enumerate(subjects):
            progress.set_postfix_str(f"{bundle.name}: {s['subject']}")
            pred, seconds, evaluations, gflop = predict(bundle, s["image"], dev)
            scores = evaluate_volume(pred, s["label"], s["mask"], lpips_net=lpips_net)
            across, within = striping_axes(bundle, s["image"])
            scores.update(striping_axis=across, striping_within_axis=within,
                          striping_index=striping_index(pred, s["label"], across, s["mask"], within))
            mine.append({
                "method": bundle.name, "subject": s["subject"], "device": str(dev),
                "seconds_per_volume": seconds,
                "seconds_with_model_load": seconds + bundle.load_seconds,
                "model_load_seconds": bundle.load_seconds, "unit": bundle.unit,
                "evaluations_per_unit": bundle.evaluations_per_unit,
                "evaluations_per_volume": evaluations, "parameters": bundle.parameters,
                "gflop_per_evaluation": gflop, "gflop_per_volume": None if gflop is None else gflop * evaluations,
                **scores,
            })
            if i < len(panels):
                panels[i]["preds"][bundle.name] = pred[pred.shape[0] // 2]
            if save_predictions:
                path = os.path.join(out_dir, "predictions", f"{prediction_stem(s['subject'], i)}_{bundle.name}.nii.gz")
                write_nifti_atomic(pred, s["affine"], path, "benchmark", f"{bundle.name} {NORMALISED_NOTE}",
                                   inputs=s["files"])
            progress.update(1)
        for row in mine:
            row["peak_memory_mb"] = round(bundle.memory.megabytes, 1)
        rows += mine
        bundle.network = bundle.inferer = bundle.parser = None  # free the model (the parser holds it too)
    progress.close()

    csv_path = write_csv(rows, os.path.join(out_dir, "results.csv"))
    table = markdown_table(rows, bundles)
    md_path = os.path.join(out_dir, "results.md")
    header = report_header(dev, datalist, split, len(subjects), command, reference_rates(dev))
    write_text_atomic(md_path, header + "\n\n" + table + "\n")
    figure = save_figure(panels, bundles, os.path.join(out_dir, "figure.png"), error_max) if panels else None
    return {"rows": rows, "csv": csv_path, "markdown": md_path, "figure": figure, "table": table}


def main(
    bundles: str = "interpolation,unet,cfm",
    datalist: str = "demo_data/datalist.json",
    split: str = "testing",
    out_dir: str = "bench",
    device: str | None = None,
    overrides: str | dict | None = None,
    weights: str | dict | None = None,
    max_subjects: int | None = None,
    save_predictions: bool | str = False,
    lpips_net: str | None = "alex",
    max_figure_subjects: int = 3,
    error_max: float = 0.3,
    stress: bool | str = False,
    stress_conditions: str | None = None,
) -> None:
    """Benchmark bundles on one datalist split and write results.csv, results.md and figure.png to ``out_dir``.

    Args:
        bundles: comma-separated bundle names (folders of ``bundles/``).
        datalist: the project's datalist JSON; split: which of its splits.
        device: "cpu" or "cuda" (default: CUDA when available).
        overrides: JSON ``{"bundle": {"config id": value}}``, e.g. ``{"cfm": {"num_steps": 8, "solver": "heun"}}``.
        weights: JSON ``{"bundle": "path/model.pt"}`` instead of the config's ``ckpt_path``.
        max_subjects: only the first N items of the split.
        save_predictions: also write each prediction as NIfTI under ``out_dir/predictions``.
        lpips_net: LPIPS backbone ("alex", "vgg", "squeeze"; "none" to skip); computed only when its ImageNet weights
            are in the torch hub cache, else the table says why.
        max_figure_subjects: rows of figure.png; error_max: top of the error maps' colour scale.
        stress: instead, the stress test (``tools/stress.py``): the split's high fields degraded one factor at a time
            (``stress_conditions``: comma-separated names of ``stress.CONDITIONS``, default all), every bundle on each
            condition, one table in ``out_dir/stress.md`` (rows bundles, columns conditions, PSNR / SSIM in the mask).
    """
    arguments = dict(locals())
    names = parse_bundles(bundles)
    if isinstance(lpips_net, str) and lpips_net.strip().lower() in ("", "none"):
        lpips_net = None
    if lpips_net is not None and lpips_net not in LPIPS_BACKBONE_FILES:
        raise InputError("--lpips_net", f"is {lpips_net!r}; use one of {sorted(LPIPS_BACKBONE_FILES)} or none")
    common = dict(
        device=device,
        overrides=parse_json_arg(overrides, "--overrides", names),
        weights=parse_json_arg(weights, "--weights", names),
        save_predictions=as_bool(save_predictions),
        lpips_net=lpips_net,
        max_figure_subjects=int(max_figure_subjects),
        error_max=float(error_max),
    )
    max_subjects = None if max_subjects in (None, "") else int(max_subjects)
    if as_bool(stress):
        import stress as stress_test  # tools/stress.py, beside this file

        result = stress_test.run_stress(benchmark, names, str(datalist), split, str(out_dir),
                                        stress_test.parse_conditions(stress_conditions), max_subjects,
                                        command_line(arguments), **common)
        print(result["table"])
        print(f"wrote {result['csv']}, {result['markdown']}")
        return
    result = benchmark(names, str(datalist), split=split, out_dir=str(out_dir), max_subjects=max_subjects,
                       command=command_line(arguments), **common)
    print(result["table"])
    print(f"wrote {result['csv']}, {result['markdown']}" + (f", {result['figure']}" if result["figure"] else ""))


def run_command_line(main_function, prog: str, namespace: dict) -> None:
    """Run ``main_function`` under fire as the script ``prog`` (the benchmark's and the sweep's ``__main__``): the
    command line is kept in ``namespace["_CLI_ARGV"]`` for the reports' command, and bad input ends in one line
    (``prog: <file>: <problem>``) with exit status 1."""
    namespace["_CLI_ARGV"] = list(sys.argv)
    try:
        fire.Fire(main_function)
    except InputError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_command_line(main, "benchmark", globals())
