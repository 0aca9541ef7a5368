"""The project's standard metric set for one predicted volume: :func:`evaluate_volume`, flat CSV-friendly keys."""

from __future__ import annotations

from typing import Any

from scipy import ndimage

from ..errors import InputError
from ..transforms.intensity import head_mask_from_intensity
from .core import _mae, _nmse, _per_slice, _psnr, slice_stats, ulf_enc_score
from .inputs import _bbox, as_mask, as_pair
from .perceptual import lpips_distance
from .structural import _interior, _local_moments, _ms_ssim, _skimage_ssim_map, ms_ssim_setup
from .tissue import _default_mask, _tissue_overlap


def evaluate_volume(
    pred: Any,
    ref: Any,
    mask: Any = None,
    lpips_net: str | None = "alex",
    data_range: float = 1.0,
    slice_axis: int = 0,
    lpips_max_slices: int | None = 32,
) -> dict[str, Any]:
    """The project's standard metric set for one predicted volume, as a flat dict of CSV-friendly values.

    Args:
        pred, ref: ``(X, Y, Z)`` volumes (numpy or torch; leading size-1 axes dropped) on the normalised [0, 1] scale.
        mask: optional ``(X, Y, Z)`` brain mask; without one,
            :func:`shared_transforms.transforms.intensity.brain_mask_from_intensity` of the reference (closing radius 2
            voxels, 26-connected) is used (``mask_source`` says which).
        lpips_net: "alex", "vgg", "squeeze" or None (not computed).
        data_range: R for PSNR and SSIM (1 on the normalised scale).
        slice_axis: slices for the per-slice statistics (0 = sagittal).
        lpips_max_slices: LPIPS on at most this many evenly spaced slices (None: all).

    Returns keys:
        ``mask_source``, ``mask_voxels``; ``psnr``, ``ssim``, ``msssim``, ``mae``, ``nmse`` (whole volume, 3D) and
        the same with ``_mask`` (inside the mask, see :mod:`shared_transforms.metrics`); ``msssim_scales``,
        ``msssim_kernel``, ``msssim_mask_scales``, ``msssim_mask_kernel``; ``psnr_slice_<stat>``,
        ``ssim_slice_<stat>`` over the 2D slices inside the mask (stat: mean/median/std/min/max), ``slices_used``,
        ``slices_skipped``; ``ulf_enc``; ``tissue_miou``, ``tissue_mdice``, ``tissue_iou_<csf|gm|wm>``,
        ``tissue_dice_<csf|gm|wm>``; ``air_mean``: the prediction's mean in the air, outside the reference's head
        (:func:`shared_transforms.transforms.intensity.head_mask_from_intensity`, dilated by 3 voxels), where the
        reference is black: background noise a method lets through (0 is clean; NaN when the volume has no air);
        ``lpips``, ``lpips_mask`` (None when not computed) and ``lpips_status``.
    """
    p, r = as_pair(pred, ref, 3)
    if mask is None:
        m, source = _default_mask(r), "reference_threshold"
    else:
        m, source = as_mask(mask, p.shape), "given"
    out: dict[str, Any] = {"mask_source": source, "mask_voxels": int(m.sum())}

    for suffix, sel in (("", None), ("_mask", m)):
        out[f"psnr{suffix}"] = _psnr(p, r, sel, data_range)
        out[f"mae{suffix}"] = _mae(p, r, sel)
        out[f"nmse{suffix}"] = _nmse(p, r, sel)

    smap = _skimage_ssim_map(p, r, data_range)
    out["ssim"] = float(_interior(smap, 11).mean())
    out["ssim_mask"] = float(smap[m].mean())
    del smap

    # MS-SSIM: whole volume and on the mask's bounding box; the box's first scale reuses the whole volume's local
    # moments (its valid map only sees windows inside the box, where the two agree exactly)
    box, whole_moments = _bbox(m), None
    for suffix, (pv, rv) in (("", (p, r)), ("_mask", (p[box], r[box]))):
        try:
            kernel, weights = ms_ssim_setup(pv.shape)
        except InputError:
            out[f"msssim{suffix}"], out[f"msssim{suffix}_scales"], out[f"msssim{suffix}_kernel"] = float("nan"), 0, 0
            continue
        if whole_moments is None and kernel == 11:
            whole_moments = _local_moments(p, r, 11, 1.5)
        first = None if kernel != 11 else [v[box] for v in whole_moments] if suffix else whole_moments
        out[f"msssim{suffix}"] = _ms_ssim(pv, rv, data_range, kernel, 1.5, weights, first)
        out[f"msssim{suffix}_scales"], out[f"msssim{suffix}_kernel"] = len(weights), kernel
    del whole_moments

    slices = _per_slice(p, r, m, slice_axis, data_range)
    for name in ("psnr", "ssim"):
        out.update({f"{name}_slice_{k}": v for k, v in slice_stats(slices[name]).items()})
    out["slices_used"], out["slices_skipped"] = int(slices["index"].size), slices["skipped"]

    out["ulf_enc"] = ulf_enc_score(out["ssim_mask"], out["psnr_mask"], out["mae_mask"], out["nmse_mask"])
    out.update(_tissue_overlap(p, r, m))
    air = ~ndimage.binary_dilation(head_mask_from_intensity(r), iterations=3)
    out["air_mean"] = float(p[air].mean()) if air.any() else float("nan")

    if lpips_net is None:
        out["lpips"], out["lpips_mask"], out["lpips_status"] = None, None, "not requested"
    else:
        kw = {"net": lpips_net, "axis": slice_axis, "max_slices": lpips_max_slices}
        out["lpips"], out["lpips_status"] = lpips_distance(p, r, **kw)
        out["lpips_mask"], _ = lpips_distance(p, r, m, **kw)
    return out
