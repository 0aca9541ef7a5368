"""The core metrics: PSNR, MAE, NMSE (whole image or inside a mask), the ULF-EnC score, and per-slice metrics.

PSNR is capped at :data:`PSNR_CAP_DB` = 100 dB (identical images give exactly 100, never ``inf``), so averages and
standard deviations over slices or subjects stay finite. Per-volume PSNR and MAE are ``monai.metrics.PSNRMetric`` /
``MAEMetric`` (masked by passing only the mask voxels); NMSE (MONAI has none) and the per-slice statistics, which
score every slice of a volume at once with array reductions, are written here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.metrics import MAEMetric, PSNRMetric

from .inputs import as_mask, as_pair
from .structural import _interior, _skimage_ssim_map

PSNR_CAP_DB = 100.0
"""Upper bound of every PSNR returned here (MSE 0 gives exactly this value instead of ``inf``)."""

SLICE_STATS = ("mean", "median", "std", "min", "max")


def psnr_from_mse(mse: float | np.ndarray, data_range: float | np.ndarray = 1.0) -> float | np.ndarray:
    """PSNR = 10 log10(R^2 / MSE) in dB, capped at :data:`PSNR_CAP_DB` (MSE 0 gives the cap). NaN MSE stays NaN."""
    mse = np.asarray(mse, dtype=np.float64)
    with np.errstate(divide="ignore"):
        value = 10.0 * np.log10(np.asarray(data_range, dtype=np.float64) ** 2 / mse)
    value = np.minimum(value, PSNR_CAP_DB)
    return float(value) if value.ndim == 0 else value


def _selected(p: np.ndarray, r: np.ndarray, m: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The (masked) voxels as batch-first (1, 1, N) float64 tensors for MONAI's regression metrics."""
    if m is not None:
        p, r = p[m], r[m]
    return (
        torch.from_numpy(np.ascontiguousarray(p).reshape(1, 1, -1)),
        torch.from_numpy(np.ascontiguousarray(r).reshape(1, 1, -1)),
    )


def _psnr(p: np.ndarray, r: np.ndarray, m: np.ndarray | None, data_range: float) -> float:
    return float(min(float(PSNRMetric(max_val=data_range)(*_selected(p, r, m))), PSNR_CAP_DB))


def _mae(p: np.ndarray, r: np.ndarray, m: np.ndarray | None) -> float:
    return float(MAEMetric()(*_selected(p, r, m)))


def _nmse(p: np.ndarray, r: np.ndarray, m: np.ndarray | None) -> float:
    if m is not None:
        p, r = p[m], r[m]
    denom = float(np.sum(r * r))
    return float(np.sum((r - p) ** 2) / denom) if denom > 0 else float("nan")


def psnr(pred: Any, ref: Any, mask: Any = None, data_range: float = 1.0) -> float:
    """PSNR in dB over the whole image or over the mask voxels (``monai.metrics.PSNRMetric``), capped at 100 dB.

    Args:
        pred, ref: 2D ``(H, W)`` or 3D ``(X, Y, Z)`` images of the same shape. mask: optional, same shape.
        data_range: the peak value R of 10 log10(R^2 / MSE); 1 on the normalised scale.
    """
    p, r = as_pair(pred, ref, None)
    return _psnr(p, r, as_mask(mask, p.shape), data_range)


def mae(pred: Any, ref: Any, mask: Any = None) -> float:
    """Mean absolute error over the whole image or the mask voxels (``monai.metrics.MAEMetric``)."""
    p, r = as_pair(pred, ref, None)
    return _mae(p, r, as_mask(mask, p.shape))


def nmse(pred: Any, ref: Any, mask: Any = None) -> float:
    """Normalised MSE ||ref - pred||^2 / ||ref||^2 over the whole image or the mask voxels (NaN if ref is 0 there)."""
    p, r = as_pair(pred, ref, None)
    return _nmse(p, r, as_mask(mask, p.shape))


def ulf_enc_score(ssim_value: float, psnr_db: float, mae_value: float, nmse_value: float) -> float:
    """ULF-EnC challenge score 0.7 SSIM + 0.1 PSNR/32 + 0.1 (1 - MAE) + 0.1 (1 - NMSE), from the four masked
    metrics (the challenge's own scoring code was not available to check the formula against)."""
    return 0.7 * ssim_value + 0.1 * psnr_db / 32.0 + 0.1 * (1.0 - mae_value) + 0.1 * (1.0 - nmse_value)


def slice_stats(values: Any) -> dict[str, float]:
    """mean, median, std (population, ddof=0), min, max of per-slice values (NaN when there are none)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {k: float("nan") for k in SLICE_STATS}
    return {
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def per_slice_metrics(
    pred: Any,
    ref: Any,
    mask: Any = None,
    axis: int = 0,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
) -> dict[str, Any]:
    """PSNR, SSIM, MAE and NMSE of each 2D slice ``V[i, :, :]`` (``axis`` 0 = sagittal), inside the mask if given.

    Inside the mask follows the per-volume definitions (mask voxels of the slice; SSIM = 2D map averaged over the
    slice's mask voxels); without a mask, SSIM is the 2D valid-map mean (``SSIMMetric(spatial_dims=2)`` per slice).
    A slice is skipped when its mask is empty or the reference is all zero there (no signal to compare).

    Args:
        pred, ref: ``(X, Y, Z)`` volumes. mask: optional ``(X, Y, Z)``.

    Returns:
        ``{"index": used slice indices, "psnr", "ssim", "mae", "nmse": arrays over the used slices,
        "skipped": number of skipped slices}``.
    """
    p, r = as_pair(pred, ref, 3)
    return _per_slice(p, r, as_mask(mask, p.shape), axis, data_range, win_size, sigma)


def _per_slice(
    p: np.ndarray,
    r: np.ndarray,
    m: np.ndarray | None,
    axis: int,
    data_range: float,
    win_size: int = 11,
    sigma: float = 1.5,
) -> dict[str, Any]:
    """:func:`per_slice_metrics` on checked float arrays and a boolean mask (or None), all slices at once."""
    p, r = np.moveaxis(p, axis, 0), np.moveaxis(r, axis, 0)
    n_slices, plane = p.shape[0], p.shape[1] * p.shape[2]

    def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # per-slice sum of a * b
        return np.einsum("ijk,ijk->i", a, b)

    diff = r - p
    if m is None:
        count = np.full(n_slices, plane, dtype=np.int64)
        ref_energy = dot(r, r)
    else:
        m = np.moveaxis(m, axis, 0)
        count = m.sum(axis=(1, 2))
        diff *= m
        rm = r * m
        ref_energy = dot(rm, rm)
        del rm
    used = np.flatnonzero((count > 0) & (ref_energy > 0))
    sq = dot(diff, diff)
    ab = np.abs(diff, out=diff).sum(axis=(1, 2))
    del diff
    smap2d = _skimage_ssim_map(p, r, data_range, win_size, sigma, channel_axis=0)
    if m is None:
        ssim_values = _interior(smap2d, win_size, axes=(1, 2)).mean(axis=(1, 2))
    else:
        ssim_values = dot(smap2d, m.astype(smap2d.dtype))
    with np.errstate(divide="ignore", invalid="ignore"):
        mse, mae_values, nmse_values = sq / count, ab / count, sq / ref_energy
        ssim_values = ssim_values if m is None else ssim_values / count
    return {
        "index": used,
        "skipped": int(n_slices - used.size),
        "psnr": np.asarray(psnr_from_mse(mse[used], data_range), dtype=np.float64).reshape(-1),
        "ssim": ssim_values[used],
        "mae": mae_values[used],
        "nmse": nmse_values[used],
    }
