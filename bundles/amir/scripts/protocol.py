"""This bundle's paper protocol: its numbers computed the way the paper computed them, so its table can be
compared. Called by the evaluation handler (``evaluate.json``: ``validate#metrics_saver#protocols``; see
:class:`shared_transforms.engine.evaluation.VolumeMetricsSaver`) as ``fn(pred, ref, lpips_net=...)`` with two
``(X, Y, Z)`` volumes on the [0, 1] scale; returns a flat dict of CSV-friendly values.

``amir``: :func:`protocol_amir`, the evaluation of the AMIR authors' code (Yang et al., MICCAI 2024, arXiv
  2405.19769; ``main_test_AMIR.py`` and ``evaluation/evaluation_metric.py`` of
  https://github.com/Yaziwel/All-In-One-Medical-Image-Restoration-via-Task-Adaptive-Routing), summarised per
  sagittal slice as seed 002 reports it (mean, median, SD, min, max; see bundles/amir/docs/README.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from shared_transforms.metrics.core import psnr_from_mse, slice_stats
from shared_transforms.metrics.inputs import as_pair


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
    p, r = as_pair(pred, ref, 3)
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
