"""Grids: bringing low field onto the high-field grid, seed 002's fixed shape/spacing, and the pair check.

Most of the geometry is MONAI's and is used directly in the bundle configs: ``Orientationd`` (to RAS, so sagittal
slices are ``V[x, :, :]``), ``Spacingd`` (to ``target_spacing``), ``ResampleToMatchd`` (low field onto the
high-field grid, cubic spline ``mode=3``). What is here: the seed-002 resampling to a fixed shape *and* spacing
(MONAI's ``Resize`` keeps the affine's meaning and has no cubic 3D mode; ``Spacing`` fixes the spacing but not the
shape), a helper that derives affines, and the field-of-view check of a low/high pair.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, ResampleToMatchd, SpatialResample, Transform

from ..errors import source_name
from .checks import check_fov_overlap, check_same_grid

#: Seed 002 (section 2.3.1): the grids its low- and high-field volumes were resampled to.
SEED002_LOW_FIELD = {"spatial_shape": (112, 138, 40), "spacing_mm": (1.6, 1.6, 5.0)}
SEED002_HIGH_FIELD = {"spatial_shape": (179, 221, 200), "spacing_mm": (1.0, 1.0, 1.0)}


def voxel_spacing_mm(affine) -> np.ndarray:
    """Voxel size along each array axis in mm (column norms of the affine's 3x3 part)."""
    aff = np.asarray(affine, dtype=np.float64)
    return np.sqrt((aff[:3, :3] ** 2).sum(axis=0))


def affine_for_grid(affine, shape_old: Sequence[int], shape_new: Sequence[int], spacing_new_mm: Sequence[float]):
    """Affine of a grid with ``shape_new`` voxels of ``spacing_new_mm``, same axis directions and same world centre.

    Args:
        affine: 4x4 affine of the old grid (``shape_old`` voxels).
    Returns:
        4x4 float64 numpy affine.
    """
    aff = np.asarray(affine, dtype=np.float64)
    directions = aff[:3, :3] / voxel_spacing_mm(aff)
    new = np.eye(4)
    new[:3, :3] = directions * np.asarray(spacing_new_mm, dtype=np.float64)
    centre_old = aff[:3, :3] @ ((np.asarray(shape_old[:3], np.float64) - 1) / 2) + aff[:3, 3]
    new[:3, 3] = centre_old - new[:3, :3] @ ((np.asarray(shape_new[:3], np.float64) - 1) / 2)
    return new


class ResampleToShapeSpacing(Transform):
    """Seed 002's volume preparation: cubic zoom to a fixed ``spatial_shape``, then the affine of ``spacing_mm``.

    Seed 002 (section 2.3.1) resampled every low-field volume to (112, 138, 40) and assigned a (1.6, 1.6, 5.0) mm
    affine, and every high-field volume to (179, 221, 200) at 1 mm, with zoom factors shape_new / shape_old. When
    ``spatial_shape * spacing_mm`` differs from the volume's extent the physical size changes; that is the seed's
    recipe (it makes every subject the same array shape). ``keep_extent=True`` instead keeps the field of view and
    only fixes the shape (spacing then follows from the extent).

    Input ``(C, X, Y, Z)`` MetaTensor (a plain array is taken as 1 mm, identity affine); output MetaTensor.
    """

    def __init__(
        self,
        spatial_shape: Sequence[int] = SEED002_LOW_FIELD["spatial_shape"],
        spacing_mm: Sequence[float] = SEED002_LOW_FIELD["spacing_mm"],
        mode: int | str = 3,
        keep_extent: bool = False,
    ):
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        self.keep_extent = keep_extent
        self.resample = SpatialResample(mode=mode, padding_mode="border", dtype=torch.float64)

    def __call__(self, img):
        img = img if isinstance(img, MetaTensor) else MetaTensor(torch.as_tensor(np.asarray(img)))
        shape_old = img.shape[1:]
        extent_spacing = voxel_spacing_mm(img.affine) * np.asarray(shape_old) / np.asarray(self.spatial_shape)
        zoom_affine = affine_for_grid(img.affine, shape_old, self.spatial_shape, extent_spacing)
        out = self.resample(img, dst_affine=torch.as_tensor(zoom_affine), spatial_size=self.spatial_shape)
        out = out.to(torch.float32)
        if not self.keep_extent:
            new_affine = affine_for_grid(zoom_affine, self.spatial_shape, self.spatial_shape, self.spacing_mm)
            out.affine = torch.as_tensor(new_affine)
        return out


class ResampleToShapeSpacingd(MapTransform):
    """Dictionary version of :class:`ResampleToShapeSpacing` (masks: pass ``mode=0``)."""

    def __init__(
        self,
        keys: KeysCollection,
        spatial_shape: Sequence[int] = SEED002_LOW_FIELD["spatial_shape"],
        spacing_mm: Sequence[float] = SEED002_LOW_FIELD["spacing_mm"],
        mode: int | str = 3,
        keep_extent: bool = False,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.resample = ResampleToShapeSpacing(spatial_shape, spacing_mm, mode, keep_extent)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resample(d[key])
        return d


class CheckFieldOfViewd(MapTransform):
    """Raise a clear error when a volume (e.g. ``low``) does not overlap the reference (e.g. ``high``).

    Run it before ``ResampleToMatchd``: resampling a non-overlapping pair silently gives an empty volume.
    """

    def __init__(self, keys: KeysCollection, ref_key: str, min_fraction: float = 0.5, allow_missing_keys=False):
        super().__init__(keys, allow_missing_keys)
        self.ref_key, self.min_fraction = ref_key, min_fraction

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        ref = d[self.ref_key]
        for key in self.key_iterator(d):
            img = d[key]
            names = source_name(img, str(key)) + " and " + source_name(ref, str(self.ref_key))
            check_fov_overlap(
                img.affine,
                img.shape[1:],
                ref.affine,
                ref.shape[1:],
                source=names,
                min_fraction=self.min_fraction,
                of_second=True,
            )
        return d


class CheckSameGridd(MapTransform):
    """Raise a clear error, naming both files, when ``keys`` (a mask) do not lie on ``ref_key``'s voxel grid (shape
    and affine); a mask on another grid would be silently misaligned in training. Missing keys are skipped."""

    def __init__(self, keys: KeysCollection, ref_key: str, allow_missing_keys: bool = True):
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        ref = d[self.ref_key]
        for key in self.key_iterator(d):
            img = d[key]
            if img is None:
                continue
            names = source_name(img, str(key)) + " and " + source_name(ref, str(self.ref_key))
            check_same_grid(img.affine, img.shape[1:], ref.affine, ref.shape[1:], source=names)
        return d


class ResampleToMatchKeepSourced(ResampleToMatchd):
    """MONAI's ``ResampleToMatchd`` that keeps what the source file was: after resampling, ``keys`` take the
    destination's meta (MONAI copies it wholesale), so ``original_affine`` and ``spatial_shape`` would describe the
    high-field file; here they are restored to the source's own (the low field as acquired), which the slice
    inferer reads to slice along the acquisition (:func:`shared_transforms.inference.inferers.thick_axis`)."""

    KEPT = ("original_affine", "spatial_shape", "filename_or_obj")

    def __call__(self, data: Mapping[Hashable, object], lazy: bool | None = None) -> dict:
        kept = {
            k: {m: data[k].meta[m] for m in self.KEPT if m in data[k].meta}
            for k in self.key_iterator(dict(data))
            if isinstance(data[k], MetaTensor)
        }
        d = super().__call__(data, lazy=lazy)
        for key, meta in kept.items():
            d[key].meta.update(meta)
        return d


class SliceAlongAcquisitiond(MapTransform):
    """Reorder channel-first volumes ``(C, X, Y, Z)`` so that slices ``V[:, i]`` along the first spatial axis follow
    the acquisition: the thick axis of ``ref_key``'s acquisition (its ``original_affine`` against its ``affine``)
    lies in each slice, along the width (:func:`shared_transforms.inference.inferers.slicing_plan`, the plan
    ``SliceInferer2D(spatial_dim="auto")`` uses at inference).

    For training and evaluating 2D slice models on data acquired along any axis: run it after the pair is aligned and
    normalised; the sagittal crops and ``spatial_dim=0`` slicing that follow then see every acquisition as the
    inference sees it. An axial (or near-isotropic) acquisition is left as it is. The output is a plain tensor (the
    permuted grid has no meaningful affine), so use it where the meta is dropped anyway (``track_meta=False``).
    """

    def __init__(self, keys: KeysCollection, ref_key: str = "image", allow_missing_keys: bool = True):
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key

    def plan(self, data: Mapping[Hashable, object]) -> tuple[int, bool]:
        """``(spatial_dim, transpose)`` from the reference's meta; ``(0, False)`` without it."""
        from ..inference.inferers import acquisition_plan

        return acquisition_plan(data[self.ref_key])

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        dim, transpose = self.plan(d)
        for key in self.key_iterator(d):
            v = torch.as_tensor(d[key])
            v = v.as_tensor() if isinstance(v, MetaTensor) else v
            v = v.movedim(dim + 1, 1)
            d[key] = v.transpose(-1, -2).contiguous() if transpose else v.contiguous()
        return d


class RandInPlaneSlicesd(Randomizable, MapTransform):
    """With probability ``prob``, turn volumes laid out by :class:`SliceAlongAcquisitiond` (thick axis last, along
    the slice width) so that slices along the first spatial axis lie in the acquisition's own plane: the last
    spatial axis moves first, ``(C, X, Y, Z) -> (C, Z, X, Y)``.

    For training 2D slice models that must also enhance a single slice or a thin slab in its own plane (a real scan's
    few slices, :func:`shared_transforms.inference.inferers.thin_slab_axis`), where no slice holds the thick axis. One
    draw per call (per volume), from MONAI's seeded ``R``; ``prob`` 0 leaves every volume as it is.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.25, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if not 0.0 <= float(prob) <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob = float(prob)
        self._in_plane = False

    def randomize(self, data: object = None) -> None:
        self._in_plane = bool(self.R.uniform() < self.prob)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        self.randomize()
        d = dict(data)
        if self._in_plane:
            for key in self.key_iterator(d):
                d[key] = torch.as_tensor(d[key]).movedim(-1, 1).contiguous()
        return d


class SelectSlicesd(MapTransform):
    """Keep ``num_slices`` evenly spaced slices along ``axis`` (0 = sagittal) in the central part of the extent of
    ``mask_key``.

    For a quick validation of slice models (a flow or diffusion sampler is too slow to run on every slice): the
    result is a thin stack ``(C, num_slices, Y, Z)``; its slices are not neighbours, so score it slice by slice
    (``MaskedMetric(..., slice_axis=0)``). The affine is not kept meaningful (MetaTensor meta is dropped).

    Args:
        central_fraction: the slices are spread over this central fraction of the mask's extent (0.6: the middle
            60 %). The outer slices of a brain hold a sliver of cortex whose PSNR swings from one checkpoint to the
            next; a validation metric that picks the checkpoint should not hang on them.
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_slices: int = 8,
        axis: int = 0,
        mask_key: str | None = "mask",
        central_fraction: float = 0.6,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.num_slices, self.axis, self.mask_key = int(num_slices), axis, mask_key
        if not 0 < central_fraction <= 1:
            raise ValueError(f"central_fraction must be in (0, 1], got {central_fraction}")
        self.central_fraction = float(central_fraction)

    def indices(self, data: Mapping[Hashable, object]) -> np.ndarray:
        """The kept slice indices: ``num_slices`` evenly spaced over the central part of the extent (sorted)."""
        ref = data[self.mask_key] if self.mask_key and self.mask_key in data else data[self.first_key(data)]
        arr = torch.as_tensor(ref)[0]
        other = tuple(d for d in range(arr.ndim) if d != self.axis)
        present = torch.nonzero(arr.abs().amax(dim=other) > 0).flatten()
        lo, hi = (int(present[0]), int(present[-1])) if present.numel() else (0, arr.shape[self.axis] - 1)
        centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo) * self.central_fraction
        return np.unique(np.round(np.linspace(centre - half, centre + half, self.num_slices)).astype(int))

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        idx = torch.as_tensor(self.indices(d))
        for key in self.key_iterator(d):
            img = torch.as_tensor(d[key])
            d[key] = img.index_select(self.axis + 1, idx.to(img.device))
        return d
