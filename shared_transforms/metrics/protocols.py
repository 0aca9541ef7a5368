"""Paper protocols: a bundle's numbers computed the way its paper computed them, so its table can be compared.

:data:`PROTOCOLS` names each protocol; every entry is called as ``fn(pred, ref, lpips_net=...)`` with two
``(X, Y, Z)`` volumes on the [0, 1] scale and returns a flat dict of CSV-friendly values (the evaluation handler
:class:`shared_transforms.engine.evaluation.VolumeMetricsSaver` adds them to each volume's row, prefixed by the name).

- ``cfm``: :func:`protocol_cfm`, the evaluation of Nguyen & Eldaly 2025, "Low-Field MR Image Quality Enhancement
  using a Conditional Flow Matching Model" (arXiv 2510.12408), as their public code computes it (the authors'
  ``src/utils.py``; see bundles/cfm/docs/README.md).

- ``amir``: :func:`protocol_amir`, the evaluation of the AMIR authors' code (Yang et al., MICCAI 2024, arXiv
  2405.19769; ``main_test_AMIR.py`` and ``evaluation/evaluation_metric.py`` of
  https://github.com/Yaziwel/All-In-One-Medical-Image-Restoration-via-Task-Adaptive-Routing), summarised per
  sagittal slice as seed 002 reports it (mean, median, SD, min, max; see bundles/amir/docs/README.md).

- ``fastmri``: :func:`protocol_fastmri`, fastMRI's reconstruction metrics (Zbontar et al., arXiv 1811.08839;
  ``fastmri/evaluate.py`` of https://github.com/facebookresearch/fastMRI) per volume: PSNR and SSIM with the data
  range the reference volume's maximum, NMSE; for the reconstruction bundle ``flat`` (FLAT, arXiv 2512.03020,
  reports these).

- ``diffusion_iqt``: :func:`protocol_diffusion_iqt`, the evaluation of Kim et al., "A 3D Conditional Diffusion
  Model for Image Quality Transfer" (arXiv 2311.06631; ``test.py`` of https://github.com/edshkim98/DiffusionIQT):
  each volume min-max normalised, a central crop, PSNR (data range 1) and 3D multi-scale SSIM.

A bundle that reproduces another paper brings that paper's protocol with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms.utils import get_largest_connected_component_mask
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from .core import PSNR_CAP_DB, _nmse, psnr_from_mse, slice_stats
from .inputs import _as_array, _as_pair
from .perceptual import lpips_distance
from .structural import ms_ssim, ms_ssim_setup

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
    g = _as_array(ref_slice, "ref_slice", 2)
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
    p, r = _as_pair(pred, ref, 3)
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


def _amir_gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The authors' ``create_window``: the outer product of a normalised 1D Gaussian, ``(1, 1, size, size)``."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] @ g[None, :])[None, None]


def amir_ssim_map(
    pred: torch.Tensor, ref: torch.Tensor, data_range: torch.Tensor, window_size: int = 11
) -> torch.Tensor:
    """The SSIM map of the AMIR authors' ``compute_SSIM``, per image of a batch: ``(N, H, W)`` -> ``(N, H, W)``.

    An 11x11 Gaussian window (sigma 1.5) applied by a convolution with *zero* padding of ``window_size // 2`` (so the
    border pixels see zeros), C1 = (0.01 R)^2 and C2 = (0.03 R)^2 with the per-image ``data_range`` R. MONAI's and
    scikit-image's SSIM pad differently or crop the border, hence this (float64) version of the authors' few lines.
    """
    p, r = pred.double()[:, None], ref.double()[:, None]
    w = _amir_gaussian_window(window_size).to(p.device)
    pad = window_size // 2
    mu_p, mu_r = F.conv2d(p, w, padding=pad), F.conv2d(r, w, padding=pad)
    var_p = F.conv2d(p * p, w, padding=pad) - mu_p**2
    var_r = F.conv2d(r * r, w, padding=pad) - mu_r**2
    cov = F.conv2d(p * r, w, padding=pad) - mu_p * mu_r
    dr = data_range.double().reshape(-1, 1, 1, 1)
    c1, c2 = (0.01 * dr) ** 2, (0.03 * dr) ** 2
    smap = ((2 * mu_p * mu_r + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_r**2 + c1) * (var_p + var_r + c2))
    return smap[:, 0]


def amir_ssim(pred: torch.Tensor, ref: torch.Tensor, data_range: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """The AMIR authors' SSIM per image, the mean of :func:`amir_ssim_map` over the whole map (borders included):
    ``(N, H, W)`` -> ``(N,)``."""
    return amir_ssim_map(pred, ref, data_range, window_size).mean(dim=(1, 2))


def protocol_amir(pred: Any, ref: Any, axis: int = 0, lpips_net: str | None = None) -> dict[str, Any]:
    """The AMIR authors' evaluation (see the module docstring), per 2D slice ``V[i, :, :]`` along ``axis`` (0 =
    sagittal, as seed 002 slices), summarised over the slices.

    As ``main_test_AMIR.py`` does for MRI: the prediction is de-normalised and truncated to the data range (here:
    clipped to [0, 1]; the authors' [0, 4095] is a pure scaling, to which PSNR and SSIM are invariant); per slice,
    R = max - min of the reference slice; PSNR = 10 log10(R^2 / MSE) (capped at 100 dB), SSIM by :func:`amir_ssim`,
    RMSE on the [0, 1] scale. Slices with a constant reference (R = 0: the empty slices at the edges of the field of
    view) are skipped and counted. ``lpips_net`` is accepted for the common calling convention and not used (the
    authors report no LPIPS).

    Returns ``psnr_<stat>`` and ``ssim_<stat>`` for mean / median / std (population) / min / max, ``rmse_mean``,
    ``slices_used`` and ``slices_skipped``.
    """
    p, r = _as_pair(pred, ref, 3)
    p = np.moveaxis(np.clip(p, 0.0, 1.0), axis, 0).astype(np.float64)
    r = np.moveaxis(r, axis, 0).astype(np.float64)
    drange = r.max(axis=(1, 2)) - r.min(axis=(1, 2))
    used = np.flatnonzero(drange > 0)
    out: dict[str, Any] = {"slices_used": int(used.size), "slices_skipped": int(r.shape[0] - used.size)}
    psnrs = ssims = rmses = np.zeros(0)
    if used.size:
        p, r, drange = p[used], r[used], drange[used]
        mse = np.mean((r - p) ** 2, axis=(1, 2))
        psnrs = np.atleast_1d(psnr_from_mse(mse, drange))
        rmses = np.sqrt(mse)
        ssims = amir_ssim(torch.from_numpy(p), torch.from_numpy(r), torch.from_numpy(drange)).numpy()
    for name, values in (("psnr", psnrs), ("ssim", ssims)):
        out.update({f"{name}_{k}": v for k, v in slice_stats(values).items()})
    out["rmse_mean"] = float(np.mean(rmses)) if used.size else float("nan")
    return out


def protocol_fastmri(pred: Any, ref: Any, axis: int = 2, lpips_net: str | None = None) -> dict[str, Any]:
    """fastMRI's metrics of one volume, as ``fastmri/evaluate.py`` computes them (see the module docstring).

    The volume is a stack of 2D slices ``V[..., i]`` along ``axis`` (2: the slices ``flat`` reconstructs). With
    ``maxval = ref.max()`` over the whole volume: ``psnr`` = skimage's ``peak_signal_noise_ratio(ref, pred,
    data_range=maxval)`` on the volume; ``ssim`` = the mean over slices of skimage's ``structural_similarity(ref_i,
    pred_i, data_range=maxval)`` (its default 7 x 7 uniform window, as fastMRI); ``nmse`` = ``||ref - pred||^2 /
    ||ref||^2``. No mask and no clipping (fastMRI scores the whole reconstruction on its own scale); a volume whose
    reference is all zero gives NaN. ``lpips_net`` is accepted for the common calling convention and not used.

    Returns ``psnr``, ``ssim``, ``nmse`` (floats).
    """
    p, r = _as_pair(pred, ref, 3)
    p = np.moveaxis(p, axis, 0).astype(np.float64)
    r = np.moveaxis(r, axis, 0).astype(np.float64)
    maxval = float(r.max())
    if maxval <= 0:
        return {"psnr": float("nan"), "ssim": float("nan"), "nmse": float("nan")}
    ssims = [structural_similarity(ri, pi, data_range=maxval) for ri, pi in zip(r, p, strict=True)]
    return {
        "psnr": float(peak_signal_noise_ratio(r, p, data_range=maxval)),
        "ssim": float(np.mean(ssims)),
        "nmse": _nmse(p, r, None),
    }


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
    p, r = _as_pair(pred, ref, 3)

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


PROTOCOLS: dict[str, Callable[..., dict[str, Any]]] = {
    "cfm": protocol_cfm,
    "diffusion_iqt": protocol_diffusion_iqt,
    "amir": protocol_amir,
    "fastmri": protocol_fastmri,
}
"""Paper protocols by name (see the module docstring for the calling convention)."""
