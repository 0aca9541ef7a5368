"""2D affine registration of a high-field slice onto a low-field slice, for scoring real scan pairs voxel by voxel.

Real low/high-field pairs show the same slice positions on different pixel grids (another field of view, another
matrix, the head placed differently), so a voxel-wise score needs the high field moved onto the low field's grid
first. MONAI has no intensity-based multi-modal registration; this is SimpleITK's (``ImageRegistrationMethod``)
with the textbook recipe for images of different contrast and scale:

1. Scale: the high-field slice's pixel size is set so that its head (Otsu on a smoothed copy, holes filled) has the
   low field's head area; the centres of mass are aligned (``CenteredTransformInitializer``, moments).
2. A similarity transform (rotation, one scale, translation), then a full affine from it, each by Mattes mutual
   information (50 bins, a fixed 25 % random sample with a fixed seed, so every run gives the same result) and
   regular-step gradient descent over three resolutions (shrink 4, 2, 1; smoothing 2, 1, 0 pixels).
3. The high field resampled onto the low field's grid (linear), outside its field of view 0.

Mutual information, not correlation, because a 0.055 T GRE and a 3 T MPRAGE order their tissues differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu


def _sitk():
    try:
        import SimpleITK as sitk  # noqa: N813 (SimpleITK's own name)
    except ImportError as err:  # an optional dependency: only the real-data evaluation registers images
        raise ImportError("registration needs SimpleITK: pip install -e '.[realdata]'") from err
    return sitk


def head_mask_2d(img: np.ndarray, smoothing_px: float = 2.0, fraction: float = 0.5) -> np.ndarray:
    """The head of a 2D magnitude slice ``(H, W)``: ``fraction`` of Otsu's threshold of a Gaussian-smoothed copy
    (Otsu alone splits bright CSF or fat from darker brain in some contrasts; half of it still lies far above air),
    the largest connected component, holes filled. All False for a constant slice."""
    sm = ndimage.gaussian_filter(np.asarray(img, np.float64), smoothing_px)
    if not sm.max() > sm.min():
        return np.zeros(sm.shape, bool)
    mask = sm > fraction * threshold_otsu(sm)
    labels, n = ndimage.label(mask)
    if n > 1:
        mask = labels == (1 + int(np.argmax(ndimage.sum(mask, labels, range(1, n + 1)))))
    return ndimage.binary_fill_holes(mask)


@dataclass
class Registration2D:
    """The result of :func:`register_affine_2d`.

    Attributes:
        moved: the moving slice on the fixed slice's grid ``(H, W)`` (0 outside its field of view).
        inside: ``(H, W)`` bool, where the moved slice has data (its field of view on the fixed grid).
        matrix, offset: the affine that maps a fixed pixel index ``(i, j)`` to the moving slice's pixel index
            ``matrix @ (i, j) + offset`` (array axes, in pixels).
        metric: the final Mattes mutual information (negative; lower is better aligned).
    """

    moved: np.ndarray
    inside: np.ndarray
    matrix: np.ndarray
    offset: np.ndarray
    metric: float


def _image(arr: np.ndarray, spacing: tuple[float, float]):
    sitk = _sitk()
    # SimpleITK's index order is (x, y) = (column, row): give it the transpose so that x runs along axis 0
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(arr, np.float32).T))
    img.SetSpacing(tuple(float(s) for s in spacing))
    return img


def _run(fixed, moving, transform, seed: int, iterations: int):
    sitk = _sitk()
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.25, seed + 1)  # SimpleITK reads a seed of 0 as "the wall clock"
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=iterations, gradientMagnitudeTolerance=1e-8
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(transform, inPlace=True)
    reg.Execute(fixed, moving)
    return float(reg.GetMetricValue())


def register_affine_2d(fixed: np.ndarray, moving: np.ndarray, seed: int = 0, iterations: int = 300) -> Registration2D:
    """Register the 2D ``moving`` slice (any shape, any contrast) onto ``fixed`` ``(H, W)``; see the module
    docstring for the method. Deterministic for a given ``seed`` (SimpleITK runs single-threaded here)."""
    sitk = _sitk()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # multi-threaded metric sums vary in the last bits
    fixed, moving = np.asarray(fixed, np.float64), np.asarray(moving, np.float64)
    area_f, area_m = head_mask_2d(fixed).sum(), head_mask_2d(moving).sum()
    scale = float(np.sqrt(area_f / area_m)) if area_f > 0 and area_m > 0 else 1.0
    f_img, m_img = _image(fixed, (1.0, 1.0)), _image(moving, (scale, scale))
    init = sitk.CenteredTransformInitializer(
        f_img, m_img, sitk.Similarity2DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    similarity = sitk.Similarity2DTransform(init)
    _run(f_img, m_img, similarity, seed, iterations)
    affine = sitk.AffineTransform(2)
    affine.SetMatrix(similarity.GetMatrix())
    affine.SetTranslation(similarity.GetTranslation())
    affine.SetCenter(similarity.GetCenter())
    metric = _run(f_img, m_img, affine, seed, iterations)
    moved_img = sitk.Resample(m_img, f_img, affine, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    ones = _image(np.ones(moving.shape), (scale, scale))
    inside_img = sitk.Resample(ones, f_img, affine, sitk.sitkNearestNeighbor, 0.0, sitk.sitkFloat32)
    # physical point of fixed pixel p is p (spacing 1, origin 0); moving index = (A (p - c) + c + t) / scale
    a = np.asarray(affine.GetMatrix()).reshape(2, 2)
    c, t = np.asarray(affine.GetCenter()), np.asarray(affine.GetTranslation())
    return Registration2D(
        moved=sitk.GetArrayFromImage(moved_img).T.astype(np.float32),
        inside=sitk.GetArrayFromImage(inside_img).T > 0.5,
        matrix=a / scale,
        offset=(c + t - a @ c) / scale,
        metric=metric,
    )
