"""The cross-batch mechanism of DiffusionIQT (Kim et al., arXiv 2311.06631): a big patch cut into sub-patches that
form the mini-batch, and put back together wherever a layer must see across sub-patch borders.

A ``(N, C, f*S, f*S, f*S)`` volume (the paper: one 96³ patch, ``f = 3``, ``S = 32``) becomes ``(N*f³, C, S, S, S)``
sub-patches (:func:`split`) and back (:func:`merge`). Two layers use it (the authors' ``imagen_pytorch3D.py``,
``merge_sub_volumes`` / ``convertVolume2subVolume`` / ``boundary_pad`` of github.com/edshkim98/DiffusionIQT):

- attention runs on the merged volume, so keys and values span the neighbouring sub-patches;
- every 3³ convolution is unpadded and its input is :func:`boundary_pad`-ed: each sub-patch gets a one-voxel border
  of the real neighbouring voxels (zeros only at the outer boundary of the big patch), so the convolution over the
  sub-patches equals the ``padding=1`` convolution over the merged volume (``tests/test_diffusion_iqt_network.py``).

The sub-patch order within a group of ``f³`` is ``(p1 p2 p3)`` along the three spatial axes (the authors' order
differs; any order works as long as split and merge are inverse, and no weights of theirs are loaded). MONAI has
no such split/merge; the few lines are here, written with ``reshape`` / ``permute`` (not einops' ``rearrange``, the
authors' tool) so that TorchScript compiles them and ONNX exporters see plain tensor ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["boundary_pad", "merge", "split"]


def split(volume: torch.Tensor, factor: int) -> torch.Tensor:
    """``(N, C, f*X, f*Y, f*Z)`` -> ``(N*f³, C, X, Y, Z)`` sub-patches (``f = factor``)."""
    if volume.dim() != 5 or any(s % factor for s in volume.shape[2:]):
        raise ValueError(f"split needs (N, C, X, Y, Z) with sizes divisible by {factor}, got {list(volume.shape)}")
    n, c = volume.shape[0], volume.shape[1]
    x, y, z = volume.shape[2] // factor, volume.shape[3] // factor, volume.shape[4] // factor
    parts = volume.reshape(n, c, factor, x, factor, y, factor, z)  # (n, c, p1, x, p2, y, p3, z)
    return parts.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(n * (factor * factor * factor), c, x, y, z)


def merge(sub: torch.Tensor, factor: int) -> torch.Tensor:
    """``(N*f³, C, X, Y, Z)`` sub-patches -> ``(N, C, f*X, f*Y, f*Z)``; the inverse of :func:`split`."""
    if sub.dim() != 5 or sub.shape[0] % (factor * factor * factor):
        raise ValueError(f"merge needs (N*{factor * factor * factor}, C, X, Y, Z) sub-patches, got {list(sub.shape)}")
    m, c, x, y, z = sub.shape[0], sub.shape[1], sub.shape[2], sub.shape[3], sub.shape[4]
    parts = sub.reshape(
        m // (factor * factor * factor), factor, factor, factor, c, x, y, z
    )  # (n, p1, p2, p3, c, x, y, z)
    return parts.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(
        m // (factor * factor * factor), c, factor * x, factor * y, factor * z
    )


def boundary_pad(sub: torch.Tensor, factor: int, width: int = 1) -> torch.Tensor:
    """``(N*f³, C, X, Y, Z)`` -> ``(N*f³, C, X+2w, Y+2w, Z+2w)``: each sub-patch with ``width`` voxels of its
    neighbours around it (zeros outside the merged volume). With ``factor = 1`` this is plain zero padding."""
    x, y, z = sub.shape[2], sub.shape[3], sub.shape[4]
    padded = F.pad(merge(sub, factor), [width] * 6)  # (N, C, f*X+2w, f*Y+2w, f*Z+2w)
    windows = padded.unfold(2, x + 2 * width, x).unfold(3, y + 2 * width, y).unfold(4, z + 2 * width, z)
    # windows: (N, C, f, f, f, X+2w, Y+2w, Z+2w), window (i, j, k) around sub-patch (p1, p2, p3) = (i, j, k)
    n, c = windows.shape[0], windows.shape[1]
    return windows.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(
        n * (factor * factor * factor), c, x + 2 * width, y + 2 * width, z + 2 * width
    )
