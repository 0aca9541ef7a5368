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
no such split/merge; the few lines are here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

__all__ = ["boundary_pad", "merge", "split"]


def split(volume: torch.Tensor, factor: int) -> torch.Tensor:
    """``(N, C, f*X, f*Y, f*Z)`` -> ``(N*f³, C, X, Y, Z)`` sub-patches (``f = factor``)."""
    if volume.dim() != 5 or any(s % factor for s in volume.shape[2:]):
        raise ValueError(f"split needs (N, C, X, Y, Z) with sizes divisible by {factor}, got {tuple(volume.shape)}")
    return rearrange(volume, "n c (p1 x) (p2 y) (p3 z) -> (n p1 p2 p3) c x y z", p1=factor, p2=factor, p3=factor)


def merge(sub: torch.Tensor, factor: int) -> torch.Tensor:
    """``(N*f³, C, X, Y, Z)`` sub-patches -> ``(N, C, f*X, f*Y, f*Z)``; the inverse of :func:`split`."""
    if sub.dim() != 5 or sub.shape[0] % factor**3:
        raise ValueError(f"merge needs (N*{factor ** 3}, C, X, Y, Z) sub-patches, got {tuple(sub.shape)}")
    return rearrange(sub, "(n p1 p2 p3) c x y z -> n c (p1 x) (p2 y) (p3 z)", p1=factor, p2=factor, p3=factor)


def boundary_pad(sub: torch.Tensor, factor: int, width: int = 1) -> torch.Tensor:
    """``(N*f³, C, X, Y, Z)`` -> ``(N*f³, C, X+2w, Y+2w, Z+2w)``: each sub-patch with ``width`` voxels of its
    neighbours around it (zeros outside the merged volume). With ``factor = 1`` this is plain zero padding."""
    x, y, z = sub.shape[2:]
    padded = F.pad(merge(sub, factor), (width,) * 6)  # (N, C, f*X+2w, f*Y+2w, f*Z+2w)
    windows = padded.unfold(2, x + 2 * width, x).unfold(3, y + 2 * width, y).unfold(4, z + 2 * width, z)
    # windows: (N, C, f, f, f, X+2w, Y+2w, Z+2w), window (i, j, k) around sub-patch (p1, p2, p3) = (i, j, k)
    return rearrange(windows, "n c p1 p2 p3 x y z -> (n p1 p2 p3) c x y z")
