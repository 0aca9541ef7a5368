"""MONAI/Ignite plug-in: the masked metrics as a MONAI ``CumulativeIterationMetric`` for Ignite evaluators.

:class:`MaskedMetric` scores each item of a batch inside a mask carried as a second channel of the label;
:func:`pred_and_masked_label` is the ``output_transform`` that builds that label from an evaluator's output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

from ..errors import InputError
from .core import mae, nmse, psnr, ulf_enc_score
from .structural import ms_ssim, ssim

EVAL_MASK_KEY = "eval_mask"
"""Key under which an evaluator's postprocessing copies the mask into the engine output (see
:func:`pred_and_masked_label`)."""


class MaskedMetric(CumulativeIterationMetric):
    """A MONAI metric computing one of the metrics of :mod:`shared_transforms.metrics` per item, inside a mask
    packed into ``y``.

    ``y`` is the reference with the mask as a second channel (``y = cat([ref, mask], dim=1)``); a one-channel ``y``
    means no mask (whole image). ``y_pred`` has one channel. Works on 2D ``(B, C, H, W)`` and 3D ``(B, C, X, Y, Z)``
    batches, or lists of channel-first items. An item with an empty mask gives NaN (left out of the reduction).

    Use in an Ignite engine:
    ``IgniteMetricHandler(metric_fn=MaskedMetric("psnr"), output_transform=pred_and_masked_label)``.

    Args:
        name: "psnr", "ssim", "msssim", "mae", "nmse" or "ulf_enc".
        data_range: R of PSNR/SSIM/MS-SSIM (1 on the normalised scale).
        reduction, get_not_nans: as in MONAI's regression metrics.
        slice_axis: for 3D items, score each 2D slice along this spatial axis (0 = sagittal) and average over the
            slices whose mask is not empty (e.g. a validation set of a few selected slices, where a 3D window would
            mix slices that are not neighbours); None scores the item as one volume.
    """

    NAMES = ("psnr", "ssim", "msssim", "mae", "nmse", "ulf_enc")

    def __init__(
        self,
        name: str,
        data_range: float = 1.0,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
        slice_axis: int | None = None,
    ) -> None:
        super().__init__()
        self.slice_axis = slice_axis
        name = {"ms_ssim": "msssim"}.get(name, name)
        if name not in self.NAMES:
            raise InputError("MaskedMetric", f"unknown metric {name!r}, expected one of {self.NAMES}")
        self.name, self.data_range = name, data_range
        self.reduction, self.get_not_nans = reduction, get_not_nans

    def _one(self, p: np.ndarray, r: np.ndarray, m: np.ndarray | None) -> float:
        if self.name == "psnr":
            return psnr(p, r, m, self.data_range)
        if self.name == "ssim":
            return ssim(p, r, m, self.data_range)
        if self.name == "msssim":
            return ms_ssim(p, r, m, self.data_range)
        if self.name == "mae":
            return mae(p, r, m)
        if self.name == "nmse":
            return nmse(p, r, m)
        return ulf_enc_score(
            ssim(p, r, m, self.data_range), psnr(p, r, m, self.data_range), mae(p, r, m), nmse(p, r, m)
        )

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if y is None:
            raise InputError("y", "is missing: MaskedMetric needs the reference (and optionally the mask) as y")
        if y_pred.ndim not in (4, 5) or y_pred.shape[1] != 1:
            raise InputError("y_pred", f"has shape {tuple(y_pred.shape)}, expected (B, 1, H, W) or (B, 1, X, Y, Z)")
        if y.shape[0] != y_pred.shape[0] or y.shape[1] not in (1, 2) or y.shape[2:] != y_pred.shape[2:]:
            raise InputError(
                "y", f"has shape {tuple(y.shape)}, expected (B, 1 or 2, ...) matching {tuple(y_pred.shape)}"
            )
        values = []
        for b in range(y_pred.shape[0]):
            p = y_pred[b, 0].detach().cpu().double().numpy()
            r = y[b, 0].detach().cpu().double().numpy()
            m = (y[b, 1] > 0.5).cpu().numpy() if y.shape[1] == 2 else None
            if self.slice_axis is not None and p.ndim == 3:
                per_slice = [
                    self._one(
                        np.take(p, i, self.slice_axis),
                        np.take(r, i, self.slice_axis),
                        None if m is None else np.take(m, i, self.slice_axis),
                    )
                    for i in range(p.shape[self.slice_axis])
                    if m is None or np.take(m, i, self.slice_axis).any()
                ]
                values.append(float(np.mean(per_slice)) if per_slice else float("nan"))
                continue
            values.append(float("nan") if m is not None and not m.any() else self._one(p, r, m))
        return torch.tensor(values, dtype=torch.float32, device=y_pred.device).view(-1, 1)

    def aggregate(self, reduction: MetricReduction | str | None = None) -> Any:
        """Reduce the buffered per-item values (NaN items excluded), like MONAI's ``RegressionMetric``."""
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise TypeError("the data to aggregate must be a PyTorch Tensor.")
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f


def pred_and_masked_label(
    output: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    pred_key: str = "pred",
    label_key: str = "label",
    mask_key: str | None = EVAL_MASK_KEY,
) -> tuple[Any, Any]:
    """``output_transform`` for :class:`MaskedMetric`: ``(preds, labels with the mask as a second channel)``.

    Works on the decollated list of dicts MONAI engines produce (like ``monai.handlers.from_engine``) or on one
    batched dict. A MONAI evaluator's output holds only image/label/pred, and its postprocessing can add keys to the
    output but not overwrite batch keys there, so the mask is carried in under a new name: add
    ``CopyItemsd(keys="mask", names="eval_mask")`` to the evaluator's ``postprocessing`` (the default ``mask_key``
    is ``"eval_mask"``). ``mask_key=None`` gives one-channel labels (whole-image metrics).
    """
    items = [output] if isinstance(output, Mapping) else list(output)
    preds, labels = [], []
    for n, item in enumerate(items):
        for key in (pred_key, label_key) + ((mask_key,) if mask_key else ()):
            if key not in item:
                hint = (
                    f"; add CopyItemsd(keys='mask', names={mask_key!r}) to the evaluator's postprocessing"
                    if key == mask_key
                    else ""
                )
                raise InputError(f"engine output item {n}", f"has no key {key!r} (keys: {sorted(item)}){hint}")
        pred, label = torch.as_tensor(item[pred_key]), torch.as_tensor(item[label_key])
        if mask_key:
            mask = torch.as_tensor(item[mask_key]).to(device=label.device, dtype=label.dtype)
            label = torch.cat([label, mask], dim=1 if isinstance(output, Mapping) else 0)
        preds.append(pred)
        labels.append(label)
    if isinstance(output, Mapping):
        return preds[0], labels[0]  # batched tensors (B, C, ...)
    return preds, labels
