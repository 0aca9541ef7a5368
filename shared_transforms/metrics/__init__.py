"""The project's yardstick: image-quality metrics every bundle and the benchmark tool report.

Inputs are a prediction, a reference and an optional brain mask, as 3D volumes ``(X, Y, Z)`` (numpy or torch; a
leading channel/batch of size 1 is accepted and dropped) with intensities on the normalised [0, 1] scale, so the
default ``data_range`` is 1. Sagittal slices are ``V[x, :, :]`` (axis 0). The generic metrics (:func:`psnr`,
:func:`ssim`, :func:`ms_ssim`, :func:`mae`, :func:`nmse`) also take 2D images ``(H, W)``.

What "inside the mask" means (``mask`` is boolean, or > 0.5):

- PSNR, MAE, NMSE: computed over the voxels in the mask only.
- SSIM: the SSIM map (scikit-image's, Gaussian window 11, sigma 1.5; its interior is MONAI's map) averaged over the
  mask voxels. The map is "same"-sized (mirror padding at the image border), so mask voxels near the border count
  too. Whole-image SSIM averages the interior of the map only (no padding involved), which is exactly
  ``monai.metrics.SSIMMetric``.
- MS-SSIM: computed on the mask's bounding box (the crop of both images to the smallest box holding the mask; the
  voxels outside the mask but inside the box are kept): a multi-scale window does not have a per-voxel map.
- LPIPS: both images multiplied by the mask (background set to 0), on the slices where the mask is not empty.

PSNR is capped at :data:`PSNR_CAP_DB` = 100 dB everywhere (identical images give exactly 100, never ``inf``).

Modules, one job each:

- :mod:`.inputs`: array, pair and mask checks;
- :mod:`.core`: PSNR, MAE, NMSE, the ULF-EnC score, per-slice metrics and their statistics;
- :mod:`.structural`: SSIM map, SSIM, MS-SSIM;
- :mod:`.consistency`: the striping index (slice consistency of a volume made slice by slice);
- :mod:`.tissue`: the default mask and the tissue-segmentation check;
- :mod:`.perceptual`: LPIPS;
- each paper's own evaluation protocol lives in its bundle (``bundles/<name>/scripts/protocol.py``);
- :mod:`.volume`: :func:`evaluate_volume`, the project's standard set with flat CSV-friendly keys;
- :mod:`.ignite_adapter`: :class:`MaskedMetric` and :func:`pred_and_masked_label` for MONAI/Ignite evaluators.
"""

from __future__ import annotations

from .consistency import striping_index, striping_ratio
from .core import PSNR_CAP_DB, mae, nmse, per_slice_metrics, psnr, psnr_from_mse, slice_stats, ulf_enc_score
from .ignite_adapter import EVAL_MASK_KEY, MaskedMetric, pred_and_masked_label
from .perceptual import LPIPS_BACKBONE_FILES, lpips_checkpoint_path, lpips_distance
from .structural import MS_SSIM_WEIGHTS, ms_ssim, ms_ssim_setup, ssim, ssim_map
from .tissue import TISSUE_CLASSES, tissue_overlap, tissue_segmentation
from .volume import evaluate_volume

__all__ = [
    "EVAL_MASK_KEY",
    "LPIPS_BACKBONE_FILES",
    "MS_SSIM_WEIGHTS",
    "PSNR_CAP_DB",
    "TISSUE_CLASSES",
    "MaskedMetric",
    "evaluate_volume",
    "lpips_checkpoint_path",
    "lpips_distance",
    "mae",
    "ms_ssim",
    "ms_ssim_setup",
    "nmse",
    "per_slice_metrics",
    "pred_and_masked_label",
    "psnr",
    "psnr_from_mse",
    "slice_stats",
    "ssim",
    "ssim_map",
    "striping_index",
    "striping_ratio",
    "tissue_overlap",
    "tissue_segmentation",
    "ulf_enc_score",
]
