"""Seams: the step across the borders where a volume's pieces meet, for the three ways of sampling a volume.

    cd bundles/diffusion_iqt && python -m scripts.seams --datalist ../../demo_data/datalist.json \\
        --out_dir ../../outputs/diffusion_iqt/seams --num_steps 5 --sampler ddim --max_subjects 1

Three ways, the same weights (``models/model.pt`` or ``--ckpt_path``), the same seed:

- ``windows`` (the paper): ``mode: windows``, ``window_size``³ windows with ``overlap``, each window's ``f³``
  sub-patches sampled together (cross-batch attention and padding), the windows blended by MONAI's Gaussian weights;
- ``whole`` (past the paper): ``mode: whole``, the whole volume as one cross-batch;
- ``plain`` (no mechanism): every sub-patch alone, as a network without the cross-batch mechanism sees it: the same
  weights with ``cross_batch_factor: 1`` and zero padding (``boundary: false``), windows of one sub-patch
  (``window_size / f``) without overlap.

The score of an output is :func:`border_step_ratio`: along each axis, the mean absolute difference between
neighbouring voxels that straddle a border of the sub-patch grid (every ``window_size / f`` voxels, where ``plain``
has its seams), over the same mean for all other neighbours, inside the head mask; 1 means the borders are not
visible. Writes ``seams.csv`` (one row per subject and way) and ``seams.md`` (means over subjects), with seconds.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import fire
import numpy as np
import torch
from monai.transforms import Compose

from shared_transforms.checkpoint import load_weights
from shared_transforms.datalist import pair_items
from shared_transforms.files import write_text_atomic
from shared_transforms.metrics import psnr
from shared_transforms.pipelines import pair_transforms

from .inferer import DiffusionIQTInferer
from .network import DiffusionIQTUNet

ROOT = Path(__file__).resolve().parents[1]
WAYS = ("windows", "whole", "plain")


def border_step_ratio(volume: np.ndarray, mask: np.ndarray, period: int, offset: int = 0) -> float:
    """Mean ``|v[i+1] - v[i]|`` over the neighbour pairs that straddle a border (``i + 1 - offset`` a multiple of
    ``period``, along any axis) over the same mean for all other pairs; both voxels of a pair inside ``mask``.

    ``volume``, ``mask``: ``(X, Y, Z)``. NaN when either set of pairs is empty.
    """
    v, m = np.asarray(volume, dtype=np.float64), np.asarray(mask, dtype=bool)
    at, off = [], []
    for axis in range(3):
        step = np.abs(np.diff(v, axis=axis))
        both = m.take(range(v.shape[axis] - 1), axis=axis) & m.take(range(1, v.shape[axis]), axis=axis)
        border = ((np.arange(1, v.shape[axis]) - offset) % period) == 0
        shape = [1, 1, 1]
        shape[axis] = -1
        border = np.broadcast_to(border.reshape(shape), step.shape)
        at.append(step[both & border])
        off.append(step[both & ~border])
    at_all, off_all = np.concatenate(at), np.concatenate(off)
    if at_all.size == 0 or off_all.size == 0:
        return float("nan")
    return float(at_all.mean() / max(off_all.mean(), 1e-12))


def run(
    datalist: str,
    out_dir: str = "outputs/diffusion_iqt/seams",
    ckpt_path: str | None = None,
    num_steps: int = 5,
    sampler: str = "ddim",
    window_size: int = 48,
    overlap: float = 0.25,
    max_subjects: int | None = 1,
    split: str = "testing",
    precision: str = "auto",
    network_kwargs: dict | None = None,
    seed: int = 0,
) -> list[dict]:
    """Score the three ways on the split's subjects (see the module docstring); returns the rows."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.json"))
    kwargs = network_kwargs or {k: v for k, v in parser["network_def"].items() if k != "_target_"}
    factor = int(kwargs.get("cross_batch_factor", 3))
    network = DiffusionIQTUNet(**kwargs)
    load_weights(network, ckpt_path or str(ROOT / "models" / "model.pt"))
    network.eval()
    # the mechanism has no weights of its own: the same state loads into the network without it
    plain = DiffusionIQTUNet(**{**kwargs, "cross_batch_factor": 1, "boundary": False})
    plain.load_state_dict(network.state_dict())
    plain.eval()
    sub = window_size // factor
    common = {"num_steps": num_steps, "sampler": sampler, "seed": seed, "precision": precision}
    ways = {
        "windows": (
            network,
            DiffusionIQTInferer(mode="windows", window_size=window_size, overlap=overlap, factor=factor, **common),
        ),
        "whole": (network, DiffusionIQTInferer(mode="whole", factor=factor, **common)),
        "plain": (plain, DiffusionIQTInferer(mode="windows", window_size=sub, overlap=0.0, factor=1, **common)),
    }
    items = pair_items(datalist, split, "lowfield_nifti")[: max_subjects or None]
    align = Compose(pair_transforms((1.0, 1.0, 1.0)))
    rows = []
    for item in items:
        d = align(dict(item))
        image, label, mask = (torch.as_tensor(np.asarray(d[k]))[None].float() for k in ("image", "label", "mask"))
        for way in WAYS:
            net, inferer = ways[way]
            t0 = time.perf_counter()
            pred = inferer(image, net)[0, 0].numpy()
            seconds = time.perf_counter() - t0
            m = mask[0, 0].numpy() > 0
            rows.append(
                {
                    "subject": item.get("subject", ""),
                    "way": way,
                    "num_steps": num_steps,
                    "sampler": sampler,
                    "border_step_ratio": border_step_ratio(pred, m, sub),
                    "psnr_mask": psnr(pred, label[0, 0].numpy(), mask=m),
                    "seconds": seconds,
                }
            )
            print(rows[-1], flush=True)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "seams.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| way | border step ratio | PSNR mask (dB) | s / volume |", "|---|---|---|---|"]
    for way in WAYS:
        mine = [r for r in rows if r["way"] == way]
        lines.append(
            f"| {way} | {np.mean([r['border_step_ratio'] for r in mine]):.3f} | "
            f"{np.mean([r['psnr_mask'] for r in mine]):.2f} | {np.mean([r['seconds'] for r in mine]):.0f} |"
        )
    write_text_atomic(os.path.join(out_dir, "seams.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    fire.Fire(run)
