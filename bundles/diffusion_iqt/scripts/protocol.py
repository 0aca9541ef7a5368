"""This bundle's paper protocol: its numbers computed the way the paper computed them, so its table can be
compared. Called by the evaluation handler (``evaluate.json``: ``validate#metrics_saver#protocols``; see
:class:`shared_transforms.engine.evaluation.VolumeMetricsSaver`) as ``fn(pred, ref, lpips_net=...)`` with two
``(X, Y, Z)`` volumes on the [0, 1] scale; returns a flat dict of CSV-friendly values.

``diffusion_iqt``: :func:`protocol_diffusion_iqt`, the evaluation of Kim et al., "A 3D Conditional Diffusion
  Model for Image Quality Transfer" (arXiv 2311.06631; ``test.py`` of https://github.com/edshkim98/DiffusionIQT):
  each volume min-max normalised, a central crop, PSNR (data range 1) and 3D multi-scale SSIM.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shared_transforms.metrics.core import psnr_from_mse
from shared_transforms.metrics.inputs import as_pair
from shared_transforms.metrics.structural import ms_ssim, ms_ssim_setup


def protocol_diffusion_iqt(
    pred: Any, ref: Any, crop_fraction: float = 0.75, lpips_net: str | None = None
) -> dict[str, Any]:
    """The DiffusionIQT paper's evaluation (see the module docstring) of two ``(X, Y, Z)`` volumes.

    Each volume is min-max normalised to [0, 1] on its own; both are cropped to the central ``crop_fraction`` of
    each axis (the authors: ``[32:-32]`` of 256³, 0.75); PSNR with data range 1 and 3D multi-scale SSIM
    (:func:`shared_transforms.metrics.structural.ms_ssim`: the 11-voxel Gaussian window of torchmetrics'
    ``MultiScaleStructuralSimilarityIndexMeasure``, which the authors call, and as many of its five scales as the
    crop holds; the authors' 192³ crop holds all five, a smaller one fewer: ``ms_ssim_scales`` says how many).
    Returns ``psnr`` (dB, capped), ``ms_ssim``, ``ms_ssim_scales``, ``crop`` (the crop's shape as ``XxYxZ``).
    ``lpips_net`` is accepted for the common calling convention; the authors' LPIPS (VGG, coronal slices) is not
    part of this protocol here.
    """
    p, r = as_pair(pred, ref, 3)

    def minmax(v: np.ndarray) -> np.ndarray:
        lo, hi = float(v.min()), float(v.max())
        return np.zeros(v.shape) if hi <= lo else (v.astype(np.float64) - lo) / (hi - lo)

    margin = [int(round(s * (1.0 - crop_fraction) / 2.0)) for s in r.shape]
    crop = tuple(slice(m, s - m) for m, s in zip(margin, r.shape, strict=True))
    p, r = minmax(p)[crop], minmax(r)[crop]
    kernel, weights = ms_ssim_setup(r.shape)
    return {
        "psnr": psnr_from_mse(float(np.mean((p - r) ** 2)), 1.0),
        "ms_ssim": ms_ssim(p, r, data_range=1.0, kernel_size=kernel, weights=weights),
        "ms_ssim_scales": len(weights),
        "crop": "x".join(str(s) for s in r.shape),
    }
