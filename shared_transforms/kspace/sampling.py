"""Single-coil Cartesian k-space simulation and under-sampling (FLAT: Qi et al. 2025, arXiv 2512.03020; fastMRI
conventions).

The measurement model of the MRI-reconstruction bundle is ``y = M F x`` (our reading of FLAT, arXiv 2512.03020): ``F``
is the centred orthonormal 2D Fourier transform and ``M`` a Cartesian mask that keeps whole phase-encode columns along
the last spatial axis (fastMRI convention). FLAT's brain data sets are magnitude images, so the k-space is simulated
from them (our reading of FLAT's setup), optionally with a smooth random phase; R = 8 is the paper's acceleration.

Complex convention (MONAI's ``monai.data.fft_utils`` and ``monai.apps.reconstruction``): a complex array is a real
array with a trailing dimension of 2 (real, imaginary), e.g. single-coil k-space ``(C=1, H, W, 2)``.

The equations are :mod:`.fourier`'s (``F``, the phase, ``y = M k``, zero filling) and :mod:`.masks`' (``M``). Here:
the transforms (MONAI array + dictionary pairs, seeded through ``set_random_state``): :class:`SimulateKspace` /
:class:`SimulateKspaced` and :class:`CartesianUndersample` / :class:`CartesianUndersampled`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import TransformBackends, ensure_tuple
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor

from ..errors import InputError
from .fourier import apply_mask, check_complex, kspace_from_magnitude, smooth_phase, zero_filled
from .masks import cartesian_mask, check_mask_params

__all__ = ["SimulateKspace", "SimulateKspaced", "CartesianUndersample", "CartesianUndersampled"]


def _permuted_affine(affine: torch.Tensor, spatial_order: Sequence[int]) -> torch.Tensor:
    """Voxel-to-world affine of an array whose spatial axes were reordered to ``spatial_order`` (new axis k = old
    axis ``spatial_order[k]``): column k of the new affine is column ``spatial_order[k]`` of the old one."""
    out = affine.clone()
    out[:, : len(spatial_order)] = affine[:, list(spatial_order)]
    return out


class SimulateKspace(RandomizableTransform):
    """Simulate single-coil k-space from a magnitude image or volume, with an optional smooth random phase.

    ``k = F (|x| e^{i phi})`` per 2D slice (:func:`kspace_from_magnitude`, :func:`smooth_phase`).

    - 2D input ``(C, H, W)`` gives ``(C, H, W, 2)``.
    - 3D input ``(C, X, Y, Z)`` is cut into slices along spatial axis ``slice_axis`` (0 = X, 1 = Y, 2 = Z) and gives
      ``(C, S, H, W, 2)``: the slice axis moved to just after the channel, the other two spatial axes ``(H, W)`` in
      their original order. For a MetaTensor the affine's columns are reordered to match, so the zero-filled image
      ``(C, S, H, W)`` of :class:`CartesianUndersample` sits in the right place in world space.

    Each slice gets its own phase map, drawn from ``self.R`` (shared by the C channels of a slice).

    Args:
        max_phase_rad: largest absolute phase in radians; 0 (default) gives the k-space of the real image.
        phase_order: degree of the polynomial phase (see :func:`smooth_phase`).
        slice_axis: spatial axis to slice a 3D volume along (ignored for 2D input).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, max_phase_rad: float = 0.0, phase_order: int = 2, slice_axis: int = 2) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        if not (np.isfinite(max_phase_rad) and max_phase_rad >= 0):
            raise ValueError(f"max_phase_rad must be a finite number >= 0, got {max_phase_rad}")
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be a spatial axis 0, 1 or 2 of (C, X, Y, Z), got {slice_axis}")
        self.max_phase_rad = float(max_phase_rad)
        self.phase_order = int(phase_order)
        self.slice_axis = int(slice_axis)
        self._phase: torch.Tensor | None = None

    def randomize(self, num_slices: int, shape_hw: Sequence[int]) -> None:  # type: ignore[override]
        """Draw ``num_slices`` phase maps ``(S, H, W)`` (or none when ``max_phase_rad == 0``)."""
        # no super().randomize(): it would spend a draw on `prob`, which is always 1 here; this way a transform seeded
        # with s gives the same first draw as the function called with seed=s.
        if self.max_phase_rad == 0:
            self._phase = None
            return
        self._phase = torch.stack(
            [smooth_phase(shape_hw, self.max_phase_rad, seed=self.R, order=self.phase_order) for _ in range(num_slices)]
        )

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:  # type: ignore[override]
        """Args: img ``(C, H, W)`` or ``(C, X, Y, Z)``. Returns: k-space ``(C, H, W, 2)`` or ``(C, S, H, W, 2)``."""
        if img.ndim not in (3, 4):
            raise InputError(
                None, f"expected a channel-first image (C, H, W) or volume (C, X, Y, Z), got {tuple(img.shape)}"
            )
        x = convert_to_tensor(img, track_meta=False)
        spatial_order = [0, 1]
        if x.ndim == 4:
            spatial_order = [self.slice_axis] + [a for a in range(3) if a != self.slice_axis]
            x = torch.movedim(x, 1 + self.slice_axis, 1)  # (C, S, H, W)
        num_slices = x.shape[1] if x.ndim == 4 else 1
        if randomize:
            self.randomize(num_slices, x.shape[-2:])
        phase = self._phase
        if phase is not None:
            if phase.shape != (num_slices, *x.shape[-2:]):
                raise ValueError(f"stored phase {tuple(phase.shape)} does not fit image {tuple(x.shape)}; randomize")
            phase = phase if x.ndim == 4 else phase[0]  # (S, H, W) or (H, W)
        kspace = kspace_from_magnitude(x, phase)  # (C, [S,] H, W, 2)
        out = convert_to_dst_type(kspace, img, dtype=kspace.dtype)[0]
        if isinstance(out, MetaTensor) and x.ndim == 4:
            out.affine = _permuted_affine(out.affine, spatial_order)
        return out


class SimulateKspaced(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`SimulateKspace`: reads each of ``keys`` and writes its k-space to the matching
    entry of ``kspace_keys`` (default ``"kspace"``; one name per key)."""

    backend = SimulateKspace.backend

    def __init__(
        self,
        keys: KeysCollection,
        kspace_keys: KeysCollection = "kspace",
        max_phase_rad: float = 0.0,
        phase_order: int = 2,
        slice_axis: int = 2,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.kspace_keys = ensure_tuple(kspace_keys)
        if len(self.kspace_keys) != len(self.keys):
            raise ValueError(f"need one kspace key per key: keys={self.keys}, kspace_keys={self.kspace_keys}")
        self.simulator = SimulateKspace(max_phase_rad, phase_order, slice_axis)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> SimulateKspaced:
        super().set_random_state(seed, state)
        self.simulator.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key, kspace_key in self.key_iterator(d, self.kspace_keys):
            try:
                d[kspace_key] = self.simulator(d[key])
            except InputError as err:
                raise InputError(key, err.problem) from None
        return d


class CartesianUndersample(RandomizableTransform):
    """Cartesian under-sampling of k-space: masked k-space, the mask and the zero-filled image.

    A new mask (:func:`cartesian_mask`) is drawn from ``self.R`` on every call; seed the sequence with
    ``set_random_state`` (or pass ``randomize=False`` to reuse the last mask). For a fixed mask per volume call
    ``set_random_state(seed_from_name(path))`` first.

    Args:
        acceleration: R >= 1 (FLAT, arXiv 2512.03020: 8).
        center_fraction: fraction of fully sampled centre columns, in (0, 1) and below 1 / R (fastMRI: 0.04 at R = 8,
            0.08 at R = 4).
        pattern: ``"random"`` or ``"equispaced"``.
        coil_dim: coil dim of the k-space for a root-sum-of-squares zero-filled image; None (default) for
            single-coil ``(C=1, H, W, 2)``, whose zero-filled image is ``(1, H, W)``.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self, acceleration: float, center_fraction: float, pattern: str = "random", coil_dim: int | None = None
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        check_mask_params(acceleration, center_fraction, pattern)
        self.acceleration = float(acceleration)
        self.center_fraction = float(center_fraction)
        self.pattern = pattern
        self.coil_dim = coil_dim
        self._mask: torch.Tensor | None = None

    def randomize(self, num_cols: int) -> None:  # type: ignore[override]
        """Draw the column mask ``(1, W, 1)`` for ``num_cols`` = W columns (``set_random_state(s)`` then a call gives
        the mask of ``cartesian_mask(..., seed=s)``)."""
        self._mask = cartesian_mask((1, num_cols), self.acceleration, self.center_fraction, self.pattern, seed=self.R)

    def __call__(  # type: ignore[override]
        self, kspace: NdarrayOrTensor, randomize: bool = True
    ) -> tuple[NdarrayOrTensor, torch.Tensor, NdarrayOrTensor]:
        """Args: kspace ``(..., H, W, 2)``, e.g. ``(C=1, H, W, 2)``.

        Returns:
            masked k-space ``(..., H, W, 2)``; bool mask with k-space's ndim, ``(1, ..., 1, W, 1)`` (batched by a
            DataLoader into MONAI VarNet's ``(B, 1, 1, W, 1)``); zero-filled magnitude ``(..., H, W)``.
        """
        check_complex(kspace, "kspace")
        num_cols = kspace.shape[-2]
        if randomize:
            self.randomize(num_cols)
        if self._mask is None or self._mask.shape[-2] != num_cols:
            raise ValueError(f"no mask for {num_cols} columns; call with randomize=True first")
        mask = self._mask.reshape(*([1] * (kspace.ndim - 2)), num_cols, 1)  # (1, ..., 1, W, 1)
        masked = apply_mask(kspace, mask)
        return masked, mask, zero_filled(masked, coil_dim=self.coil_dim)


class CartesianUndersampled(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`CartesianUndersample` for one k-space key.

    Writes ``masked_key`` (masked k-space), ``mask_key`` (the bool sampling mask, ``"sampling_mask"``: MONAI's
    ``FastMRIKeys.MASK`` is ``"mask"``, but here ``mask`` is the brain mask in every bundle, so the sampling mask has
    its own name) and ``zero_filled_key`` (zero-filled image); the input k-space stays as it is.
    """

    backend = CartesianUndersample.backend

    def __init__(
        self,
        keys: KeysCollection,
        acceleration: float,
        center_fraction: float,
        pattern: str = "random",
        coil_dim: int | None = None,
        masked_key: str = "kspace_masked",
        mask_key: str = "sampling_mask",
        zero_filled_key: str = "zero_filled",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        if len(self.keys) != 1:
            raise ValueError(f"CartesianUndersampled takes one k-space key, got {self.keys}")
        self.masked_key, self.mask_key, self.zero_filled_key = masked_key, mask_key, zero_filled_key
        self.undersampler = CartesianUndersample(acceleration, center_fraction, pattern, coil_dim)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> CartesianUndersampled:
        super().set_random_state(seed, state)
        self.undersampler.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                masked, mask, image = self.undersampler(d[key])
            except InputError as err:
                raise InputError(key, err.problem) from None
            d[self.masked_key], d[self.mask_key], d[self.zero_filled_key] = masked, mask, image
        return d
