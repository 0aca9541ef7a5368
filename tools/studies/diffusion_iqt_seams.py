"""Seams: the step across the borders where a volume's pieces meet, for the three ways diffusion_iqt samples a volume.

    python tools/study.py diffusion_iqt_seams --datalist demo_data/datalist.json --out_dir bench/seams \\
        --num_steps 5 --sampler ddim --max_subjects 1

A grid of three settings of the bundle's ``inference.json``, each run through the benchmark's runner
(:mod:`benchmarking.runner`: the engine's loader, the bundle's own inferer on the aligned test pairs, timed), the
same weights (``models/model.pt`` or ``--ckpt_path``) and the same seed:

- ``windows`` (the paper): ``mode: windows``, ``window_size``³ windows with ``overlap``, each window's ``f³``
  sub-patches sampled together (cross-batch attention and padding), the windows blended by MONAI's Gaussian weights;
- ``whole`` (past the paper): ``mode: whole``, the whole volume as one cross-batch;
- ``plain`` (no mechanism): every sub-patch alone, as a network without the cross-batch mechanism sees it: the same
  weights with ``network_def#cross_batch_factor: 1`` and zero padding (``network_def#boundary: false``; the
  mechanism has no weights of its own), windows of one sub-patch (``window_size / f``) without overlap.

Each output is scored at its own borders, where its pieces meet (``DiffusionIQTInferer.piece_borders``):
``windows`` at the edges of its windows and of their sub-patches, ``whole`` at the edges of the whole volume's
sub-patches, ``plain`` at the edges of its one-sub-patch windows; and, for a common ruler, all three at ``plain``'s
borders. :func:`border_steps` gives the mean absolute difference between neighbouring voxels that straddle a border
(``border_step``, in the output's [0, 1] intensity) and the same mean over all other neighbours, inside the head mask;
their ratio is 1 where the borders are not visible, and is compared with the high field's ratio at the same borders
(anatomy that happens to cross a few border planes moves both alike). Writes ``seams.csv`` (one row per subject and
way) and ``seams.md`` (means over subjects), with seconds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from shared_transforms.io.datalist import pair_items
from shared_transforms.io.files import write_text_atomic
from shared_transforms.metrics import psnr

from benchmarking.report import write_csv
from benchmarking.runner import align_pairs, available_bundles, common_spacing, configure_bundle, load_bundle, predict

BUNDLE = "diffusion_iqt"
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


def way_settings(factor: int, window_size: int, overlap: float, common: dict) -> dict[str, dict]:
    """The three ways as overrides of the bundle's ``inference.json`` (config id -> value)."""
    return {
        "windows": {**common, "mode": "windows", "window_size": window_size, "overlap": overlap},
        "whole": {**common, "mode": "whole"},
        "plain": {**common, "mode": "windows", "window_size": window_size // factor, "overlap": 0.0,
                  "network_def#cross_batch_factor": 1, "network_def#boundary": False},
    }


def main(
    datalist: str,
    out_dir: str = "bench/seams",
    ckpt_path: str | None = None,
    num_steps: int = 5,
    sampler: str = "ddim",
    window_size: int = 48,
    overlap: float = 0.25,
    max_subjects: int | None = 1,
    split: str = "testing",
    precision: str = "auto",
    device: str = "cpu",
    overrides: dict | None = None,
    seed: int = 0,
) -> list[dict]:
    """Score the three ways on the split's subjects (module docstring); returns the rows. ``overrides``: more config
    ids for all three ways (e.g. a smaller ``network_def`` for a test)."""
    dev = torch.device(device)
    root = available_bundles()[BUNDLE]
    common = {"num_steps": int(num_steps), "sampler": sampler, "seed": int(seed), "precision": precision,
              "num_samples": 1, **(overrides or {})}
    probe = configure_bundle(BUNDLE, root, common, ckpt_path, dev)
    factor = int(probe.parser.get_parsed_content("network_def#cross_batch_factor"))
    bundles = {way: configure_bundle(BUNDLE, root, settings, ckpt_path, dev)
               for way, settings in way_settings(factor, int(window_size), float(overlap), common).items()}
    items = pair_items(datalist, split, "lowfield_nifti")[: max_subjects or None]
    subjects = align_pairs(items, common_spacing(list(bundles.values())))
    preds: dict[str, list] = {}
    borders = {}
    for way in WAYS:  # one network in memory at a time
        bundle = bundles[way]
        load_bundle(bundle, dev)
        borders[way] = bundle.inferer.piece_borders
        preds[way] = [predict(bundle, s["image"], dev)[:2] for s in subjects]
        bundle.network = bundle.inferer = bundle.parser = None
    rows = []
    for i, s in enumerate(subjects):
        target, m = s["label"], s["mask"]
        plain_grid = borders["plain"](target.shape)
        target_plain_grid_ratio = border_step_ratio(target, m, plain_grid)
        for way in WAYS:
            pred, seconds = preds[way][i]
            own = borders[way](pred.shape)
            at, elsewhere = border_steps(pred, m, own)
            rows.append({
                "subject": s["subject"],
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
            })
            print(rows[-1], flush=True)
    os.makedirs(out_dir, exist_ok=True)
    write_csv(rows, os.path.join(out_dir, "seams.csv"))
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
