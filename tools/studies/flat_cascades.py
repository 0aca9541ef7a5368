"""Per-cascade study: how close each intermediate image of the unrolled network is to the reference.

FLAT's claim (arXiv 2512.03020) is that fixing the cascades to the flow's time grid and aligning every intermediate
image with the straight path makes the trajectory monotone and interpretable, where the unrolled baseline's
intermediate images need not be images at all. This measures it on the bundle's own evaluation data: for every
model given, the fastMRI PSNR and SSIM (:func:`.protocol.protocol_fastmri`) of the
magnitude of the zero-filled image and of each cascade's output, averaged over the test volumes, written as a JSON
table and a PNG plot.

Run from the repository root::

    python tools/study.py flat_cascades --datalist demo_data_random/datalist.json \\
        --models "{'FLAT': ['bundles/flat/models/model.pt', 'flow'], \\
                   'unrolled': ['bundles/flat/models/model_unrolled.pt', 'learned_steps']}" \\
        --num_slices 64 --out_dir bundles/flat/docs

Each model is ``name: [checkpoint, mode]`` (``mode`` as in the configs, ``flow`` or ``learned_steps``); the data
are the ``testing`` split under evaluate.json's pipeline (fixed mask per file, ``acceleration``,
``center_fraction``, ``mask_pattern``), cut to the central ``num_slices`` axial slices (-1: all).
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np
import torch
from monai.apps.reconstruction.complex_utils import complex_abs_t

from shared_transforms.engine import loader
from shared_transforms.io.files import write_text_atomic
from shared_transforms.io.preview import save_figure_atomic

from benchmarking.measure import Stopwatch

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "flat"
OWNER = "flat"


@torch.no_grad()
def trajectory_magnitudes(network, packed: torch.Tensor, slice_axis: int = 2, batch: int = 8) -> torch.Tensor:
    """Packed volume ``(3, X, Y, Z)`` -> magnitudes of every image of the trajectory ``(N + 1, X, Y, Z)`` (slices along
    ``slice_axis``, ``batch`` at a time), clipped to [0, 1] as the bundle's evaluation clips its prediction."""
    slices = torch.as_tensor(packed).movedim(1 + slice_axis, 0)  # (S, 3, H, W)
    out = [complex_abs_t(network.trajectory(slices[i : i + batch])) for i in range(0, slices.shape[0], batch)]
    mags = torch.cat(out, 0).clamp(0, 1)  # (S, N + 1, H, W)
    return mags.movedim(0, 1 + slice_axis)


def model_row(ckpt: str, mode: str, overrides: dict, device: str) -> dict:
    """One model's row: the mean fastMRI PSNR and SSIM of every image of its trajectory over the test volumes."""
    protocol_fastmri = loader.bundle_module(BUNDLE, "protocol").protocol_fastmri
    overrides = {**overrides, "mode": mode, "device": device}
    parser = loader.bundle_parser(BUNDLE, ["train.json", "evaluate.json"], overrides)
    dataset = parser.get_parsed_content("validate#dataset")
    network = loader.build_network(parser, loader.bundle_weights(parser, ckpt, "--models"), "network_def")
    network = network.to(device)
    axis = int(parser.get_parsed_content("slice_axis"))
    psnr, ssim = [], []
    for item in dataset:
        mags = trajectory_magnitudes(network, item["image"].to(device), axis).cpu().numpy()
        ref = np.asarray(item["label"][0])
        scores = [protocol_fastmri(m, ref, axis=axis) for m in mags]
        psnr.append([s["psnr"] for s in scores])
        ssim.append([s["ssim"] for s in scores])
    return {
        "checkpoint": ckpt,
        "mode": mode,
        "volumes": len(psnr),
        "flow_times": [round(t, 4) for t in network.net.times.tolist()],
        "psnr": np.mean(psnr, 0).round(3).tolist(),
        "ssim": np.mean(ssim, 0).round(4).tolist(),
    }


def main(
    models: dict,
    datalist: str,
    split: str = "testing",
    num_slices: int = 64,
    acceleration: float = 8.0,
    center_fraction: float = 0.04,
    mask_pattern: str = "random",
    out_dir: str = "bench/flat_cascades",
    device: str = "cpu",
) -> dict:
    """The study (module docstring); returns the table it writes to ``<out_dir>/cascade_study.json`` and plots in
    ``<out_dir>/cascade_study.png``."""
    args = {
        "models": models,
        "datalist": datalist,
        "split": split,
        "num_slices": num_slices,
        "acceleration": acceleration,
        "center_fraction": center_fraction,
        "mask_pattern": mask_pattern,
    }
    command = "python tools/study.py flat_cascades " + " ".join(f"--{k} {shlex.quote(str(v))}" for k, v in args.items())
    overrides = {
        "datalist": os.path.abspath(os.path.expanduser(datalist)),
        "eval_split": split,
        "eval_num_slices": int(num_slices),
        "acceleration": float(acceleration),
        "center_fraction": float(center_fraction),
        "mask_pattern": mask_pattern,
    }
    table: dict = {"command": command, "models": {}}
    with Stopwatch(device) as watch:
        for name, (ckpt, mode) in models.items():
            table["models"][name] = model_row(ckpt, mode, overrides, device)
    table["seconds"] = round(watch.seconds, 1)
    os.makedirs(out_dir, exist_ok=True)
    write_text_atomic(os.path.join(out_dir, "cascade_study.json"), json.dumps(table, indent=2))
    _plot(table, os.path.join(out_dir, "cascade_study.png"), acceleration, mask_pattern)
    return table


def _plot(table: dict, path: str, acceleration: float, mask_pattern: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, row in table["models"].items():
        steps = range(len(row["psnr"]))
        axes[0].plot(steps, row["psnr"], marker="o", ms=3, label=name)
        axes[1].plot(steps, row["ssim"], marker="o", ms=3, label=name)
    for ax, what in zip(axes, ("PSNR (dB)", "SSIM"), strict=False):
        ax.set_xlabel("image of the trajectory (0 = zero-filled, N = output)")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"flat: every cascade against the reference, {acceleration:g}x {mask_pattern} (fastMRI metrics)", fontsize=9
    )
    fig.tight_layout()
    return save_figure_atomic(fig, path, OWNER)
