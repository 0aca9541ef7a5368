"""This bundle's paper protocol: its numbers computed the way the paper computed them, so its table can be
compared. Called by the evaluation handler (``evaluate.json``: ``validate#metrics_saver#protocols``; see
:class:`shared_transforms.engine.evaluation.VolumeMetricsSaver`) as ``fn(pred, ref, lpips_net=...)`` with two
``(X, Y, Z)`` volumes on the [0, 1] scale; returns a flat dict of CSV-friendly values.

``cfm``: :func:`protocol_cfm`, the evaluation of Nguyen & Eldaly 2025, "Low-Field MR Image Quality Enhancement
  using a Conditional Flow Matching Model" (arXiv 2510.12408), as their public code computes it (the authors'
  ``src/utils.py``; see bundles/cfm/docs/README.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from monai.transforms.utils import get_largest_connected_component_mask
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from shared_transforms.metrics.core import PSNR_CAP_DB
from shared_transforms.metrics.inputs import as_array, as_pair
from shared_transforms.metrics.perceptual import lpips_distance

# OpenCV's cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)), written out so the CFM mask needs no OpenCV.
_CV2_ELLIPSE_5X5 = np.array(
    [[0, 0, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 1, 0, 0]], dtype=bool
)


def cfm_slice_mask(ref_slice: Any, threshold: float = 0.05) -> np.ndarray:
    """The CFM authors' brain mask of one 2D slice ``(H, W)``, for :func:`protocol_cfm` (boolean ``(H, W)``).

    Threshold 0.05 of the min-max normalised slice, morphological closing with OpenCV's 5x5 ellipse (OpenCV border
    handling: nothing is eroded from the image border), largest connected component (8-connectivity). A 3D mask for
    data without one is :func:`shared_transforms.transforms.intensity.brain_mask_from_intensity`.
    """
    g = as_array(ref_slice, "ref_slice", 2)
    lo, hi = float(g.min()), float(g.max())
    if hi <= lo:
        return np.zeros(g.shape, dtype=bool)
    b = (g - lo) / (hi - lo) > threshold
    b = ndimage.binary_dilation(b, structure=_CV2_ELLIPSE_5X5, border_value=0)
    b = ndimage.binary_erosion(b, structure=_CV2_ELLIPSE_5X5, border_value=1)
    return get_largest_connected_component_mask(b, connectivity=2)


def protocol_cfm(
    pred: Any, ref: Any, use_mask: bool = False, axis: int = 0, lpips_net: str | None = "alex"
) -> dict[str, Any]:
    """The CFM paper's evaluation (see the module docstring): per 2D slice, images on 0-255, scikit-image PSNR/SSIM.

    Both ``(X, Y, Z)`` volumes are clipped to [0, 1] and multiplied by 255; the slices ``V[i, :, :]`` along ``axis``
    are scored with ``data_range=255``. With ``use_mask`` each slice's :func:`cfm_slice_mask` (from the reference)
    multiplies both slices (the authors' ``use_mask`` flag; whether the paper's numbers used it is not stated). SSIM
    uses scikit-image's defaults (7x7 uniform window), as the authors' call does. Slices with a constant reference
    are skipped. Returns ``psnr`` (dB, capped at 100), ``ssim`` (means over the slices), ``slices_used``,
    ``slices_skipped``, and LPIPS (AlexNet) over the same slices as ``lpips``/``lpips_status`` unless ``lpips_net``
    is None.
    """
    p, r = as_pair(pred, ref, 3)
    p = np.moveaxis(np.clip(p, 0, 1) * 255.0, axis, 0)
    r = np.moveaxis(np.clip(r, 0, 1) * 255.0, axis, 0)
    masks = np.zeros(r.shape, dtype=bool)
    psnrs, ssims, used = [], [], []
    for i in range(r.shape[0]):
        g, q = r[i], p[i]
        if g.max() <= g.min():
            continue
        if use_mask:
            masks[i] = cfm_slice_mask(g)
            g, q = g * masks[i], q * masks[i]
        with np.errstate(divide="ignore"):
            psnrs.append(min(float(peak_signal_noise_ratio(g, q, data_range=255)), PSNR_CAP_DB))
        ssims.append(float(structural_similarity(g, q, data_range=255)))
        used.append(i)
    out: dict[str, Any] = {
        "psnr": float(np.mean(psnrs)) if psnrs else float("nan"),
        "ssim": float(np.mean(ssims)) if ssims else float("nan"),
        "slices_used": len(used),
        "slices_skipped": int(r.shape[0] - len(used)),
    }
    if lpips_net is not None:
        sel = np.zeros(r.shape[0], dtype=bool)
        sel[used] = True
        pm, rm = p / 255.0, r / 255.0
        if use_mask:
            pm, rm = pm * masks, rm * masks
        out["lpips"], out["lpips_status"] = lpips_distance(pm[sel], rm[sel], net=lpips_net, axis=0)
    return out
