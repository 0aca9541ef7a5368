"""flat's input: a magnitude volume -> simulated, Cartesian under-sampled k-space packed as one image-like tensor.

:class:`UndersampleVolumed` is the one transform between the shared preprocessing (load, RAS, percentile
normalisation) and the network. Per 2D slice along ``slice_axis`` (axial, Z, by default) it simulates single-coil
k-space ``k = F x`` from the normalised magnitude (:class:`shared_transforms.kspace.sampling.SimulateKspace`), draws one
Cartesian mask setting (acceleration, centre fraction, pattern) and one column mask
(:class:`shared_transforms.kspace.sampling.CartesianUndersample`, phase encode along the slice's last axis, fastMRI's
convention), and writes

- ``packed_key`` (``"image"``): :func:`scripts.network.pack_inputs` per slice, arranged back as a volume
  ``(3, X, Y, Z)`` = (k-space real, k-space imaginary, sampling mask) with the source's meta (affine, file name), so
  MONAI's slice inferer and the savers treat it like any image;
- ``target_key`` (``"target"``, optional): the complex fully-sampled image ``F^H k`` ``(2, X, Y, Z)`` (real,
  imaginary), the flow's ``x_0`` for the training loss (equal to the magnitude + 0i when ``max_phase_rad`` is 0).

Randomness: in training every call draws a new setting and mask (``fixed_per_volume=False``: with 2D crops, one
draw per slice). For validation, evaluation and inference (``fixed_per_volume=True``) the draw is seeded by
:func:`shared_transforms.kspace.masks.seed_from_name` of the source file's name, so each volume always gets the same
mask (fastMRI's per-file seed) and every slice of a volume shares it.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import ensure_tuple

from shared_transforms.errors import InputError, source_name
from shared_transforms.kspace.fourier import ifft2c
from shared_transforms.kspace.masks import MASK_PATTERNS, seed_from_name
from shared_transforms.kspace.sampling import CartesianUndersample, SimulateKspace

from .network import pack_inputs

__all__ = ["UndersampleKspaced", "UndersampleVolumed"]


class UndersampleVolumed(RandomizableTransform, MapTransform):
    """Simulate and under-sample the k-space of ``source_key`` (module docstring).

    Args:
        source_key: the normalised magnitude ``(1, X, Y, Z)`` (``"label"`` in training, ``"image"`` at inference).
        packed_key: where the packed network input ``(3, X, Y, Z)`` goes (may equal ``source_key``).
        target_key: where the complex image ``(2, X, Y, Z)`` goes, or None (default) not to write it.
        accelerations, center_fractions: the settings drawn from, pairwise (fastMRI: 4x with 0.08, 8x with 0.04).
        patterns: mask patterns drawn from (``"random"``, ``"equispaced"``).
        fixed_per_volume: seed each call by the source file's name (evaluation) instead of the running RNG.
        slice_axis: spatial axis of the 2D slices (2 = axial for RAS volumes).
        max_phase_rad: largest smooth random phase of the simulated k-space (0: real images, the default).
        mask_meta_key: meta field of the packed tensor that records the draw (acceleration, fraction, pattern,
            sampled columns), so a saved reconstruction says what it was made from.
    """

    def __init__(
        self,
        source_key: str = "label",
        packed_key: str = "image",
        target_key: str | None = None,
        accelerations: Sequence[float] = (4.0, 8.0),
        center_fractions: Sequence[float] = (0.08, 0.04),
        patterns: Sequence[str] = MASK_PATTERNS,
        fixed_per_volume: bool = False,
        slice_axis: int = 2,
        max_phase_rad: float = 0.0,
        mask_meta_key: str = "undersampling",
    ) -> None:
        MapTransform.__init__(self, [source_key])
        RandomizableTransform.__init__(self, prob=1.0)
        self.accelerations = [float(a) for a in ensure_tuple(accelerations)]
        self.center_fractions = [float(c) for c in ensure_tuple(center_fractions)]
        self.patterns = [str(p) for p in ensure_tuple(patterns)]
        if not self.accelerations or len(self.accelerations) != len(self.center_fractions):
            raise ValueError(
                f"need one centre fraction per acceleration, got {self.accelerations} and {self.center_fractions}"
            )
        unknown = [p for p in self.patterns if p not in MASK_PATTERNS]
        if not self.patterns or unknown:
            raise ValueError(f"patterns must be among {MASK_PATTERNS}, got {self.patterns}")
        # built once so that bad settings fail here, not on the first volume
        self._undersamplers = {
            (a, c, p): CartesianUndersample(a, c, p)
            for a, c in zip(self.accelerations, self.center_fractions, strict=False)
            for p in self.patterns
        }
        self.source_key, self.packed_key, self.target_key = source_key, packed_key, target_key
        self.fixed_per_volume = bool(fixed_per_volume)
        self.slice_axis = int(slice_axis)
        self.simulator = SimulateKspace(max_phase_rad=max_phase_rad, slice_axis=self.slice_axis)
        self.mask_meta_key = mask_meta_key

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.simulator.set_random_state(state=self.R)
        for u in self._undersamplers.values():
            u.set_random_state(state=self.R)
        return self

    @staticmethod
    def _source_name(img) -> str:
        return os.path.basename(source_name(img, ""))

    def _draw(self, name: str | None) -> tuple[float, float, str]:
        """The setting of this call (seeded by ``name`` when the mask is fixed per volume)."""
        if self.fixed_per_volume:
            if not name:
                raise InputError(self.source_key, "a fixed mask per volume needs the file name in the image's meta")
            self.set_random_state(seed_from_name(name))
        settings = list(self._undersamplers)
        return settings[self.R.randint(len(settings))]

    def _pack(self, k: torch.Tensor, setting: tuple[float, float, str]) -> tuple[torch.Tensor, dict]:
        """Slices of k-space ``(S, H, W, 2)`` -> the packed volume ``(3, X, Y, Z)`` (slices at ``slice_axis``) and
        the record of the draw."""
        masked, mask, _ = self._undersamplers[setting](k[:, None])  # (S, 1, H, W, 2), mask (1, 1, 1, W, 1)
        packed = pack_inputs(masked, mask)  # (S, 3, H, W)
        packed = torch.movedim(packed.movedim(1, 0), 1, 1 + self.slice_axis)  # (3, X, Y, Z)
        columns = mask.flatten()
        record = {
            "acceleration": setting[0],
            "center_fraction": setting[1],
            "pattern": setting[2],
            "sampled_columns": int(columns.sum()),
            "columns": int(columns.numel()),
            "slice_axis": self.slice_axis,
        }
        return packed.float(), record

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        img = d[self.source_key]
        if img.ndim != 4 or img.shape[0] != 1:
            raise InputError(
                self._source_name(img) or self.source_key,
                f"flat needs a single-channel magnitude volume (1, X, Y, Z), got {tuple(img.shape)}",
            )
        setting = self._draw(self._source_name(img))
        kspace = self.simulator(img)  # (1, S, H, W, 2): slices first, MetaTensor affine permuted
        k = torch.as_tensor(kspace.as_tensor() if isinstance(kspace, MetaTensor) else kspace)[0]  # (S, H, W, 2)
        packed, record = self._pack(k, setting)
        meta = dict(getattr(img, "meta", {}) or {})
        meta[self.mask_meta_key] = record
        d[self.packed_key] = MetaTensor(packed, meta=meta) if isinstance(img, MetaTensor) else packed
        if self.target_key is not None:
            target = ifft2c(k)  # (S, H, W, 2) complex x_0
            target = torch.movedim(target.movedim(-1, 0), 1, 1 + self.slice_axis)  # (2, X, Y, Z)
            d[self.target_key] = target.float()
        return d


class UndersampleKspaced(UndersampleVolumed):
    """Measured k-space (a fastMRI single-coil file read by :class:`shared_transforms.kspace.fastmri.LoadFastMRId`) ->
    the same packed input ``(3, H, W, S)`` as :class:`UndersampleVolumed` gives for a simulated one.

    The k-space ``(S, H, W, 2)`` at ``source_key`` is under-sampled with a mask fixed by the file's name (every slice
    the same), then scaled so that the zero-filled magnitude's 99th percentile inside its head mask is 1 (the
    training data's scale: :class:`shared_transforms.transforms.intensity.PercentileNormalize`; a linear scale, so data
    consistency still holds; the factor is kept in the meta as ``kspace_scale``). fastMRI files carry no voxel
    geometry, so the volume gets a ``spacing_mm`` grid (1 mm by default: X = readout, Y = phase encode, Z = slice);
    its meta names the file, for the savers.

    Args:
        meta_key: the loader's meta dict (default ``f"{source_key}_meta_dict"``).
        spacing_mm: voxel size of the written volume.
        Other arguments as :class:`UndersampleVolumed` (``fixed_per_volume`` is always on; ``slice_axis`` 2).
    """

    def __init__(
        self,
        source_key: str = "image",
        packed_key: str = "image",
        meta_key: str | None = None,
        spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
        **kwargs,
    ) -> None:
        kwargs.update(fixed_per_volume=True, slice_axis=2)
        super().__init__(source_key, packed_key, **kwargs)
        self.meta_key = meta_key or f"{source_key}_meta_dict"
        self.spacing_mm = [float(s) for s in spacing_mm]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        from shared_transforms.kspace.fourier import apply_mask, zero_filled
        from shared_transforms.transforms.intensity import PercentileNormalize, head_mask_from_intensity

        d = dict(data)
        meta = dict(d.get(self.meta_key) or {})
        path = str(meta.get("filename_or_obj", ""))
        k = torch.as_tensor(d[self.source_key]).float()  # (S, H, W, 2)
        if k.ndim != 4 or k.shape[-1] != 2:
            raise InputError(
                path or self.source_key, f"expected single-coil k-space (S, H, W, 2), got {tuple(k.shape)}"
            )
        setting = self._draw(os.path.basename(path))
        packed, record = self._pack(k, setting)
        # the scale, from the zero-filled magnitude of the masked k-space (S, H, W) -> (H, W, S)
        column_mask = (packed[2, 0, :, 0] > 0.5)[None, :, None]  # (1, W, 1)
        magnitude = zero_filled(apply_mask(k, column_mask)).movedim(0, -1)
        head = head_mask_from_intensity(magnitude.numpy(), tuple(self.spacing_mm))
        scale = PercentileNormalize(upper=99.0).percentiles(magnitude.numpy(), head if head.any() else None)[1]
        if not np.isfinite(scale) or scale <= 0:
            raise InputError(
                path or self.source_key, "the zero-filled image is empty: no signal in the sampled k-space"
            )
        packed[:2] /= scale
        affine = torch.diag(torch.tensor([*self.spacing_mm, 1.0], dtype=torch.float64))
        record["kspace_scale"] = float(scale)
        out_meta = {
            "filename_or_obj": path,
            "affine": affine,
            "original_affine": affine.clone(),
            "spatial_shape": np.asarray(packed.shape[1:]),
            self.mask_meta_key: record,
        }
        d[self.packed_key] = MetaTensor(
            packed, affine=affine, meta={k_: v for k_, v in out_meta.items() if k_ != "affine"}
        )
        return d
