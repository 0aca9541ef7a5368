"""The default evaluation mask and the downstream tissue check: 3-class multi-Otsu segmentations compared by IoU/Dice.

The mask used when none is given is :func:`shared_transforms.transforms.intensity.brain_mask_from_intensity` of the
reference (closing radius 2 voxels, 26-connected largest component). :func:`tissue_segmentation` is the project's one
intensity-based tissue split: the tissue check here and the low-field simulator's fallback tissue maps
(:func:`shared_transforms.simulation.common.tissue_maps_from_intensity`) both use it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from skimage.filters import threshold_multiotsu

from ..errors import InputError
from ..transforms.intensity import brain_mask_from_intensity
from .inputs import as_array, as_mask, as_pair

TISSUE_CLASSES = ("csf", "gm", "wm")

_OTSU_BINS = 256  # threshold_multiotsu's default histogram size


def _default_mask(r: np.ndarray) -> np.ndarray:
    """The mask of a reference volume that comes without one (see the module docstring)."""
    m = brain_mask_from_intensity(r, threshold=0.05, closing_radius_vox=2, connectivity=3)
    if not m.any():
        raise InputError("ref", "is constant, so no foreground mask can be derived from it")
    return m


def tissue_segmentation(image: Any, mask: Any) -> np.ndarray:
    """3-class tissue labels by multi-Otsu thresholds on the mask voxels (``skimage.filters.threshold_multiotsu``).

    Each threshold is moved from the centre of the histogram bin scikit-image returns (the last bin of the lower
    class) to that bin's upper edge, so discrete intensities sitting in the bin stay in the lower class (matters
    for piecewise-constant phantoms only). The image keeps its float type (float32 stays float32: the histogram,
    hence the thresholds, depend on it).

    Args:
        image: ``(X, Y, Z)``. mask: ``(X, Y, Z)``, not empty.
    Returns:
        int8 labels ``(X, Y, Z)``: 0 outside the mask, 1/2/3 for the dark/middle/bright class, i.e. CSF/GM/WM on a
        T1w image (on T2w the order is reversed: the names then read WM/GM/CSF).
    Raises:
        InputError: fewer than 3 distinct intensities inside the mask.
    """
    x = as_array(image, "image", 3, dtype=None)
    m = as_mask(mask, x.shape)
    values = x[m]
    try:
        thresholds = threshold_multiotsu(values, classes=3, nbins=_OTSU_BINS)
    except ValueError:
        raise InputError(
            "image", "has too few distinct intensities inside the mask for a 3-class (CSF/GM/WM) tissue split"
        ) from None
    half_bin = 0.5 * (float(values.max()) - float(values.min())) / _OTSU_BINS
    labels = np.zeros(x.shape, dtype=np.int8)
    labels[m] = 1 + np.digitize(values, thresholds + half_bin).astype(np.int8)
    return labels


def tissue_overlap(pred: Any, ref: Any, mask: Any = None) -> dict[str, float]:
    """Downstream check: IoU and Dice of the :func:`tissue_segmentation` of prediction and reference.

    Thresholds are computed on each image separately, inside the mask (default: see the module docstring).
    Returns ``tissue_miou``, ``tissue_mdice`` (means over the 3 classes) and ``tissue_iou_<c>``, ``tissue_dice_<c>``
    for c in csf, gm, wm. A class empty in both images gives NaN for that class (left out of the means). When an
    image has fewer than 3 distinct values inside the mask, every value is NaN.
    """
    p, r = as_pair(pred, ref, 3)
    return _tissue_overlap(p, r, _default_mask(r) if mask is None else as_mask(mask, p.shape))


def _tissue_overlap(p: np.ndarray, r: np.ndarray, m: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        lp, lr = tissue_segmentation(p, m), tissue_segmentation(r, m)
    except InputError:  # fewer than 3 distinct values
        lp = lr = None
    ious, dices = [], []
    for c, name in enumerate(TISSUE_CLASSES, start=1):
        if lp is None:
            iou = dice = float("nan")
        else:
            a, b = lp == c, lr == c
            inter, union, total = np.sum(a & b), np.sum(a | b), np.sum(a) + np.sum(b)
            iou = float(inter / union) if union else float("nan")
            dice = float(2 * inter / total) if total else float("nan")
        out[f"tissue_iou_{name}"], out[f"tissue_dice_{name}"] = iou, dice
        ious.append(iou)
        dices.append(dice)
    all_nan = all(math.isnan(v) for v in ious)
    out["tissue_miou"] = float("nan") if all_nan else float(np.nanmean(ious))
    out["tissue_mdice"] = float("nan") if all_nan else float(np.nanmean(dices))
    return out
