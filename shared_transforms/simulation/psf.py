"""The point-spread function of a low-field acquisition, applied on the high-field grid before resampling.

In plane, either the truncated k-space of a Cartesian acquisition (:func:`truncate_kspace`: a sinc PSF, with its
Gibbs ringing) or a Gaussian of FWHM the acquired voxel size; through the slice, a box of the slice thickness
(:func:`box_kernel`) or the same Gaussian. Used by :class:`.degradation.RandomLowFieldDegradation`. Written here:
``torch.fft`` masks the unshifted spectrum with ``numpy.fft.fftfreq`` (equal to masking the centred one), and
``scipy.ndimage`` convolves and smooths with ``mode="nearest"``; MONAI has no acquisition PSF.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from .common import fwhm_mm_to_sigma_vox

__all__ = ["PSF_KINDS", "apply_psf", "box_kernel", "truncate_kspace"]

#: The in-plane PSF models.
PSF_KINDS = ("kspace", "gaussian")


def box_kernel(width_vox: float) -> np.ndarray:
    """Normalised box of ``width_vox`` voxels centred on a voxel: each tap weighs its overlap with the box."""
    half = 0.5 * max(float(width_vox), 1e-6)
    taps = np.arange(-math.ceil(half), math.ceil(half) + 1, dtype=float)
    weights = np.clip(np.minimum(taps + 0.5, half) - np.maximum(taps - 0.5, -half), 0.0, None)
    return weights / weights.sum()


def truncate_kspace(arr: np.ndarray, axes: Sequence[int], spacing_in: Sequence[float], spacing_mm: float) -> np.ndarray:
    """Keep the k-space band ``|k| <= 1 / (2 spacing_mm)`` cycles/mm along each of ``axes``, zero the rest.

    Args:
        arr: real array; ``axes`` index it.
        spacing_in: its voxel size (mm) along each of ``axes``.
        spacing_mm: the acquired voxel size whose band is kept.
    Returns:
        the real part of the band-limited array (float32; the imaginary part is 0 up to rounding, the mask being
        symmetric in k).
    """
    cutoff = 1.0 / (2.0 * spacing_mm) + 1e-9
    spec = torch.fft.fftn(torch.as_tensor(arr, dtype=torch.float32), dim=tuple(axes))
    for ax, d in zip(axes, spacing_in, strict=False):
        keep = torch.as_tensor(np.abs(np.fft.fftfreq(arr.shape[ax], d=float(d))) <= cutoff)
        view = [1] * arr.ndim
        view[ax] = -1
        spec = spec * keep.reshape(view)
    return torch.fft.ifftn(spec, dim=tuple(axes)).real.numpy()


def apply_psf(
    stack: np.ndarray,
    spacing_in: Sequence[float],
    axis: int,
    kind: str,
    slice_thickness_mm: float,
    inplane_spacing_mm: float,
) -> np.ndarray:
    """The PSF of an acquisition with slices along ``axis`` on a channel-first stack ``(C, X, Y, Z)``.

    Args:
        stack: float32 ``(C, X, Y, Z)`` on the high-field grid of voxel size ``spacing_in`` (mm, three values).
        axis: the thick-slice spatial axis (0, 1 or 2).
        kind: ``"kspace"`` (in plane the band ``|k| <= 1 / (2 inplane_spacing_mm)``, through the slice a box of
            ``slice_thickness_mm``) or ``"gaussian"`` (FWHM ``inplane_spacing_mm`` in plane and
            ``slice_thickness_mm`` through it).
    Returns:
        the blurred stack, same shape.
    """
    if kind not in PSF_KINDS:
        raise ValueError(f"psf must be one of {PSF_KINDS}, got {kind!r}")
    spacing_in = np.asarray(spacing_in, float)
    inplane = [a for a in range(3) if a != axis]
    if kind == "kspace":
        stack = truncate_kspace(stack, [a + 1 for a in inplane], spacing_in[inplane], inplane_spacing_mm)
        kernel = box_kernel(slice_thickness_mm / spacing_in[axis])
        return ndimage.convolve1d(stack, kernel.astype(np.float32), axis=axis + 1, mode="nearest")
    fwhm = np.full(3, float(inplane_spacing_mm))
    fwhm[axis] = slice_thickness_mm
    return ndimage.gaussian_filter(stack, sigma=(0.0, *fwhm_mm_to_sigma_vox(fwhm, spacing_in)), mode="nearest")
