"""The machinery the low-field simulators share (:mod:`.lowfield`'s two, :mod:`.degradation`'s randomised one).

MetaTensor handling (a plain array is taken as 1 mm isotropic with an identity affine), resampling onto a grid
(MONAI ``SpatialResample``: spline order 3 for images, nearest neighbour for masks), the float32 output that keeps
the input's meta plus the drawn parameters, FWHM/sigma conversion, (min, max) parameter ranges, range and tissue-mean
checks, and the fallback GM/WM/CSF maps from intensities (:func:`tissue_maps_from_intensity`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialResample
from scipy import ndimage

from ..errors import InputError, source_name
from ..metrics.tissue import tissue_segmentation
from ..transforms.intensity import brain_mask_from_intensity

__all__ = ["FWHM_TO_SIGMA", "fwhm_mm_to_sigma_vox", "resample_to_grid", "tissue_maps_from_intensity"]

#: sigma = FWHM / (2 sqrt(2 ln 2)) for a Gaussian.
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def as_volume(img: np.ndarray | torch.Tensor, name: str = "image") -> MetaTensor:
    """A channel-first ``(C, X, Y, Z)`` float32 MetaTensor; plain arrays get a 1 mm identity affine."""
    if isinstance(img, MetaTensor):
        out = img
    else:
        data = img.detach().cpu() if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img))
        out = MetaTensor(data, affine=torch.eye(4, dtype=torch.float64))
    if out.ndim != 4:
        raise InputError(
            source_name(img, name), f"expected a channel-first 3D volume (C, X, Y, Z), got shape {tuple(out.shape)}"
        )
    if not torch.is_floating_point(out):
        out = out.float()
    return out


def affine_of(img: MetaTensor) -> np.ndarray:
    return np.asarray(img.affine.detach().cpu().numpy() if isinstance(img.affine, torch.Tensor) else img.affine, float)


def resample_to_grid(
    img: MetaTensor, dst_affine: np.ndarray, spatial_shape: Sequence[int], mode: int = 3, padding_mode: str = "nearest"
) -> torch.Tensor:
    """MONAI ``SpatialResample`` onto ``(dst_affine, spatial_shape)``; returns a plain tensor ``(C, *spatial_shape)``.

    Args:
        mode: spline order (3 cubic for images, 0 nearest for masks), scipy ``map_coordinates`` backend.
        padding_mode: scipy mode for points outside the input ("nearest" repeats the edge, "constant" gives 0).
    """
    resampler = SpatialResample(mode=mode, padding_mode=padding_mode, dtype=torch.float32)
    src = MetaTensor(img.as_tensor().float(), affine=img.affine)
    out = resampler(src, dst_affine=torch.as_tensor(dst_affine, dtype=torch.float64), spatial_size=list(spatial_shape))
    return out.as_tensor() if isinstance(out, MetaTensor) else torch.as_tensor(out)


def simulated_output(
    data: np.ndarray | torch.Tensor, like: MetaTensor, affine: np.ndarray, extra: Mapping
) -> MetaTensor:
    """A float32 MetaTensor on ``affine`` keeping ``like``'s meta (file name, original affine/shape) plus ``extra``."""
    meta = {k: v for k, v in like.meta.items() if k != "affine"}
    meta.update(extra)
    out = MetaTensor(torch.as_tensor(data, dtype=torch.float32), affine=torch.as_tensor(affine, dtype=torch.float64))
    out.meta.update(meta)
    return out


def fwhm_mm_to_sigma_vox(fwhm_mm: Sequence[float] | np.ndarray, spacing_mm: Sequence[float] | np.ndarray) -> np.ndarray:
    """Gaussian sigma in voxels from a FWHM in mm: ``sigma = fwhm / (2 sqrt(2 ln 2)) / spacing``."""
    return np.asarray(fwhm_mm, float) * FWHM_TO_SIGMA / np.asarray(spacing_mm, float)


def check_range(value: float | Sequence[float], name: str, low: float = 0.0) -> tuple[float, float]:
    """A (min, max) range from a number or a pair; checks ``low <= min <= max``."""
    lo, hi = (float(value), float(value)) if np.isscalar(value) else (float(value[0]), float(value[1]))
    if not (low <= lo <= hi):
        raise ValueError(f"{name} must be a number or a (min, max) pair with {low} <= min <= max, got {value}")
    return lo, hi


def check_unit_range(arr: np.ndarray | torch.Tensor, source: str, what: str, tol: float = 0.05) -> None:
    """InputError unless ``arr`` is finite and within [-tol, 1 + tol]."""
    t = torch.as_tensor(arr)
    if not bool(torch.isfinite(t).all()):
        raise InputError(source, f"{what} contains NaN or infinite values")
    lo, hi = float(t.min()), float(t.max())
    if lo < -tol or hi > 1 + tol:
        raise InputError(
            source, f"{what} must lie in [0, 1], got range [{lo:.3g}, {hi:.3g}]; normalise it first (percentiles)"
        )


def tissue_mean(img: np.ndarray, prob: np.ndarray, threshold: float, source: str, name: str) -> float:
    """Mean of ``img`` where ``prob > threshold`` (pure tissue), else the probability-weighted mean."""
    inside = prob > threshold
    if inside.any():
        return float(img[inside].mean())
    weight = np.clip(prob, 0.0, None)
    if not weight.sum() > 0:
        raise InputError(source, f"the {name} map is empty: no {name} voxel to measure the {name} intensity in")
    return float((weight * img).sum() / weight.sum())


def resample_mask(mask: object, name: str, dst_affine: np.ndarray, shape: Sequence[int]) -> MetaTensor:
    """Nearest-neighbour resampling of a mask/label onto ``(dst_affine, shape)`` (0 outside its field of view)."""
    m = as_volume(mask, name)
    out = resample_to_grid(m, dst_affine, shape, mode=0, padding_mode="constant")
    return simulated_output(out, m, dst_affine, {})


def tissue_maps_from_intensity(
    image: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor | None = None,
    threshold: float = 0.05,
    pv_sigma_vox: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fallback GM, WM, CSF probability maps from a T1w image when no SPM/FAST/SynthSeg maps exist.

    The project's 3-class multi-Otsu segmentation (:func:`shared_transforms.metrics.tissue.tissue_segmentation`,
    scikit-image ``threshold_multiotsu``) of the voxels inside ``mask``, the classes named by T1w intensity order CSF <
    GM < WM. The hard labels (with background as a 4th class) are smoothed by a Gaussian of ``pv_sigma_vox`` voxels to
    mimic partial volume: the three maps then lie in [0, 1] and sum to at most 1. Meant for skull-stripped T1w images
    (scalp and skull would be mixed into the classes: pass a brain mask otherwise). Otsu is deterministic, so there
    is no seed.

    Args:
        image: ``(X, Y, Z)`` or ``(1, X, Y, Z)``.
        mask: brain mask of the same spatial shape; default
        :func:`shared_transforms.transforms.intensity.brain_mask_from_intensity`
            (above ``threshold`` of the min-max range, largest 6-connected component, holes filled; no closing).
        threshold: relative intensity threshold of the default mask.
        pv_sigma_vox: smoothing of the hard labels in voxels (0: hard 0/1 maps).
    Returns:
        (gm, wm, csf), each float32 with the image's spatial shape ``(X, Y, Z)``.
    """
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    arr = np.asarray(arr, np.float32)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise InputError(
            source_name(image, "image"), f"expected a 3D volume (X, Y, Z) or (1, X, Y, Z), got shape {arr.shape}"
        )
    if mask is None:
        inside = brain_mask_from_intensity(arr, threshold=threshold, closing_radius_vox=0)
    else:
        m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        inside = np.asarray(m).reshape(m.shape[-3:]) > 0.5
        if inside.shape != arr.shape:
            raise InputError(
                source_name(mask, "mask"), f"mask shape {inside.shape} differs from the image's {arr.shape}"
            )
    if not inside.any():
        raise InputError(source_name(image, "image"), "the brain mask for the intensity-based tissue split is empty")
    try:
        labels = tissue_segmentation(arr, inside)  # 0 background, 1 CSF, 2 GM, 3 WM
    except InputError as err:
        raise InputError(source_name(image, "image"), err.problem) from None
    maps = []
    for label in (2, 3, 1):  # gm, wm, csf
        hard = (labels == label).astype(np.float32)
        maps.append(ndimage.gaussian_filter(hard, pv_sigma_vox, mode="nearest") if pv_sigma_vox > 0 else hard)
    gm, wm, csf = (np.clip(m, 0.0, 1.0) for m in maps)
    return gm, wm, csf
