"""SSIM (Wang et al. 2004) and multi-scale SSIM (Wang et al. 2003) of 2D/3D images, whole or inside a mask.

The SSIM map is scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, full=True)``: an 11-tap Gaussian window (sigma 1.5, cut at 3.5 sigma), constants
K1 = 0.01, K2 = 0.03 times ``data_range``, "same"-sized with mirror padding at the image border. Its interior (the
voxels whose window lies inside the image) is the map of ``monai.metrics.SSIMMetric``, so the whole-image SSIM (the
interior mean) equals MONAI's; inside a mask the full map is averaged over the mask voxels.

MS-SSIM follows ``monai.metrics.MultiScaleSSIMMetric`` (relu of the mean contrast-structure term at each scale,
SSIM at the coarsest, 2x average pooling between scales). scikit-image has no MS-SSIM and does not return the
contrast-structure term, and MONAI's dense k^3 convolution takes about 10 s on a 1 mm brain volume, so the local
moments are filtered here with the filter scikit-image's SSIM uses (``scipy.ndimage.gaussian_filter``, mirror
padding), cut at MONAI's ``kernel_size`` taps: one filter implementation for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.metrics import structural_similarity

from ..errors import InputError
from .inputs import _bbox, as_mask, as_pair

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""The five scale weights of Wang et al. 2003 (MONAI's ``MultiScaleSSIMMetric`` default)."""

_SKIMAGE_TRUNCATE = 3.5
"""scikit-image's SSIM cuts its Gaussian window at 3.5 sigma: 11 taps for sigma 1.5."""


def _gaussian_win_size(sigma: float) -> int:
    return 2 * int(_SKIMAGE_TRUNCATE * sigma + 0.5) + 1


def _skimage_ssim_map(
    p: np.ndarray,
    r: np.ndarray,
    data_range: float,
    win_size: int = 11,
    sigma: float = 1.5,
    kernel_type: str = "gaussian",
    k1: float = 0.01,
    k2: float = 0.03,
    channel_axis: int | None = None,
) -> np.ndarray:
    """The same-sized SSIM map of ``structural_similarity`` (2D maps of each slice along ``channel_axis``)."""
    if kernel_type not in ("gaussian", "uniform"):
        raise InputError("kernel_type", f"is {kernel_type!r}, expected 'gaussian' or 'uniform'")
    gaussian = kernel_type == "gaussian"
    if gaussian and win_size != _gaussian_win_size(sigma):
        raise InputError(
            "win_size", f"is {win_size}, but a Gaussian window of sigma {sigma} has {_gaussian_win_size(sigma)} taps"
        )
    spatial = [s for ax, s in enumerate(p.shape) if channel_axis is None or ax != channel_axis % p.ndim]
    if min(spatial) < win_size:
        raise InputError("image", f"has shape {p.shape}, a side smaller than the SSIM window {win_size}")
    _, smap = structural_similarity(
        p,
        r,
        win_size=win_size,
        data_range=data_range,
        gaussian_weights=gaussian,
        sigma=sigma,
        K1=k1,
        K2=k2,
        use_sample_covariance=False,
        full=True,
        channel_axis=channel_axis,
    )
    return smap


def _interior(v: np.ndarray, win_size: int, axes: Sequence[int] | None = None) -> np.ndarray:
    """The part of a same-sized map whose window lies fully inside the image (MONAI's 'valid' map), on ``axes``."""
    r = win_size // 2
    index = [slice(None)] * v.ndim
    for ax in range(v.ndim) if axes is None else axes:
        if v.shape[ax] < win_size:
            raise InputError("image", f"has size {v.shape[ax]} along axis {ax}, smaller than the window {win_size}")
        index[ax] = slice(r, v.shape[ax] - (win_size - 1 - r))
    return v[tuple(index)]


def ssim_map(
    pred: Any,
    ref: Any,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    kernel_type: str = "gaussian",
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """The per-voxel SSIM map, float64 of the inputs' shape (2D ``(H, W)`` or 3D ``(X, Y, Z)``).

    scikit-image's ``structural_similarity(..., full=True)`` with population covariances; a Gaussian window has
    ``win_size = 2 round(3.5 sigma) + 1`` taps (11 for sigma 1.5), a uniform one ``win_size``. Every side must be at
    least ``win_size``. The interior (``win_size // 2`` voxels from each border) equals MONAI's SSIM map.
    """
    p, r = as_pair(pred, ref, None)
    return _skimage_ssim_map(p, r, data_range, win_size, sigma, kernel_type, k1, k2)


def ssim(
    pred: Any,
    ref: Any,
    mask: Any = None,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    kernel_type: str = "gaussian",
) -> float:
    """SSIM of 2D/3D images: whole image = mean of the valid map (equals ``monai.metrics.SSIMMetric``); inside the
    mask = mean of the same-sized map over the mask voxels (see :func:`ssim_map`)."""
    p, r = as_pair(pred, ref, None)
    m = as_mask(mask, p.shape)
    smap = _skimage_ssim_map(p, r, data_range, win_size, sigma, kernel_type)
    return float(_interior(smap, win_size).mean() if m is None else smap[m].mean())


def _ms_ssim_fits(shape: Sequence[int], kernel_size: int, n_scales: int) -> bool:
    """Whether MONAI's ``compute_ms_ssim`` accepts ``shape`` and can run every scale.

    MONAI checks ``dim // (n - 1)**2 > kernel - 1``; the coarsest scale also needs ``dim // 2**(n - 1) >= kernel``
    for its 'valid' convolution (MONAI's check alone lets 2 scales through for kernel <= dim < 2 kernel).
    """
    div = max(1, n_scales - 1) ** 2
    return all(d // div > kernel_size - 1 and d // 2 ** (n_scales - 1) >= kernel_size for d in shape)


def ms_ssim_setup(shape: Sequence[int], kernel_size: int = 11, max_scales: int = 5) -> tuple[int, tuple[float, ...]]:
    """Kernel size and scale weights for MS-SSIM on an image of ``shape``.

    Keeps the 11-voxel window and uses as many of the 5 standard scales as fit (MONAI's default needs every dim
    >= 176); only when even one scale does not fit, the window shrinks to the largest odd size that does. The
    weights are the first ``n`` of :data:`MS_SSIM_WEIGHTS` renormalised to sum to 1 (so MS-SSIM stays a weighted
    geometric mean). Returns ``(kernel_size, weights)``; ``len(weights)`` is the number of scales.
    """
    shape = tuple(int(s) for s in shape)
    for n in range(max_scales, 0, -1):
        if _ms_ssim_fits(shape, kernel_size, n):
            w = np.asarray(MS_SSIM_WEIGHTS[:n], dtype=np.float64)
            return kernel_size, tuple(float(x) for x in w / w.sum())
    k = min(shape) if min(shape) % 2 else min(shape) - 1
    if k < 3:
        raise InputError("image", f"of shape {shape} is too small for MS-SSIM (needs every size >= 3)")
    return k, (1.0,)


def _local_moments(p: np.ndarray, r: np.ndarray, kernel_size: int, sigma: float) -> list[np.ndarray]:
    """Local means of p, r, p^2, r^2, p r (same-sized): scipy's Gaussian (scikit-image's SSIM filter, mirror
    padding) cut at ``kernel_size`` taps, MONAI's MS-SSIM window."""
    return [
        ndimage.gaussian_filter(v, sigma, mode="reflect", radius=kernel_size // 2) for v in (p, r, p * p, r * r, p * r)
    ]


def _cs_and_ssim_means(
    moments: Sequence[np.ndarray], data_range: float, kernel_size: int, k1: float = 0.01, k2: float = 0.03
) -> tuple[float, float]:
    """Valid-map means of the contrast-structure and SSIM terms (MONAI's ``compute_ssim_and_cs`` formula).

    Only the interior of the moments is used, so moments of a larger image cropped to this one serve as well.
    """
    mu_x, mu_y, mu_xx, mu_yy, mu_xy = (_interior(v, kernel_size) for v in moments)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    cs = (2 * (mu_xy - mu_x * mu_y) + c2) / (mu_xx - mu_x * mu_x + mu_yy - mu_y * mu_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return float(cs.mean()), float((luminance * cs).mean())


def _avg_pool2(v: np.ndarray) -> np.ndarray:
    """2x average pooling (odd sizes floored), as MONAI's MS-SSIM downsamples between scales."""
    pool = getattr(F, f"avg_pool{v.ndim}d")
    return pool(torch.from_numpy(np.ascontiguousarray(v))[None, None], kernel_size=2)[0, 0].numpy()


def _ms_ssim(
    p: np.ndarray,
    r: np.ndarray,
    data_range: float,
    kernel_size: int,
    sigma: float,
    weights: Sequence[float],
    first_moments: Sequence[np.ndarray] | None = None,
) -> float:
    """MS-SSIM of two same-shaped float arrays with a fixed kernel and weights (one per scale).

    ``first_moments``: the first scale's :func:`_local_moments` if already computed (same kernel and sigma), or
    those of a larger image cropped to this one (only their interior is used).
    """
    factors = []
    for i in range(len(weights)):
        moments = first_moments if i == 0 and first_moments is not None else _local_moments(p, r, kernel_size, sigma)
        cs_mean, ssim_mean = _cs_and_ssim_means(moments, data_range, kernel_size)
        del moments
        factors.append(max(cs_mean, 0.0))
        if i < len(weights) - 1:
            p, r = _avg_pool2(p), _avg_pool2(r)
    factors[-1] = max(ssim_mean, 0.0)
    return float(np.prod(np.asarray(factors) ** np.asarray(weights)))


def ms_ssim(
    pred: Any,
    ref: Any,
    mask: Any = None,
    data_range: float = 1.0,
    kernel_size: int | None = None,
    weights: Sequence[float] | None = None,
    sigma: float = 1.5,
) -> float:
    """Multi-scale SSIM (Wang et al. 2003) of 2D/3D images; with a mask, on the mask's bounding box.

    Same formula as ``monai.metrics.MultiScaleSSIMMetric`` (see the module docstring). ``kernel_size`` and
    ``weights`` default to :func:`ms_ssim_setup` for the (cropped) image shape.
    """
    p, r = as_pair(pred, ref, None)
    m = as_mask(mask, p.shape)
    if m is not None:
        box = _bbox(m)
        p, r = p[box], r[box]
    if kernel_size is None or weights is None:
        k, w = ms_ssim_setup(p.shape, kernel_size or 11)
        kernel_size, weights = kernel_size or k, weights or w
    return _ms_ssim(p, r, data_range, kernel_size, sigma, weights)
