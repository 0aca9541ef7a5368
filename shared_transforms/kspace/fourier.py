"""The single-coil Fourier model of the MRI-reconstruction bundle (FLAT: Qi et al. 2025, arXiv 2512.03020; fastMRI
conventions): ``k = F x`` with ``F`` the centred orthonormal 2D Fourier transform, magnitude images given a smooth
random phase, the masked measurement ``y = M k`` and its zero-filled reconstruction ``|F^H y|``.

Complex convention (MONAI's ``monai.data.fft_utils`` and ``monai.apps.reconstruction``): a complex array is a real
array with a trailing dimension of 2 (real, imaginary), e.g. single-coil k-space ``(C=1, H, W, 2)``. One function
per equation, in the style of fastMRI's ``data/transforms.py``:

- :func:`fft2c` / :func:`ifft2c`: ``k = F x`` and ``x = F^H k``.
- :func:`smooth_phase`, :func:`kspace_from_magnitude`: ``k = F (|x| e^{i phi})``.
- :func:`apply_mask`: ``y = M k``; :func:`zero_filled`: ``|F^H y|`` (root-sum-of-squares over coils if any).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.apps.reconstruction.complex_utils import complex_abs
from monai.apps.reconstruction.mri_utils import root_sum_of_squares
from monai.config import NdarrayOrTensor
from monai.data.fft_utils import fftn_centered, ifftn_centered
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor

from ..errors import InputError

__all__ = ["SeedLike", "fft2c", "ifft2c", "smooth_phase", "kspace_from_magnitude", "apply_mask", "zero_filled"]

SeedLike = int | np.integer | np.random.RandomState | np.random.Generator


def check_complex(x: NdarrayOrTensor, name: str, min_ndim: int = 3) -> None:
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
    check_complex(image, "image")
    return fftn_centered(image, spatial_dims=2, is_complex=True)


def ifft2c(kspace: NdarrayOrTensor) -> NdarrayOrTensor:
    """Centred orthonormal inverse 2D FFT ``x = F^H k`` (the exact inverse of :func:`fft2c`).

    Args:
        kspace: complex k-space ``(..., H, W, 2)``, numpy or torch.

    Returns:
        complex image ``(..., H, W, 2)``, same array type as ``kspace``.
    """
    check_complex(kspace, "kspace")
    return ifftn_centered(kspace, spatial_dims=2, is_complex=True)


def as_random_state(seed: SeedLike) -> np.random.RandomState:
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
    rs = as_random_state(seed)
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


def apply_mask(kspace: NdarrayOrTensor, mask: NdarrayOrTensor) -> NdarrayOrTensor:
    """Under-sampled measurement ``y = M k``: unsampled entries set to exactly 0.

    Args:
        kspace: ``(..., H, W, 2)``.
        mask: bool or 0/1 mask broadcastable to ``kspace``, e.g. ``(1, W, 1)`` from :func:`cartesian_mask`.

    Returns:
        masked k-space ``(..., H, W, 2)``, same array type as ``kspace`` (MetaTensor meta kept).
    """
    check_complex(kspace, "kspace")
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
