"""Running a model over a 3D volume: the declared interface of the project's inferers, and the 2D slice inferer.

:class:`VolumeInferer` is what the benchmark and the docs' cost columns ask an inferer for, instead of probing
attributes: the unit it computes on (``"slice"``, ``"window"``, ``"volume"``), the network evaluations per unit,
and the statistics of its last call (units in the volume, units computed, network evaluations). Every bundle inferer
derives from it: the slice inferer here, and a 3D patch inferer (diffusion_iqt) alike.


MONAI's ``SliceInferer`` runs a 2D network over every slice through a sliding window; it cannot skip empty slices
or crop a batch of slices to the head's bounding box, which for a brain volume removes a third or more of the
arithmetic. :class:`SliceInferer2D` does both and keeps MONAI's ``Inferer`` interface, ``inferer(inputs, network)``,
so MONAI's evaluators and MONAI Label call it unchanged. Bundles whose per-slice prediction is more than one network
call (a flow or diffusion sampler) subclass it and override :meth:`SliceInferer2D.predict`.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Callable

import numpy as np
import torch
from monai.inferers import Inferer
from tqdm.auto import tqdm

PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": None}


@functools.lru_cache(maxsize=None)
def fast_bfloat16(device_type: str) -> bool:
    """Whether bfloat16 arithmetic is native (fast) on this device type: CUDA with bf16 support, or a CPU with
    AMX-BF16 or AVX512-BF16 instructions (``/proc/cpuinfo``; oneDNN then runs bf16 convolutions several times
    faster than float32). Elsewhere bf16 is emulated and slower than float32."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:  # not Linux: no way to tell here, stay exact
        return False
    return ("amx_bf16" in flags or "avx512_bf16" in flags) and bool(torch.backends.mkldnn.is_available())


def resolve_precision(device: torch.device | str, precision: str = "float32") -> str:
    """``precision`` itself, or for "auto" "bfloat16" where :func:`fast_bfloat16` holds and "float32" elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bfloat16" if fast_bfloat16(torch.device(device).type) else "float32"
    return precision


def autocast(device: torch.device | str, precision: str = "float32"):
    """``torch.autocast`` on the device's type for ``precision`` ("float32" = off, "bfloat16", "float16", or "auto":
    see :func:`resolve_precision`).

    MONAI's engines only autocast on CUDA (their ``amp`` flag); bfloat16 on a recent CPU (AMX/AVX-512 BF16) runs
    convolutions several times faster, so the project's inferers take a precision of their own.
    """
    precision = resolve_precision(device, precision)
    if PRECISIONS[precision] is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=PRECISIONS[precision])


class AutocastInferer(Inferer):
    """``network(inputs, *args, **kwargs)`` under :func:`autocast`, the result cast back to float32 (a training
    inferer: the loss is then computed in float32)."""

    def __init__(self, precision: str = "float32"):
        super().__init__()
        autocast("cpu", precision)  # validate early
        self.precision = precision

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        with autocast(inputs.device, self.precision):
            out = network(inputs, *args, **kwargs)
        return out.float()


def foreground_box(fg: torch.Tensor, margin: int, divisible_by: int) -> tuple[int, int, int, int]:
    """In-plane box ``(y0, y1, z0, z1)`` around the True pixels of ``fg`` (H, W), grown by ``margin`` and to a
    multiple of ``divisible_by``, kept inside the image where possible (it may exceed a too-small image)."""
    h, w = fg.shape
    rows = torch.nonzero(fg.any(1)).flatten()
    cols = torch.nonzero(fg.any(0)).flatten()
    box = []
    for idx, size in ((rows, h), (cols, w)):
        lo, hi = int(idx[0]) - margin, int(idx[-1]) + 1 + margin
        lo, hi = max(lo, 0), min(hi, size)
        length = math.ceil((hi - lo) / divisible_by) * divisible_by
        lo = max(0, min(lo, size - length)) if length <= size else 0
        box += [lo, lo + length]
    return box[0], box[1], box[2], box[3]


class VolumeInferer(Inferer):
    """Base of the project's inferers: MONAI's ``Inferer`` (``inferer(inputs, network)``) plus a declared cost.

    Subclasses set :attr:`unit`, override :meth:`evaluations_per_unit` when a unit takes more than one network call
    (a sampler), and fill :attr:`last_stats` in each call with at least ``units`` (in the last volume),
    ``computed_units`` (those actually computed; empty ones may be skipped) and ``network_evaluations``.

    Args:
        progress: show a progress bar over the units of a volume.
    """

    unit: str = "volume"

    def __init__(self, progress: bool = False):
        super().__init__()
        self.progress = bool(progress)
        self.last_stats: dict[str, Any] = {}

    def evaluations_per_unit(self) -> int:
        """Network evaluations for one unit (1 for a single forward pass)."""
        return 1

    def reset_stats(self) -> None:
        """Forget the last call's statistics."""
        self.last_stats = {}


def thick_axis(original_affine, affine, min_ratio: float = 1.2) -> int | None:
    """The array axis of the current grid (``affine``) that runs along the acquisition's thick voxel axis.

    ``original_affine`` is the affine of the file as acquired (MONAI keeps it in the meta as ``original_affine``
    through orientation and resampling): its voxel axis with the largest spacing is the slice direction. Returns the
    axis of ``affine`` whose world direction is closest to it, or None when the acquisition is near-isotropic
    (largest / smallest spacing below ``min_ratio``).
    """
    orig = np.asarray(original_affine, dtype=np.float64)[:3, :3]
    cur = np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(orig, axis=0)
    if spacing.max() < min_ratio * spacing.min():
        return None
    direction = orig[:, int(np.argmax(spacing))] / spacing.max()
    return int(np.argmax(np.abs(direction @ (cur / np.linalg.norm(cur, axis=0)))))


def slicing_plan(thick: int | None, default_dim: int = 0) -> tuple[int, bool]:
    """``(spatial_dim, transpose)`` that put the thick axis inside the slice plane, along its second (width) axis.

    A 2D model trained on slices whose thick axis lies along the width (sagittal slices of an axial acquisition)
    then sees every acquisition the same way: ``default_dim`` unless the thick axis is that one (then the next axis),
    and the slice transposed when the thick axis would lie along the height. ``thick`` None keeps ``default_dim``.
    """
    if thick is None:
        return default_dim, False
    dim = default_dim if thick != default_dim else (default_dim + 1) % 3
    height_axis = min(a for a in range(3) if a != dim)
    return dim, thick == height_axis


def orthogonal_plan(spatial_dim: int, transpose: bool) -> tuple[int, bool]:
    """The other slicing that keeps the same axis along the slice width as ``(spatial_dim, transpose)`` does (the
    acquisition's thick axis, for a plan from :func:`slicing_plan`): slice along the remaining in-plane axis instead.
    For an axial scan, sagittal slices ``(0, False)`` and coronal ones ``(1, False)``, both with z along the width."""
    height, width = (a for a in range(3) if a != spatial_dim)
    thick = height if transpose else width
    other = height if thick == width else width
    return other, thick == min(spatial_dim, thick)


#: A volume with at most this many voxels along one axis (and at least 8 times more along the other two) is a
#: single slice or a thin slab (e.g. a real scan's 4 slices): 2D models enhance it in its own plane.
THIN_SLAB_MAX_SLICES = 8


def thin_slab_axis(spatial_shape) -> int | None:
    """The slice axis of a single slice or thin slab of shape ``(X, Y, Z)`` (see :data:`THIN_SLAB_MAX_SLICES`), or
    None for a volume."""
    shape = [int(s) for s in spatial_shape][-3:]
    axis = int(np.argmin(shape))
    others = [s for a, s in enumerate(shape) if a != axis]
    if shape[axis] <= THIN_SLAB_MAX_SLICES and min(others) >= 8 * shape[axis]:
        return axis
    return None


def acquisition_plan(img: torch.Tensor, index: int | None = None, default_dim: int = 0) -> tuple[int, bool]:
    """:func:`slicing_plan` of a MetaTensor (or, with ``index``, of one volume of a batched MetaTensor) from its meta:
    ``original_affine`` (the file as acquired) against ``affine``. Without that meta: ``(default_dim, False)``.
    A single slice or thin slab (:func:`thin_slab_axis`) is sliced along its thin axis: in its own plane."""
    slab = thin_slab_axis(img.shape[-3:])
    if slab is not None:
        return slab, False
    meta = getattr(img, "meta", None) or {}
    original, affine = meta.get("original_affine"), getattr(img, "affine", None)
    if original is None or affine is None:
        return default_dim, False
    original, affine = torch.as_tensor(original), torch.as_tensor(affine)
    if index is not None:
        original = original[index] if original.ndim == 3 else original
        affine = affine[index] if affine.ndim == 3 else affine
    return slicing_plan(thick_axis(original.cpu().numpy(), affine.cpu().numpy()), default_dim)


class SliceInferer2D(VolumeInferer):
    """Apply a 2D predictor to every slice along ``spatial_dim`` of ``(B, C, X, Y, Z)`` volumes, in batches.

    Slices whose maximum is at most ``empty_threshold`` are not computed (their output is 0, the normalised
    background); the other slices are cropped to the joint in-plane bounding box of the volume's content plus
    ``margin_vox``, padded with zeros to a multiple of ``divisible_by`` (U-Nets with three 2x downsamplings need 8),
    predicted ``slice_batch_size`` at a time, and pasted back.

    Args:
        spatial_dim: 0, 1 or 2 (0 = sagittal slices ``V[x, :, :]`` for RAS volumes), or "auto": per volume from the
            input's meta (``original_affine`` against ``affine``), so that the acquisition's thick axis lies in the
            slice plane along its width (:func:`thick_axis`, :func:`slicing_plan`; sagittal slices for an axial or
            near-isotropic scan, coronal ones for a sagittal scan, transposed sagittal ones for a coronal scan). A
            tensor without that meta is sliced sagittally.
        progress: show a progress bar over slice batches.
        precision: "float32", or "bfloat16"/"float16" to run :meth:`predict` under autocast.
        orthogonal_average: also slice along the other axis that keeps the thick axis in the slice plane
            (:func:`orthogonal_plan`) and return the mean of the two predictions (twice the work).
    Returns (call):
        ``(B, C_out, X, Y, Z)`` on the inputs' device and dtype.
    During a :meth:`predict` call, :attr:`slice_positions` is ``(indices, n_slices)``: where the slices of the batch
    lie along the slicing axis, and how many slices the volume has (a sampler that draws noise correlated across
    slices reads it).
    Statistics (:attr:`last_stats`, of the last volume): ``units``/``computed_units`` (slices), ``box_hw`` (the
    in-plane crop), ``image_hw``, ``network_evaluations``, ``spatial_dim`` and ``transposed`` (the slicing used;
    with ``orthogonal_average`` the first slicing's, with the counts of both added up and ``orthogonal_dim``).
    """

    unit = "slice"

    def __init__(
        self,
        slice_batch_size: int = 8,
        spatial_dim: int | str = 0,
        divisible_by: int = 8,
        empty_threshold: float = 1e-3,
        margin_vox: int = 8,
        progress: bool = False,
        precision: str = "float32",
        orthogonal_average: bool = False,
    ):
        super().__init__(progress=progress)
        autocast("cpu", precision)  # validate early
        self.precision = precision
        self.orthogonal_average = bool(orthogonal_average)
        if spatial_dim not in (0, 1, 2, "auto"):
            raise ValueError(f"spatial_dim must be 0, 1, 2 or 'auto', got {spatial_dim!r}")
        self.slice_batch_size = int(slice_batch_size)
        self.spatial_dim = spatial_dim
        self.divisible_by = int(divisible_by)
        self.empty_threshold = float(empty_threshold)
        self.margin_vox = int(margin_vox)
        self.slice_positions: tuple[torch.Tensor, int] | None = None

    def predict(self, slices: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        """``(N, C, H, W)`` slices -> ``(N, C_out, H, W)``; H and W are multiples of ``divisible_by``."""
        return network(slices, *args, **kwargs)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        if inputs.ndim != 5:
            raise ValueError(f"SliceInferer2D expects (B, C, X, Y, Z) volumes, got shape {tuple(inputs.shape)}")
        plans = [self._plan(inputs, b) for b in range(inputs.shape[0])]
        inputs = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        outs = [self._averaged(vol, network, plan, *args, **kwargs) for vol, plan in zip(inputs, plans, strict=True)]
        return torch.stack(outs, 0)

    def _averaged(self, vol: torch.Tensor, network, plan: tuple[int, bool], *args, **kwargs) -> torch.Tensor:
        """One volume along ``plan``, or the mean over ``plan`` and :func:`orthogonal_plan` of it."""
        out = self._volume(vol, network, *plan, *args, **kwargs)
        if not self.orthogonal_average or thin_slab_axis(vol.shape[-3:]) is not None:  # a slab has one plane
            return out
        first = self.last_stats
        other = orthogonal_plan(*plan)
        out = 0.5 * (out + self._volume(vol, network, *other, *args, **kwargs))
        second = self.last_stats
        self.last_stats = {
            **first,
            "orthogonal_dim": other[0],
            **{k: first[k] + second[k] for k in ("units", "computed_units", "network_evaluations")},
        }
        return out

    def _plan(self, inputs: torch.Tensor, index: int) -> tuple[int, bool]:
        """``(spatial_dim, transpose)`` for volume ``index`` of the batch."""
        if self.spatial_dim != "auto":
            return int(self.spatial_dim), False
        return acquisition_plan(inputs, index)

    def _volume(self, vol: torch.Tensor, network, spatial_dim: int, transpose: bool, *args, **kwargs) -> torch.Tensor:
        slices = vol.movedim(spatial_dim + 1, 0)  # (S, C, H, W)
        if transpose:
            slices = slices.transpose(-1, -2)
        n_slices, _, h, w = slices.shape
        content = slices.amax(dim=1) > self.empty_threshold  # (S, H, W)
        keep = torch.nonzero(content.flatten(1).any(1)).flatten()
        self.last_stats = {
            "units": n_slices,
            "computed_units": int(keep.numel()),
            "box_hw": (0, 0),
            "image_hw": (h, w),
            "network_evaluations": int(keep.numel()) * self.evaluations_per_unit(),
            "spatial_dim": spatial_dim,
            "transposed": transpose,
        }
        out: torch.Tensor | None = None
        if keep.numel() > 0:
            y0, y1, z0, z1 = foreground_box(content[keep].any(0), self.margin_vox, self.divisible_by)
            bh, bw = y1 - y0, z1 - z0
            self.last_stats["box_hw"] = (bh, bw)
            batches = list(torch.split(keep, self.slice_batch_size))
            for batch in tqdm(batches, desc="slices", unit="batch", disable=not self.progress, leave=False):
                self.slice_positions = (batch, n_slices)
                x = slices[batch][:, :, y0:y1, z0:z1]
                ph, pw = bh - x.shape[-2], bw - x.shape[-1]  # only when the image is smaller than the box
                if ph or pw:
                    x = torch.nn.functional.pad(x, (0, pw, 0, ph))
                with autocast(x.device, self.precision):
                    pred = self.predict(x.contiguous(), network, *args, **kwargs)
                pred = pred[..., : bh - ph, : bw - pw]
                if out is None:
                    out = slices.new_zeros((n_slices, pred.shape[1], h, w))
                out[batch, :, y0 : y0 + pred.shape[-2], z0 : z0 + pred.shape[-1]] = pred.to(out.dtype)
        if out is None:  # nothing to compute: the output has the input's channel count
            out = torch.zeros_like(slices)
        if transpose:
            out = out.transpose(-1, -2)
        return out.movedim(0, spatial_dim + 1)
