"""Sampling a whole volume with DiffusionIQT: 96³ windows of 27 jointly sampled sub-patches, or the whole volume at
once as one cross-batch.

``inferer(inputs, network)``: ``inputs`` ``(B, 1, X, Y, Z)``, the low field on the target grid in [0, 1]; returns
``(B, 1, X, Y, Z)`` in [0, 1], or ``(B, 2, X, Y, Z)`` (mean, per-voxel std;
:mod:`shared_transforms.inference.uncertainty`) with ``num_samples`` > 1. The network works in [-1, 1]
(:func:`to_model_range`).

- ``mode="windows"`` (the paper): MONAI's ``SlidingWindowInferer`` over ``window_size``³ windows with ``overlap``;
  each window is cut into ``factor³`` sub-patches (:func:`scripts.cross_batch.split`) that the sampler denoises
  together, so the sub-patches of a window share attention and padding. The authors stitch windows by keeping each
  window's centre (a 16-voxel margin); MONAI's Gaussian blending of overlapping windows is used instead.
- ``mode="whole"`` (past the paper): the whole volume, padded to ``factor * m`` per axis (``m`` a multiple of
  ``sub_multiple``), is one cross-batch of ``factor³`` sub-patches of ``m`` voxels a side: no windows (the
  sub-patch borders are measured by the repository's ``tools/studies/diffusion_iqt_seams.py``), when the memory
  allows it (the activations grow with the volume).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from monai.data.utils import dense_patch_slices
from monai.inferers import SlidingWindowInferer
from monai.inferers.utils import _get_scan_interval
from tqdm.auto import tqdm

from shared_transforms.inference.inferers import VolumeInferer, autocast, resolve_precision
from shared_transforms.transforms.intensity import from_model_range, to_model_range

from .diffusion import SAMPLERS, sample

__all__ = ["DiffusionIQTInferer"]

MODES = ("windows", "whole")


class DiffusionIQTInferer(VolumeInferer):
    """See the module docstring.

    Args:
        num_steps: sampler steps from t = 1 to 0 (the authors' evaluation: 20).
        sampler: ``"ancestral"`` or ``"ddim"`` (:mod:`scripts.diffusion`).
        num_samples: K samples per volume; K > 1 gives the mean and the std.
        seed: the samples' noise (sample k uses ``seed + k``).
        mode: ``"windows"`` or ``"whole"``.
        window_size, overlap, sw_batch_size: the sliding window (``window_size`` divisible by ``factor``).
        factor: sub-patches per axis (the network's ``cross_batch_factor``).
        sub_multiple: in ``"whole"`` mode, sub-patch sizes are a multiple of this (two downsamplings and the
            attention patches of the default network need 8).
        min_bound: lower clamp of the predicted clean image in the model range (-1: the background).
        precision: the network's arithmetic, as :func:`shared_transforms.inference.inferers.autocast` ("auto": bfloat16
            where it is fast); the sampler's own arithmetic stays float32.
        skip_background: windows whose condition is all background (0) are not sampled; their output is 0.
        progress: a progress bar over windows x steps.
    """

    def __init__(
        self,
        num_steps: int = 20,
        sampler: str = "ancestral",
        num_samples: int = 1,
        seed: int = 0,
        mode: str = "windows",
        window_size: int = 96,
        overlap: float = 0.25,
        sw_batch_size: int = 1,
        factor: int = 3,
        sub_multiple: int = 8,
        min_bound: float | None = -1.0,
        precision: str = "float32",
        skip_background: bool = True,
        progress: bool = False,
    ):
        super().__init__(progress=progress)
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if window_size % factor:
            raise ValueError(f"window_size {window_size} must be divisible by factor {factor}")
        if int(num_samples) < 1 or int(num_steps) < 1:
            raise ValueError(f"num_samples and num_steps must be >= 1, got {num_samples}, {num_steps}")
        self.num_steps, self.sampler, self.num_samples, self.seed = int(num_steps), sampler, int(num_samples), int(seed)
        self.mode, self.window_size, self.overlap, self.sw_batch_size = mode, int(window_size), overlap, sw_batch_size
        self.factor, self.sub_multiple, self.min_bound = int(factor), int(sub_multiple), min_bound
        resolve_precision("cpu", precision)  # validates the name now, not after loading a volume
        self.precision, self.skip_background = precision, bool(skip_background)
        self.unit = "window" if mode == "windows" else "volume"

    def evaluations_per_unit(self) -> int:
        """One network call (on all ``factor³`` sub-patches of the unit) per step and sample."""
        return self.num_steps * self.num_samples

    def _sample_patch(
        self, condition: torch.Tensor, network: Callable, generator: torch.Generator, bar: tqdm | None
    ) -> torch.Tensor:
        """``(1, 1, f*a, f*b, f*c)`` condition in the model range -> one joint sample of its ``f³`` sub-patches (the
        network splits and merges them)."""
        if self.skip_background and bool((condition <= -1.0).all()):
            if bar is not None:
                bar.update(self.num_steps)
            return torch.full_like(condition, -1.0)

        def denoise(x: torch.Tensor, log_snr: torch.Tensor) -> torch.Tensor:
            with autocast(x.device, self.precision):
                return network(x, log_snr).float()

        out = sample(
            denoise,
            condition,
            num_steps=self.num_steps,
            sampler=self.sampler,
            min_bound=self.min_bound,
            generator=generator,
            callback=(lambda i, n: bar.update(1)) if bar is not None else None,
        )
        self.last_stats["network_evaluations"] += self.num_steps
        self.last_stats["computed_units"] += 1
        return out

    def _one_sample(self, condition: torch.Tensor, network: Callable, k: int, bar: tqdm | None) -> torch.Tensor:
        generator = torch.Generator(device=condition.device).manual_seed(self.seed + k)
        if self.mode == "whole":
            sizes = condition.shape[2:]
            padding = self._whole_padding(sizes)
            pad = []
            for s, (before, p) in reversed(list(zip(sizes, padding, strict=True))):
                pad += [before, p - s - before]
            out = self._sample_patch(F.pad(condition, pad, value=-1.0), network, generator, bar)
            return out[..., pad[4] : pad[4] + sizes[0], pad[2] : pad[2] + sizes[1], pad[0] : pad[0] + sizes[2]]

        def predictor(windows: torch.Tensor) -> torch.Tensor:  # (sw_batch, 1, W, W, W)
            return torch.cat([self._sample_patch(w[None], network, generator, bar) for w in windows])

        window = SlidingWindowInferer(
            roi_size=self.window_size,
            sw_batch_size=self.sw_batch_size,
            overlap=self.overlap,
            mode="gaussian",
            cval=-1.0,
            progress=False,
        )
        return window(condition, predictor)

    def _whole_padding(self, spatial_shape) -> list[tuple[int, int]]:
        """``"whole"`` mode: per axis, (voxels padded in front, padded size), the size a multiple of
        ``factor * sub_multiple`` and the padding split evenly (the extra voxel at the back)."""
        step = self.factor * self.sub_multiple
        padded = [math.ceil(int(s) / step) * step for s in spatial_shape]
        return [((p - int(s)) // 2, p) for s, p in zip(spatial_shape, padded, strict=True)]

    def _window_slices(self, spatial_shape) -> list[tuple[slice, ...]]:
        """The windows MONAI's ``sliding_window_inference`` visits on a volume of ``spatial_shape``, in the frame it
        works in (each axis padded to at least one window): MONAI's own scan interval and slices, not a copy."""
        size = [max(int(s), self.window_size) for s in spatial_shape]
        roi = [self.window_size] * len(size)
        return dense_patch_slices(size, roi, _get_scan_interval(size, roi, len(size), (self.overlap,) * len(size)))

    def _num_windows(self, shape) -> int:
        return 1 if self.mode == "whole" else len(self._window_slices(shape[2:]))

    def piece_borders(self, spatial_shape) -> list[np.ndarray]:
        """Where the pieces this inferer samples meet, for seam measurements (the repository's
        ``tools/studies/diffusion_iqt_seams.py``): per axis, the sorted indices ``i`` (``0 < i < size``) for which
        voxels ``i - 1`` and ``i`` lie in different sub-patches of a cross-batch or, in ``"windows"`` mode, on the two
        sides of a window's edge.

        ``spatial_shape``: ``(X, Y, Z)`` of the input; the indices are in that input's frame (padding removed).
        """
        borders = []
        if self.mode == "whole":
            for s, (before, padded) in zip(spatial_shape, self._whole_padding(spatial_shape), strict=True):
                sub = padded // self.factor
                edges = {k * sub - before for k in range(1, self.factor)}
                borders.append(np.array(sorted(edges & set(range(1, int(s))))))
            return borders
        slices, sub = self._window_slices(spatial_shape), self.window_size // self.factor
        for axis, s in enumerate(spatial_shape):
            before = max(self.window_size - int(s), 0) // 2  # MONAI pads a short axis on both sides
            starts = {int(w[axis].start) - before for w in slices}
            edges = {start + k * sub for start in starts for k in range(self.factor + 1)}
            borders.append(np.array(sorted(edges & set(range(1, int(s))))))
        return borders

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        if inputs.dim() != 5 or inputs.shape[1] != 1:
            raise ValueError(f"expected a (B, 1, X, Y, Z) low-field volume, got {tuple(inputs.shape)}")
        # a plain tensor: the output carries no batch meta, which MONAI's post-transforms would trip over
        inputs = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        units = self._num_windows(inputs.shape)
        self.last_stats = {"units": units, "computed_units": 0, "network_evaluations": 0}
        total = inputs.shape[0] * self.num_samples * units * self.num_steps
        bar = tqdm(total=total, desc=f"diffusion ({self.unit}s x steps)", disable=not self.progress, leave=False)
        outs = []
        with torch.no_grad():
            for b in range(inputs.shape[0]):
                condition = to_model_range(inputs[b : b + 1].float())
                samples = [
                    from_model_range(self._one_sample(condition, network, k, bar), clip=True)
                    for k in range(self.num_samples)
                ]
                stack = torch.stack(samples)  # (K, 1, 1, X, Y, Z)
                outs.append(stack[0] if self.num_samples == 1 else torch.cat([stack.mean(0), stack.std(0)], dim=1))
        bar.close()
        return torch.cat(outs)
