"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric") over the 2D
slices of a volume, offline only: computed with the ``lpips`` package when the backbone's ImageNet weights are
already in the torch hub cache, else skipped with the reason (nothing is downloaded, random weights are never used).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .inputs import as_mask, as_pair

LPIPS_BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
"""torchvision ImageNet checkpoints the ``lpips`` package loads from ``<torch hub dir>/checkpoints/``."""


def lpips_checkpoint_path(net: str = "alex") -> Path:
    """Where torchvision looks for the ImageNet backbone of LPIPS ``net``: ``torch.hub.get_dir()/checkpoints/<file>``.

    ``torch.hub.get_dir()`` follows ``$TORCH_HOME`` (``$TORCH_HOME/hub``) unless ``torch.hub.set_dir`` was called.
    """
    if net not in LPIPS_BACKBONE_FILES:
        raise InputError("lpips_net", f"is {net!r}, expected one of {sorted(LPIPS_BACKBONE_FILES)}")
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_FILES[net]


@functools.lru_cache(maxsize=4)
def _lpips_model(net: str, checkpoint: str, device: str) -> torch.nn.Module:
    """The LPIPS model; torchvision loads the backbone from ``checkpoint`` (already in the hub cache: no download)."""
    import lpips  # imported here: it pulls in torchvision models

    return lpips.LPIPS(pretrained=True, net=net, verbose=False).eval().to(device)


def lpips_distance(
    pred: Any,
    ref: Any,
    mask: Any = None,
    net: str = "alex",
    axis: int = 0,
    max_slices: int | None = None,
    batch_size: int = 16,
    device: str | None = None,
) -> tuple[float | None, str]:
    """Mean LPIPS (Zhang et al. 2018) over 2D slices ``V[i, :, :]`` along ``axis``, or None with the reason.

    Only computed when the backbone's ImageNet weights are already in the torch hub cache
    (:func:`lpips_checkpoint_path`): nothing is downloaded and random weights are never used. Slices with an empty
    reference (or, with a mask, an empty mask) are left out; with a mask both images are multiplied by it. Each
    slice is clipped to [0, 1], scaled to [-1, 1] and replicated to 3 channels. ``max_slices`` takes that many
    evenly spaced slices (AlexNet on CPU takes about 10 ms per slice pair).

    Returns:
        ``(value, "ok")`` or ``(None, "skipped: no backbone weights (<expected path>)")``.
    """
    path = lpips_checkpoint_path(net)
    if not path.is_file():
        return None, f"skipped: no backbone weights ({path})"
    p, r = as_pair(pred, ref, 3)
    m = as_mask(mask, p.shape)
    if m is not None:
        p, r = p * m, r * m
    p, r = np.moveaxis(p, axis, 0), np.moveaxis(r, axis, 0)
    keep = r.reshape(r.shape[0], -1).any(axis=1) if m is None else np.moveaxis(m, axis, 0).any(axis=(1, 2))
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return None, "skipped: no slice with signal"
    if max_slices is not None and idx.size > max_slices:
        idx = idx[np.unique(np.linspace(0, idx.size - 1, max_slices).round().astype(int))]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = _lpips_model(net, str(path), device)
    values = []
    with torch.no_grad():
        for start in range(0, idx.size, batch_size):
            sel = idx[start : start + batch_size]
            a = torch.from_numpy(np.clip(p[sel], 0, 1).astype(np.float32))[:, None].repeat(1, 3, 1, 1) * 2 - 1
            b = torch.from_numpy(np.clip(r[sel], 0, 1).astype(np.float32))[:, None].repeat(1, 3, 1, 1) * 2 - 1
            values.append(model(a.to(device), b.to(device)).flatten().cpu())
    return float(torch.cat(values).double().mean()), "ok"
