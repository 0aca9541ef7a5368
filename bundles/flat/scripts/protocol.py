"""This bundle's paper protocol: its numbers computed the way the paper computed them, so its table can be
compared. Called by the evaluation handler (``evaluate.json``: ``validate#metrics_saver#protocols``; see
:class:`shared_transforms.engine.evaluation.VolumeMetricsSaver`) as ``fn(pred, ref, lpips_net=...)`` with two
``(X, Y, Z)`` volumes on the [0, 1] scale; returns a flat dict of CSV-friendly values.

``fastmri``: :func:`protocol_fastmri`, fastMRI's reconstruction metrics (Zbontar et al., arXiv 1811.08839;
  ``fastmri/evaluate.py`` of https://github.com/facebookresearch/fastMRI) per volume: PSNR and SSIM with the data
  range the reference volume's maximum, NMSE; for the reconstruction bundle ``flat`` (FLAT, arXiv 2512.03020,
  reports these).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from shared_transforms.metrics.core import nmse
from shared_transforms.metrics.inputs import as_pair


def protocol_fastmri(pred: Any, ref: Any, axis: int = 2, lpips_net: str | None = None) -> dict[str, Any]:
    """fastMRI's metrics of one volume, as ``fastmri/evaluate.py`` computes them (see the module docstring).

    The volume is a stack of 2D slices ``V[..., i]`` along ``axis`` (2: the slices ``flat`` reconstructs). With
    ``maxval = ref.max()`` over the whole volume: ``psnr`` = skimage's ``peak_signal_noise_ratio(ref, pred,
    data_range=maxval)`` on the volume; ``ssim`` = the mean over slices of skimage's ``structural_similarity(ref_i,
    pred_i, data_range=maxval)`` (its default 7 x 7 uniform window, as fastMRI); ``nmse`` = ``||ref - pred||^2 /
    ||ref||^2``. No mask and no clipping (fastMRI scores the whole reconstruction on its own scale); a volume whose
    reference is all zero gives NaN. ``lpips_net`` is accepted for the common calling convention and not used.

    Returns ``psnr``, ``ssim``, ``nmse`` (floats).
    """
    p, r = as_pair(pred, ref, 3)
    p = np.moveaxis(p, axis, 0).astype(np.float64)
    r = np.moveaxis(r, axis, 0).astype(np.float64)
    maxval = float(r.max())
    if maxval <= 0:
        return {"psnr": float("nan"), "ssim": float("nan"), "nmse": float("nan")}
    ssims = [structural_similarity(ri, pi, data_range=maxval) for ri, pi in zip(r, p, strict=True)]
    return {
        "psnr": float(peak_signal_noise_ratio(r, p, data_range=maxval)),
        "ssim": float(np.mean(ssims)),
        "nmse": nmse(p, r, None),
    }
