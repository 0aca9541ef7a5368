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

Each output is scored at its own borders, where its pieces meet (:meth:`DiffusionIQTInferer.piece_borders`):
``windows`` at the edges of its windows and of their sub-patches, ``whole`` at the edges of the whole volume's
sub-patches, ``plain`` at the edges of its one-sub-patch windows; and, for a common ruler, all three at ``plain``'s
borders. :func:`border_steps` gives the mean absolute difference between neighbouring voxels that straddle a border
(``border_step``, in the output's [0, 1] intensity) and the same mean over all other neighbours, inside the head mask;
their ratio is 1 where the borders are not visible, and is compared with the high field's ratio at the same borders
(anatomy that happens to cross a few border planes moves both alike). Writes ``seams.csv`` (one row per subject and
way) and ``seams.md`` (means over subjects), with seconds.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Sequence
from pathlib import Path

import fire
import numpy as np
import torch
from monai.transforms import Compose

from shared_transforms.engine import loader
from shared_transforms.io.datalist import pair_items
from shared_transforms.io.files import write_text_atomic
from shared_transforms.metrics import psnr
from shared_transforms.transforms.pipelines import pair_transforms

from .inferer import DiffusionIQTInferer
from .network import DiffusionIQTUNet

ROOT = Path(__file__).resolve().parents[1]
WAYS = ("windows", "whole", "plain")


def border_steps(volume: np.ndarray, mask: np.ndarray, borders: Sequence[Sequence[int]]) -> tuple[float, float]:
    """Mean ``|v[i] - v[i-1]|`` over the neighbour pairs that straddle a border (``i`` in ``borders[axis]``, along
    any axis), and the same mean over all other pairs; both voxels of a pair inside ``mask``.

    ``volume``, ``mask``: ``(X, Y, Z)``; ``borders``: three sequences of indices in ``1 .. size - 1``. NaN for an
    empty set of pairs.
    """
    v, m = np.asarray(volume, dtype=np.float64), np.asarray(mask, dtype=bool)
    at, off = [], []
    for axis in range(3):
        step = np.abs(np.diff(v, axis=axis))
        both = m.take(range(v.shape[axis] - 1), axis=axis) & m.take(range(1, v.shape[axis]), axis=axis)
        border = np.zeros(v.shape[axis] - 1, bool)
        border[np.asarray(borders[axis], dtype=int) - 1] = True  # pair (i - 1, i) is diff index i - 1
        shape = [1, 1, 1]
        shape[axis] = -1
        border = np.broadcast_to(border.reshape(shape), step.shape)
        at.append(step[both & border])
        off.append(step[both & ~border])
    at_all, off_all = np.concatenate(at), np.concatenate(off)
    return (
        float(at_all.mean()) if at_all.size else float("nan"),
        float(off_all.mean()) if off_all.size else float("nan"),
    )


def border_step_ratio(volume: np.ndarray, mask: np.ndarray, borders: Sequence[Sequence[int]]) -> float:
    """:func:`border_steps`' step at the borders over the step elsewhere (1: the borders are not visible)."""
    at, elsewhere = border_steps(volume, mask, borders)
    return float(at / max(elsewhere, 1e-12))


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
    parser = loader.bundle_parser(ROOT, device="cpu")
    kwargs = network_kwargs or {k: v for k, v in parser["network_def"].items() if k != "_target_"}
    factor = int(kwargs.get("cross_batch_factor", 3))
    if network_kwargs:
        parser["network_def"] = {"_target_": parser["network_def"]["_target_"], **network_kwargs}
    network = loader.build_network(parser, loader.bundle_weights(parser, ckpt_path, "--ckpt_path"), "network_def")
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
        target, m = label[0, 0].numpy(), mask[0, 0].numpy() > 0
        plain_grid = ways["plain"][1].piece_borders(target.shape)
        target_plain_grid_ratio = border_step_ratio(target, m, plain_grid)
        for way in WAYS:
            net, inferer = ways[way]
            t0 = time.perf_counter()
            pred = inferer(image, net)[0, 0].numpy()
            seconds = time.perf_counter() - t0
            own = inferer.piece_borders(pred.shape)
            at, elsewhere = border_steps(pred, m, own)
            rows.append(
                {
                    "subject": item.get("subject", ""),
                    "way": way,
                    "num_steps": num_steps,
                    "sampler": sampler,
                    "border_step": at,
                    "other_step": elsewhere,
                    "border_step_ratio": at / max(elsewhere, 1e-12),
                    # the high field at the same borders: the ratio an output without seams would have there
                    "target_ratio": border_step_ratio(target, m, own),
                    "plain_grid_ratio": border_step_ratio(pred, m, plain_grid),
                    "target_plain_grid_ratio": target_plain_grid_ratio,
                    "psnr_mask": psnr(pred, target, mask=m),
                    "seconds": seconds,
                }
            )
            print(rows[-1], flush=True)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "seams.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| way | step at its borders | step elsewhere | ratio | high field's ratio there | ratio at plain's borders "
        "| high field's ratio there | PSNR mask (dB) | s / volume |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for way in WAYS:
        mean = {
            k: np.mean([r[k] for r in rows if r["way"] == way])
            for k in rows[0]
            if k not in ("subject", "way", "sampler")
        }
        lines.append(
            f"| {way} | {mean['border_step']:.4f} | {mean['other_step']:.4f} | {mean['border_step_ratio']:.3f} | "
            f"{mean['target_ratio']:.3f} | {mean['plain_grid_ratio']:.3f} | {mean['target_plain_grid_ratio']:.3f} | "
            f"{mean['psnr_mask']:.2f} | {mean['seconds']:.0f} |"
        )
    write_text_atomic(os.path.join(out_dir, "seams.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    fire.Fire(run)
