"""Intensity normalisation to the project's common [0, 1] scale, and head and brain masks from intensities.

Seed 002 normalises every volume by its own 1st-99th percentiles, clipped to [0, 1]; every bundle's input and
output lives on that scale. Over the whole field of view, those percentiles move with the amount of background the
scan holds (a wide field of view puts the 1st, even the 30th, percentile in the air). The project therefore takes
them inside a head mask (:func:`head_mask_from_intensity`, ``head_mask=True``), which makes the scale a property of
the head, not of the field of view. Without a mask this is MONAI's ``ScaleIntensityRangePercentiles``; with a mask
the percentiles are taken over the mask's voxels (MONAI's transform has no mask argument) and MONAI's
``ScaleIntensityRange`` does the scaling.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, ScaleIntensityRange, ScaleIntensityRangePercentiles, Transform
from monai.transforms.utils import get_largest_connected_component_mask
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import ball

from ..errors import InputError, source_name
from .geometry import voxel_spacing_mm


def head_mask_from_intensity(
    volume, spacing_mm=(1.0, 1.0, 1.0), smoothing_fwhm_mm: float = 5.0, closing_radius_mm: float = 3.0
) -> np.ndarray:
    """The head (everything that is not air) of a possibly very noisy MR volume, for intensity normalisation.

    Written here, as no MONAI or scikit-image function makes a head mask from a noisy magnitude image:

    1. Gaussian smoothing with a FWHM of ``smoothing_fwhm_mm`` (per axis in voxels from ``spacing_mm``). Air in a
       magnitude image is Rayleigh noise of mean 1.25 sigma and standard deviation 0.66 sigma; averaging over a
       5 mm FWHM ball (about 70 voxels at 1 mm) shrinks that spread about eightfold, so air and tissue separate even
       at a white-matter SNR of 4 (tested there).
    2. Otsu's threshold (``skimage.filters.threshold_otsu``) of the smoothed volume: the head/air split of a
       bimodal histogram.
    3. Closing with a ball of ``closing_radius_mm`` (on a zero-padded copy), the largest 26-connected component
       (MONAI ``get_largest_connected_component_mask``), holes filled (``scipy.ndimage.binary_fill_holes``): dark
       ventricles and CSF inside the head belong to it.

    Unlike :func:`brain_mask_from_intensity` (a threshold at a fraction of the min-max range, which noise maxima
    and outliers move), nothing here depends on the extreme voxels.

    Args:
        volume: ``(X, Y, Z)`` or ``(1, X, Y, Z)`` magnitude image, any intensity scale.
        spacing_mm: voxel size in mm along the three axes.
        smoothing_fwhm_mm, closing_radius_mm: sizes in mm (0 switches the step off).
    Returns:
        boolean mask of the spatial shape ``(X, Y, Z)``; all False for a constant volume.
    """
    arr = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    arr = np.asarray(arr[0] if arr.ndim == 4 else arr, dtype=np.float32)
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,))
    if smoothing_fwhm_mm > 0:
        sigma_vox = smoothing_fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / spacing
        arr = ndimage.gaussian_filter(arr, sigma_vox, mode="nearest")
    if not float(arr.max()) > float(arr.min()):
        return np.zeros(arr.shape, bool)
    mask = arr > threshold_otsu(arr.ravel())  # raveled: skimage takes an (H, W, 3|4) slab for an RGB image
    r_vox = np.maximum(np.round(closing_radius_mm / spacing).astype(int), 0)
    if r_vox.max() > 0:
        structure = ball(int(r_vox.max()))
        # an ellipsoid of closing_radius_mm in every direction: crop the ball's axes to each axis' radius in voxels
        c = int(r_vox.max())
        structure = structure[
            c - r_vox[0] : c + r_vox[0] + 1, c - r_vox[1] : c + r_vox[1] + 1, c - r_vox[2] : c + r_vox[2] + 1
        ]
        pad = [(int(v), int(v)) for v in r_vox]
        closed = ndimage.binary_closing(np.pad(mask, pad), structure=structure)
        mask = closed[tuple(slice(p, p + n) for (p, _), n in zip(pad, mask.shape, strict=False))]
    mask = get_largest_connected_component_mask(mask, connectivity=3)
    return ndimage.binary_fill_holes(mask)


def head_interior(head: np.ndarray, spacing_mm=(1.0, 1.0, 1.0), scalp_mm: float = 12.0) -> np.ndarray:
    """The voxels of ``head`` deeper than ``scalp_mm`` below its surface: the brain without the rim of scalp fat,
    skull and muscle, as far as intensities alone can tell (the same definition as the real-data evaluation's brain
    mask, ``tools/realdata_eval.py``). Depth is scipy's exact Euclidean distance transform in mm (``sampling``);
    the faces of the field of view count as head, so a thin slab or a scan cut at the neck is eroded from the air
    only, not from its cut faces.

    Args:
        head: boolean ``(X, Y, Z)`` head mask (:func:`head_mask_from_intensity`).
        spacing_mm: voxel size in mm.
        scalp_mm: depth in mm.
    Returns:
        boolean mask of the same shape (empty when the head is nowhere thicker than ``2 scalp_mm``).
    """
    padded = np.pad(np.asarray(head, bool), 1, constant_values=True)
    depth = ndimage.distance_transform_edt(padded, sampling=np.broadcast_to(np.asarray(spacing_mm, float), (3,)))
    return depth[1:-1, 1:-1, 1:-1] > scalp_mm


#: the least share of the head's voxels the interior must hold to set the scale (else the whole head does)
MIN_INTERIOR_SHARE = 0.05


class PercentileNormalize(Transform):
    """Map the ``lower``-th..``upper``-th intensity percentiles of a volume to [0, 1] (clipped by default).

    Args:
        lower, upper: percentiles in [0, 100] (seed 002: 1 and 99).
        clip: clip the result to [0, 1].
        head_mask: without a given mask, take the ``upper`` percentile (white: the bright end of the tissue) inside
            :func:`head_mask_from_intensity` of the image itself (voxel size from a MetaTensor's affine) and the
            ``lower`` one (black: the air's level; every head scan holds far more than 1 % air) over the whole field
            of view. The bright end over the whole volume falls as the air grows (a 30-voxel margin of air moves it
            by 2-8 % on the demo volumes); inside the head it moves by < 0.2 % (tests/test_geometry_intensity.py).
            Inside the head, the 1st percentile would be dark CSF, not black, and a clean image's scale would no
            longer be the seed's. False: both over the whole volume.
        scalp_mm: with ``head_mask``, take the ``upper`` percentile only over the head's interior
            (:func:`head_interior`, deeper than ``scalp_mm``): the brain's bright end, not the scalp's. In real
            T1-weighted scans fat under the skin is the brightest tissue and sets the head's 99th percentile, so the
            brain lands lower on the scale than in a template whose brain is its brightest part (on the 0.055 T
            scans of the README's real-data table the interior's 99th percentile is 0.67-0.95 of the head's for
            T1w; on the demo volumes 1.00-1.01). Falls back to the whole head when the interior holds less than
            :data:`MIN_INTERIOR_SHARE` of it (a small or thin head). 0: the whole head.
    Call:
        ``img`` of shape ``(C, X, Y, Z)`` (numpy, tensor or MetaTensor), optional ``mask`` of the same spatial shape:
        percentiles inside the mask (non-zero voxels) when given.
    """

    def __init__(
        self, lower: float = 1.0, upper: float = 99.0, clip: bool = True, head_mask: bool = False, scalp_mm: float = 0.0
    ):
        if not 0 <= lower < upper <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}")
        if not float(scalp_mm) >= 0:
            raise ValueError(f"scalp_mm must be >= 0, got {scalp_mm}")
        self.lower, self.upper, self.clip, self.head_mask = lower, upper, clip, head_mask
        self.scalp_mm = float(scalp_mm)
        self.scaler = ScaleIntensityRangePercentiles(lower, upper, 0.0, 1.0, clip=clip, relative=False)

    def __call__(self, img, mask=None):
        if mask is None and self.head_mask:
            affine = getattr(img, "affine", None)  # a plain array: 1 mm
            spacing = (1.0, 1.0, 1.0) if affine is None else voxel_spacing_mm(torch.as_tensor(affine).cpu())
            head = head_mask_from_intensity(img, spacing)
            if head.any() and self.scalp_mm > 0:
                interior = head_interior(head, spacing, self.scalp_mm)
                head = interior if interior.sum() >= MIN_INTERIOR_SHARE * head.sum() else head
            if head.any():
                lo, hi = self.percentiles(img)[0], self.percentiles(img, head)[1]
                if hi <= lo:
                    raise InputError(
                        source_name(img),
                        f"the head's {self.upper}th percentile is not above the volume's "
                        f"{self.lower}th ({hi:g} <= {lo:g})",
                    )
                return ScaleIntensityRange(lo, hi, 0.0, 1.0, clip=self.clip)(img)
        if mask is None:
            lo, hi = self.percentiles(img)
            if hi <= lo:
                raise InputError(
                    source_name(img), f"the {self.lower}th and {self.upper}th percentiles are equal ({lo:g})"
                )
            return self.scaler(img)
        lo, hi = self.percentiles(img, mask)
        if hi <= lo:
            raise InputError(source_name(img), f"intensities inside the mask are constant ({lo:g})")
        return ScaleIntensityRange(lo, hi, 0.0, 1.0, clip=self.clip)(img)

    def percentiles(self, img, mask=None) -> tuple[float, float]:
        """The two percentile values (over the mask's voxels when a mask is given)."""
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        if mask is not None:
            m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
            m = np.broadcast_to(m > 0, arr.shape)
            if not m.any():
                raise InputError(source_name(img), "the mask is empty, cannot normalise inside it")
            arr = arr[m]
        lo, hi = np.percentile(arr, [self.lower, self.upper])
        return float(lo), float(hi)


class PercentileNormalized(MapTransform):
    """Dictionary version of :class:`PercentileNormalize`; ``mask_key`` (optional) restricts the percentiles, else
    ``head_mask`` takes them inside each image's own head mask (its interior with ``scalp_mm``)."""

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = 1.0,
        upper: float = 99.0,
        clip: bool = True,
        mask_key: str | None = None,
        head_mask: bool = False,
        scalp_mm: float = 0.0,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.normalize = PercentileNormalize(lower, upper, clip, head_mask, scalp_mm)
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        mask = d.get(self.mask_key) if self.mask_key else None
        for key in self.key_iterator(d):
            d[key] = self.normalize(d[key], mask)
        return d


def brain_mask_from_intensity(
    volume, threshold: float = 0.05, closing_radius_vox: int = 2, connectivity: int = 1
) -> np.ndarray:
    """A foreground (head/brain) mask from intensities alone, for data that comes without one.

    The brain mask of the CFM authors' evaluation code (Nguyen & Eldaly 2025, "Low-Field MR Image Quality
    Enhancement using a Conditional Flow Matching Model", arXiv 2510.12408; see bundles/cfm/docs/README.md), here in
    3D: threshold at ``threshold`` of the min-max range, morphological closing with a ball of ``closing_radius_vox``
    voxels (on a zero-padded copy, so nothing is eroded at the volume border; 0: no closing), largest connected
    component (MONAI ``get_largest_connected_component_mask``), holes filled. This is the project's one such mask:
    the metrics' default mask, :class:`BrainMaskd` and the low-field simulator's tissue fallback all use it.

    Args:
        volume: ``(X, Y, Z)`` or ``(1, X, Y, Z)``.
        threshold: relative intensity threshold in [0, 1] of the range ``max - min``.
        closing_radius_vox: radius of the closing ball in voxels.
        connectivity: neighbourhood of the connected components in scikit-image's convention: 1 = faces
            (6-connected), 3 = faces, edges and corners (26-connected, the 3D analogue of the authors' 8-connected
            2D mask; the metrics use it).
    Returns:
        boolean mask of the spatial shape ``(X, Y, Z)``; all False for a constant volume.
    """
    arr = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    arr = arr[0] if arr.ndim == 4 else arr
    lo, hi = float(arr.min()), float(arr.max())
    mask = (arr - lo) > threshold * (hi - lo) if hi > lo else np.zeros(arr.shape, bool)
    if closing_radius_vox > 0:
        r = closing_radius_vox
        mask = ndimage.binary_closing(np.pad(mask, r), structure=ball(r))[r:-r, r:-r, r:-r]
    mask = get_largest_connected_component_mask(mask, connectivity=connectivity)
    return ndimage.binary_fill_holes(mask)


class BrainMaskd(MapTransform):
    """Add ``mask_key`` from :func:`brain_mask_from_intensity` of ``source_key`` when the data has no mask yet."""

    def __init__(self, source_key: str, mask_key: str = "mask", threshold: float = 0.05):
        super().__init__([source_key], allow_missing_keys=False)
        self.source_key, self.mask_key, self.threshold = source_key, mask_key, threshold

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        if d.get(self.mask_key) is None:
            src = d[self.source_key]
            mask = brain_mask_from_intensity(src, self.threshold)[None].astype(np.float32)
            if isinstance(src, torch.Tensor):
                from monai.data import MetaTensor

                mask = MetaTensor(torch.from_numpy(mask), affine=getattr(src, "affine", None))
            d[self.mask_key] = mask
        return d


def to_model_range(x01: torch.Tensor) -> torch.Tensor:
    """Intensities [0, 1] -> a generative model's range [-1, 1]: 2 x - 1 (cfm's authors map [0, 255] -> [-1, 1];
    for diffusion_iqt the background 0 becomes -1, its sampler's lower bound)."""
    return x01 * 2.0 - 1.0


def from_model_range(x: torch.Tensor, clip: bool = False) -> torch.Tensor:
    """A model's range [-1, 1] -> [0, 1]: (x + 1) / 2; ``clip=True`` clamps the result to [0, 1]."""
    y = (x + 1.0) * 0.5
    return y.clamp_(0.0, 1.0) if clip else y
