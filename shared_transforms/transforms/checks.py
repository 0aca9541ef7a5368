"""Checks that turn bad input into one clear :class:`~shared_transforms.errors.InputError`.

The bundle contract lists the bad inputs every bundle must reject with an error that names the file and the
problem, before anything is written: a missing file, a file that is not NIfTI, a volume that is not 3D (4D with
one volume is accepted), NaN or Inf values, an empty or constant volume, a singular or non-finite affine, and a
low/high pair whose fields of view do not overlap. The datalist checks live in :mod:`shared_transforms.io.datalist`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import nibabel as nib
import numpy as np

from ..errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: str | os.PathLike) -> bool:
    """True when the file name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def check_input_file(path: str | os.PathLike, expected: str) -> str:
    """``path`` as a string when it exists and is not a folder; else an :class:`InputError` naming it (``expected``
    describes the file wanted, e.g. "a NIfTI file (.nii or .nii.gz)")."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(path, "file not found")
    if os.path.isdir(path):
        raise InputError(path, f"is a folder, expected {expected}")
    return path


def check_nifti_file(path: str | os.PathLike) -> nib.Nifti1Image:
    """Open ``path`` as NIfTI (header only, no voxel data read) or raise a clear error.

    Returns:
        the nibabel image (data not loaded yet).
    """
    path = check_input_file(path, "a NIfTI file (.nii or .nii.gz)")
    try:
        img = nib.load(path)
    except Exception as err:  # nibabel raises several types (ImageFileError, OSError, EOFError, ...)
        raise InputError(path, f"is not a readable NIfTI file ({type(err).__name__}: {err})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(path, f"is a {type(img).__name__}, expected NIfTI (.nii or .nii.gz)")
    check_shape(img.shape, path)
    check_affine(img.affine, path)
    return img


def squeeze_to_3d_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """The 3D shape of a volume, accepting a 4D file with one volume and a single 2D slice ``(H, W)`` (as
    ``(H, W, 1)``); raises ValueError otherwise."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    while len(shape) > 3 and shape[-1] == 1:  # 5D NIfTI with trailing singleton dims (e.g. some converters)
        shape = shape[:-1]
    if len(shape) != 3:
        raise ValueError(f"is not a 3D volume: shape {tuple(shape)} (a 4D file must hold exactly one volume)")
    return shape


def check_shape(shape: Sequence[int], source: str | os.PathLike | None) -> tuple[int, int, int]:
    """Raise unless ``shape`` is a 3D volume (or 4D with one volume) with at least 2 voxels along each axis, or a
    single slice (``(H, W)``, ``(H, W, 1)`` or a slab of 1 voxel along any one axis, the others at least 2): 2D
    bundles enhance those in their own plane, 3D bundles refuse them (:func:`check_volume_not_slab`)."""
    try:
        shape3 = squeeze_to_3d_shape(shape)
    except ValueError as err:
        raise InputError(source, str(err)) from None
    if sorted(shape3)[1] < 2:
        raise InputError(source, f"is not a 3D volume: shape {tuple(shape)} has two axes shorter than 2 voxels")
    limit = max_voxels()
    n = int(np.prod(np.asarray(shape3, dtype=np.int64)))
    if n > limit:
        raise InputError(
            source,
            f"its header claims {n:,} voxels {tuple(shape3)}, more than the limit of {limit:,}; "
            f"if the volume is real, raise the limit with the environment variable {MAX_VOXELS_ENV}",
        )
    return shape3  # type: ignore[return-value]


def check_volume_not_slab(shape: Sequence[int], source: str | os.PathLike | None, bundle: str) -> None:
    """Raise (one line naming the file) when a 3D bundle is given a single slice or a thin slab (1 voxel along an
    axis, or :func:`shared_transforms.inference.inferers.thin_slab_axis`: at most 8 voxels along one axis and 8 times
    more along the others); 2D bundles enhance those in their own plane."""
    from ..inference.inferers import THIN_SLAB_MAX_SLICES, thin_slab_axis

    shape3 = [int(v) for v in shape][-3:]
    if min(shape3) == 1 or thin_slab_axis(shape3) is not None:
        raise InputError(
            source,
            f"is a single slice or thin slab (shape {tuple(shape3)}); {bundle} is a 3D method and needs a volume "
            f"(more than {THIN_SLAB_MAX_SLICES} slices): use a 2D bundle (cfm, unet, amir) for slices",
        )


def check_target_grid(
    shape: Sequence[int], affine: np.ndarray, target_spacing_mm: Sequence[float] | None, source
) -> tuple[int, ...]:
    """Raise (before anything is allocated) when the grid a run will compute, the file's field of view at
    ``target_spacing_mm``, holds more voxels than :func:`max_voxels`: a small file with huge voxels (32 x 32 x 16
    at 100 mm) would ask for a 1 mm grid of billions. Returns that grid's shape (the file's own without a spacing)."""
    shape3 = tuple(int(v) for v in shape)[:3]
    if target_spacing_mm is None:
        return shape3
    target = np.broadcast_to(np.asarray(target_spacing_mm, dtype=np.float64), (3,))
    from .geometry import voxel_spacing_mm  # geometry imports this module

    spacing = voxel_spacing_mm(affine)
    grid = tuple(max(1, int(np.ceil(n * s / t - 1e-6))) for n, s, t in zip(shape3, spacing, target, strict=True))
    n = int(np.prod(np.asarray(grid, dtype=np.float64)))
    limit = max_voxels()
    if n > limit:
        raise InputError(
            source,
            f"its field of view at {tuple(float(t) for t in target)} mm is a grid of {n:,} voxels {grid}, more than "
            f"the limit of {limit:,} (voxels of {tuple(round(float(v), 3) for v in spacing)} mm in the header); "
            f"check the header's voxel size, or raise the limit with {MAX_VOXELS_ENV}",
        )
    return grid


#: The most voxels a volume may claim before anything is allocated: 2**28 (1 GiB as float32; a 0.5 mm whole head,
#: 512 x 512 x 512, is 2**27). Overridden by the environment variable :data:`MAX_VOXELS_ENV`.
MAX_VOXELS = 2**28
MAX_VOXELS_ENV = "LFMRI_MAX_VOXELS"


def max_voxels() -> int:
    """The voxel-count limit: ``$LFMRI_MAX_VOXELS`` when set (a positive integer), else :data:`MAX_VOXELS`."""
    value = os.environ.get(MAX_VOXELS_ENV)
    if value in (None, ""):
        return MAX_VOXELS
    try:
        limit = int(float(value))
    except ValueError:
        raise InputError(MAX_VOXELS_ENV, f"must be a positive integer, got {value!r}") from None
    if limit < 1:
        raise InputError(MAX_VOXELS_ENV, f"must be a positive integer, got {value!r}")
    return limit


def check_affine(affine: np.ndarray, source: str | os.PathLike | None) -> None:
    """Raise unless the 4x4 voxel-to-world affine is finite and its 3x3 part is invertible."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise InputError(source, f"affine has shape {affine.shape}, expected (4, 4)")
    if not np.all(np.isfinite(affine)):
        raise InputError(source, "affine contains NaN or Inf values")
    det = float(np.linalg.det(affine[:3, :3]))
    if abs(det) < 1e-8:
        raise InputError(source, f"affine is singular (determinant {det:.3g}); the voxel size cannot be zero")


#: A volume with fewer voxels above its minimum than this fraction is refused as empty (a head fills > 10 %).
MIN_SIGNAL_FRACTION = 1e-3


def check_values(data, source: str | os.PathLike | None) -> None:
    """Raise for NaN/Inf values, an empty array, a constant volume, or one with almost no signal (fewer than
    :data:`MIN_SIGNAL_FRACTION` of its voxels above its minimum), which no method can enhance."""
    arr = np.asarray(data)
    if arr.size == 0:
        raise InputError(source, "volume is empty (0 voxels)")
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(arr.size - finite.sum() - n_nan)
        raise InputError(source, f"contains {n_nan} NaN and {n_inf} Inf values")
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        raise InputError(source, f"volume is constant (every voxel is {lo:g}); nothing to enhance")
    # checked on the data as loaded: after cubic resampling the ringing around a few bright voxels spreads them
    # over many, and the percentile normalisation then stretches that ringing into a volume of float noise
    n_signal = int(np.count_nonzero(arr > lo + 1e-3 * (hi - lo)))
    if n_signal < MIN_SIGNAL_FRACTION * arr.size:
        raise InputError(
            source,
            f"holds almost no signal: {n_signal} of {arr.size} voxels lie above the background "
            f"value {lo:g} (fewer than {MIN_SIGNAL_FRACTION:.1%}); nothing to enhance",
        )


def world_bounding_box(affine: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned world-space box (min corner, max corner) in mm covered by a volume's voxels (voxel edges)."""
    shape = np.asarray(shape[:3], dtype=np.float64)
    corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in shape], indexing="ij")).reshape(3, -1)
    world = np.asarray(affine, dtype=np.float64)[:3, :3] @ corners + np.asarray(affine)[:3, 3:4]
    return world.min(axis=1), world.max(axis=1)


def _box_intersection(affine_a, shape_a, affine_b, shape_b) -> tuple[float, float, float]:
    """World-box volumes (mm^3) of the intersection, of a and of b."""
    a0, a1 = world_bounding_box(affine_a, shape_a)
    b0, b1 = world_bounding_box(affine_b, shape_b)
    inter = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None).prod()
    return float(inter), float(np.prod(a1 - a0)), float(np.prod(b1 - b0))


def fov_overlap_fraction(affine_a, shape_a, affine_b, shape_b) -> float:
    """Fraction of the smaller of two world bounding boxes that the other one covers (0 = disjoint)."""
    inter, size_a, size_b = _box_intersection(affine_a, shape_a, affine_b, shape_b)
    smaller = min(size_a, size_b)
    return inter / smaller if smaller > 0 else 0.0


def fov_coverage_fraction(affine_a, shape_a, affine_b, shape_b) -> float:
    """Fraction of volume b's world bounding box that volume a's box covers (1 = a covers all of b)."""
    inter, _, size_b = _box_intersection(affine_a, shape_a, affine_b, shape_b)
    return inter / size_b if size_b > 0 else 0.0


def check_fov_overlap(
    affine_a, shape_a, affine_b, shape_b, source: str, min_fraction: float = 0.5, of_second: bool = False
) -> float:
    """Raise when two volumes (e.g. a low/high-field pair) do not share a field of view.

    Args:
        min_fraction: the least fraction of the smaller field of view the other must cover; a pair of scans of the
            same head overlaps almost fully, so less than half means a wrong pair or a wrong affine.
        of_second: measure the fraction of the second volume's field of view (the training target) that the first
            covers, instead of the smaller one's: a low field that covers a small part of its high field would
            otherwise pass, since that small part lies wholly inside the high field.
    Returns:
        the overlap fraction.
    """
    if of_second:
        frac = fov_coverage_fraction(affine_a, shape_a, affine_b, shape_b)
        what = "of the reference's field of view covered"
    else:
        frac = fov_overlap_fraction(affine_a, shape_a, affine_b, shape_b)
        what = "shared"
    if frac < min_fraction:
        raise InputError(
            source,
            f"fields of view do not overlap (only {100 * frac:.0f}% {what}, need {100 * min_fraction:.0f}%): "
            "check that the low- and high-field files belong to the same subject and carry correct affines",
        )
    return frac


def check_same_grid(affine_a, shape_a, affine_b, shape_b, source: str, tol_mm: float = 1e-3) -> None:
    """Raise unless two volumes (a mask and its image) have the same shape and the same voxel-to-world affine."""
    shape_a, shape_b = tuple(int(v) for v in shape_a), tuple(int(v) for v in shape_b)
    if shape_a != shape_b:
        raise InputError(
            source,
            f"mask shape {shape_a} differs from its image's {shape_b}: a mask must lie on its image's voxel grid",
        )
    diff = float(np.abs(np.asarray(affine_a, dtype=np.float64) - np.asarray(affine_b, dtype=np.float64)).max())
    if diff > tol_mm:
        raise InputError(
            source,
            f"mask affine differs from its image's (by up to {diff:.3g} mm): a mask must lie on "
            "its image's voxel grid",
        )
