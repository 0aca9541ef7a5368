"""Single-coil Cartesian k-space simulation and under-sampling (FLAT: Qi et al. 2025, arXiv 2512.03020; fastMRI
conventions).

The measurement model of the MRI-reconstruction bundle is ``y = M F x`` (our reading of FLAT, arXiv 2512.03020): ``F``
is the centred orthonormal 2D Fourier transform and ``M`` a Cartesian mask that keeps whole phase-encode columns along
the last spatial axis (fastMRI convention). FLAT's brain data sets are magnitude images, so the k-space is simulated
from them (our reading of FLAT's setup), optionally with a smooth random phase; R = 8 is the paper's acceleration.

Complex convention (MONAI's ``monai.data.fft_utils`` and ``monai.apps.reconstruction``): a complex array is a real
array with a trailing dimension of 2 (real, imaginary), e.g. single-coil k-space ``(C=1, H, W, 2)``.

Functions (one per equation, style of fastMRI ``data/transforms.py`` / ``data/subsample.py``):

- :func:`fft2c` / :func:`ifft2c`: ``k = F x`` and ``x = F^H k``.
- :func:`smooth_phase`, :func:`kspace_from_magnitude`: ``k = F (|x| e^{i phi})``.
- :func:`cartesian_mask`: the column mask ``M`` for acceleration R and a fully sampled centre.
- :func:`apply_mask`: ``y = M k``; :func:`zero_filled`: ``|F^H y|`` (root-sum-of-squares over coils if any).

Transforms (MONAI array + dictionary pairs, seeded through ``set_random_state``): :class:`SimulateKspace` /
:class:`SimulateKspaced` and :class:`CartesianUndersample` / :class:`CartesianUndersampled`.
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.apps.reconstruction.complex_utils import complex_abs
from monai.apps.reconstruction.mri_utils import root_sum_of_squares
from monai.apps.reconstruction.transforms.array import EquispacedKspaceMask
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.fft_utils import fftn_centered, ifftn_centered
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import TransformBackends, ensure_tuple
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor

from ..errors import InputError

__all__ = [
    "MASK_PATTERNS",
    "fft2c",
    "ifft2c",
    "smooth_phase",
    "kspace_from_magnitude",
    "cartesian_mask",
    "apply_mask",
    "zero_filled",
    "seed_from_name",
    "SimulateKspace",
    "SimulateKspaced",
    "CartesianUndersample",
    "CartesianUndersampled",
]

MASK_PATTERNS = ("random", "equispaced")

SeedLike = int | np.integer | np.random.RandomState | np.random.Generator


# ----------------------------------------------------------------------------------------------------------------
# Fourier transforms
# ----------------------------------------------------------------------------------------------------------------


def _check_complex(x: NdarrayOrTensor, name: str, min_ndim: int = 3) -> None:
    if x.ndim < min_ndim or x.shape[-1] != 2:
        raise InputError(None, f"{name} must have shape (..., H, W, 2) (real, imaginary last), got {tuple(x.shape)}")


def fft2c(image: NdarrayOrTensor) -> NdarrayOrTensor:
    """Centred orthonormal 2D FFT ``k = F x`` over the two spatial dims before the trailing 2.

    Delegates to :func:`monai.data.fft_utils.fftn_centered` (``norm="ortho"``, so Parseval holds:
    ``sum |x|^2 == sum |k|^2``; the DC sample sits at index ``(H // 2, W // 2)``).

    Args:
        image: complex image ``(..., H, W, 2)``, numpy or torch.

    Returns:
        k-space ``(..., H, W, 2)``, same array type as ``image``.
    """
    _check_complex(image, "image")
    return fftn_centered(image, spatial_dims=2, is_complex=True)


def ifft2c(kspace: NdarrayOrTensor) -> NdarrayOrTensor:
    """Centred orthonormal inverse 2D FFT ``x = F^H k`` (the exact inverse of :func:`fft2c`).

    Args:
        kspace: complex k-space ``(..., H, W, 2)``, numpy or torch.

    Returns:
        complex image ``(..., H, W, 2)``, same array type as ``kspace``.
    """
    _check_complex(kspace, "kspace")
    return ifftn_centered(kspace, spatial_dims=2, is_complex=True)


# ----------------------------------------------------------------------------------------------------------------
# k-space from a magnitude image
# ----------------------------------------------------------------------------------------------------------------


def _as_random_state(seed: SeedLike) -> np.random.RandomState:
    """A ``RandomState`` from an int seed, a ``RandomState`` (used as is, so it advances) or a ``Generator``.

    ``RandomState`` because MONAI's ``Randomizable.R`` (and so ``EquispacedKspaceMask``) uses it.
    """
    if isinstance(seed, np.random.RandomState):
        return seed
    if isinstance(seed, np.random.Generator):
        return np.random.RandomState(int(seed.integers(0, 2**32)))
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.RandomState(int(seed) % 2**32)
    raise TypeError(f"seed must be an int, np.random.RandomState or np.random.Generator, got {type(seed).__name__}")


def smooth_phase(
    shape_hw: Sequence[int], max_phase_rad: float, *, seed: SeedLike, order: int = 2, dtype=torch.float32
) -> torch.Tensor:
    """A smooth random phase map: a random 2D polynomial of total degree ``order``, scaled to ``max_phase_rad``.

    ``phi(u, v) = s * sum_{i + j <= order} c_ij u^i v^j`` on ``u, v in [-1, 1]``, ``c_ij ~ N(0, 1)``, with ``s`` such
    that ``max |phi| = max_phase_rad``. A low-order polynomial stands in for the slowly varying B0/receive phase of
    real single-coil data (our reading: FLAT simulates k-space from magnitude images). By Markov's
    inequality for polynomials, neighbouring pixels differ by at most ``order^2 * max_phase_rad * 2 / (N - 1)``.

    Args:
        shape_hw: ``(H, W)``.
        max_phase_rad: largest absolute phase in radians (>= 0; 0 gives zeros).
        seed: int seed, ``np.random.RandomState`` (e.g. a transform's ``self.R``) or ``np.random.Generator``.
        order: polynomial degree (>= 0; 0 is a constant global phase).

    Returns:
        phase ``(H, W)`` in radians, torch ``dtype``.
    """
    h, w = (int(s) for s in shape_hw)
    if h < 1 or w < 1:
        raise ValueError(f"shape_hw must be two positive sizes, got {tuple(shape_hw)}")
    if not (np.isfinite(max_phase_rad) and max_phase_rad >= 0):
        raise ValueError(f"max_phase_rad must be a finite number >= 0, got {max_phase_rad}")
    if int(order) != order or order < 0:
        raise ValueError(f"order must be an integer >= 0, got {order}")
    rs = _as_random_state(seed)
    exponents = [(i, j) for i in range(order + 1) for j in range(order + 1 - i)]
    coef = rs.standard_normal(len(exponents))  # drawn even for max_phase_rad == 0, so the RNG stream is the same
    u = np.linspace(-1.0, 1.0, h)[:, None]  # (H, 1)
    v = np.linspace(-1.0, 1.0, w)[None, :]  # (1, W)
    phase = sum(c * u**i * v**j for c, (i, j) in zip(coef, exponents, strict=False)) * np.ones((h, w))  # (H, W)
    peak = np.abs(phase).max()
    phase = phase * (max_phase_rad / peak) if peak > 0 else np.zeros((h, w))
    return torch.as_tensor(phase, dtype=dtype)


def kspace_from_magnitude(magnitude: NdarrayOrTensor, phase: NdarrayOrTensor | None = None) -> NdarrayOrTensor:
    """Single-coil k-space of a magnitude image: ``k = F (|x| e^{i phi})``.

    Args:
        magnitude: real image ``(..., H, W)``.
        phase: phase in radians broadcastable to ``(..., H, W)`` (e.g. :func:`smooth_phase`), or None for a real image.

    Returns:
        k-space ``(..., H, W, 2)``, same array type as ``magnitude`` (float32 unless the input is float64).
    """
    mag = convert_to_tensor(magnitude, track_meta=False)
    if mag.is_complex():
        raise InputError(None, "magnitude must be a real array (..., H, W), got a complex one")
    if mag.ndim < 2:
        raise InputError(None, f"magnitude must have shape (..., H, W), got {tuple(mag.shape)}")
    mag = mag.to(torch.float64 if mag.dtype == torch.float64 else torch.float32)
    if phase is None:
        image = torch.stack([mag, torch.zeros_like(mag)], dim=-1)  # (..., H, W, 2)
    else:
        phi = torch.as_tensor(convert_to_tensor(phase, track_meta=False), dtype=mag.dtype, device=mag.device)
        image = torch.stack([mag * torch.cos(phi), mag * torch.sin(phi)], dim=-1)  # (..., H, W, 2)
    kspace = fft2c(image)
    return convert_to_dst_type(kspace, magnitude, dtype=kspace.dtype)[0]


# ----------------------------------------------------------------------------------------------------------------
# Cartesian under-sampling masks
# ----------------------------------------------------------------------------------------------------------------


def _check_mask_params(acceleration: float, center_fraction: float, pattern: str) -> None:
    if not (np.isfinite(acceleration) and acceleration >= 1):
        raise ValueError(f"acceleration must be a finite number >= 1 (R, e.g. 4 or 8), got {acceleration}")
    if not (0 < center_fraction < 1):
        raise ValueError(f"center_fraction must be in (0, 1) (e.g. 0.08 for R=4, 0.04 for R=8), got {center_fraction}")
    if acceleration > 1 and center_fraction * acceleration >= 1:
        raise ValueError(
            f"center_fraction={center_fraction} with acceleration={acceleration} leaves no room for outer columns: "
            f"center_fraction must be below 1/acceleration={1 / acceleration:.4g}"
        )
    if pattern not in MASK_PATTERNS:
        raise ValueError(f"pattern must be one of {MASK_PATTERNS}, got {pattern!r}")


def _center_columns(num_cols: int, center_fraction: float) -> slice:
    """The fully sampled centre (fastMRI / MONAI placement: it contains the DC column ``num_cols // 2``)."""
    num_low = int(round(num_cols * center_fraction))
    pad = (num_cols - num_low + 1) // 2
    return slice(pad, pad + num_low)


def cartesian_mask(
    shape_hw: Sequence[int], acceleration: float, center_fraction: float, pattern: str = "random", *, seed: SeedLike
) -> torch.Tensor:
    """Cartesian column mask ``M`` along the last spatial axis (phase encode, fastMRI convention).

    ``round(W * center_fraction)`` centre columns are always sampled; the other columns are

    - ``"random"``: drawn uniformly without replacement so that exactly ``round(W / acceleration)`` columns are
      sampled in total. Written here rather than taken from MONAI's ``RandomKspaceMask`` / fastMRI's
      ``RandomMaskFunc``: those draw each column independently, so R is met only on average (about +-30 % in the
      number of columns at W = 256, R = 8).
    - ``"equispaced"``: MONAI's ``EquispacedKspaceMask`` (fastMRI's ``EquispacedMaskFunc``): every
      ``R (W - n_c) / (W - n_c R)``-th column from a random offset; the count is within a column or two of W / R.

    ``acceleration == 1`` gives a full mask.

    Args:
        shape_hw: ``(H, W)`` of the k-space (only W is used).
        acceleration: R >= 1, the ratio W / (number of sampled columns).
        center_fraction: fraction of W in the fully sampled centre, in (0, 1) and below 1 / R.
        pattern: ``"random"`` or ``"equispaced"``.
        seed: int seed (e.g. :func:`seed_from_name` of the volume, for a fixed mask per volume), a
            ``np.random.RandomState`` (a transform's ``self.R``; it advances) or a ``np.random.Generator``.

    Returns:
        bool mask ``(1, W, 1)``, broadcastable to k-space ``(..., H, W, 2)``; ``mask.flatten()`` is the column mask.
    """
    _check_mask_params(acceleration, center_fraction, pattern)
    num_cols = int(shape_hw[-1])
    if num_cols < 2:
        raise ValueError(f"k-space needs at least 2 columns, got shape {tuple(shape_hw)}")
    rs = _as_random_state(seed)
    if acceleration == 1:
        mask = np.ones(num_cols, dtype=bool)
    elif pattern == "random":
        mask = np.zeros(num_cols, dtype=bool)  # (W,)
        mask[_center_columns(num_cols, center_fraction)] = True
        num_outer = max(int(round(num_cols / acceleration)) - int(mask.sum()), 0)
        mask[rs.choice(np.flatnonzero(~mask), size=num_outer, replace=False)] = True
    else:
        # MONAI's EquispacedKspaceMask makes its mask only while masking a k-space; masking a dummy 1-row k-space is
        # cheap and gives the mask in `.mask`. Its RNG is `rs` itself, so a transform's self.R advances as usual.
        masker = EquispacedKspaceMask([center_fraction], [acceleration], spatial_dims=2, is_complex=True)
        masker.set_random_state(state=rs)
        masker(torch.zeros(1, 1, num_cols, 2))  # (C, H=1, W, 2)
        mask = masker.mask.reshape(-1).numpy() > 0.5  # (W,)
    return torch.as_tensor(mask).reshape(1, num_cols, 1)


def seed_from_name(name: str) -> int:
    """A stable int seed from a volume's file name (fixed validation masks per volume, like fastMRI's per-file seed).

    CRC-32 rather than ``hash``, which Python salts per process.
    """
    return zlib.crc32(str(name).encode("utf-8"))


# ----------------------------------------------------------------------------------------------------------------
# Masking and zero-filled reconstruction
# ----------------------------------------------------------------------------------------------------------------


def apply_mask(kspace: NdarrayOrTensor, mask: NdarrayOrTensor) -> NdarrayOrTensor:
    """Under-sampled measurement ``y = M k``: unsampled entries set to exactly 0.

    Args:
        kspace: ``(..., H, W, 2)``.
        mask: bool or 0/1 mask broadcastable to ``kspace``, e.g. ``(1, W, 1)`` from :func:`cartesian_mask`.

    Returns:
        masked k-space ``(..., H, W, 2)``, same array type as ``kspace`` (MetaTensor meta kept).
    """
    _check_complex(kspace, "kspace")
    k = convert_to_tensor(kspace, track_meta=False)
    m = torch.as_tensor(convert_to_tensor(mask, track_meta=False), device=k.device).bool()
    masked = torch.where(m, k, torch.zeros((), dtype=k.dtype, device=k.device))  # (..., H, W, 2)
    return convert_to_dst_type(masked, kspace)[0]


def zero_filled(masked_kspace: NdarrayOrTensor, coil_dim: int | None = None, keepdim: bool = True) -> NdarrayOrTensor:
    """Zero-filled reconstruction ``|F^H y|`` (root-sum-of-squares over ``coil_dim`` for multi-coil data).

    Args:
        masked_kspace: ``(..., H, W, 2)``.
        coil_dim: index of the coil dim in ``masked_kspace`` (e.g. 0 for ``(coils, H, W, 2)``), or None for single-coil
            (no combination).
        keepdim: keep the coil dim with size 1, so channel-first ``(coils, H, W, 2)`` gives ``(1, H, W)``.

    Returns:
        magnitude image ``(..., H, W)``, same array type as ``masked_kspace``.
    """
    image = ifft2c(masked_kspace)  # (..., H, W, 2)
    magnitude = complex_abs(image)  # (..., H, W)
    if coil_dim is None:
        return magnitude
    ndim = masked_kspace.ndim
    dim = coil_dim + ndim if coil_dim < 0 else coil_dim
    if not 0 <= dim < ndim - 3:
        raise ValueError(
            f"coil_dim={coil_dim} is not a dim before (H, W, 2) of k-space shape {tuple(masked_kspace.shape)}"
        )
    rss = root_sum_of_squares(magnitude, spatial_dim=dim)  # MONAI's `spatial_dim` is the dim that is combined
    if not keepdim:
        return rss
    return rss.unsqueeze(dim) if isinstance(rss, torch.Tensor) else np.expand_dims(rss, dim)


# ----------------------------------------------------------------------------------------------------------------
# Transforms
# ----------------------------------------------------------------------------------------------------------------


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
        _check_mask_params(acceleration, center_fraction, pattern)
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
        _check_complex(kspace, "kspace")
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
