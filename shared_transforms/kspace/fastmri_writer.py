"""Writing fastMRI single-coil HDF5 files (for tests, demos and the real-data k-space tool), atomically and marked
with their owner, in the layout :mod:`.fastmri` reads (Zbontar et al., arXiv 1811.08839): ``kspace`` complex64
``(slices, H, W)``, optional ``reconstruction_esc``, a minimal ISMRMRD XML ``ismrmrd_header`` and file attributes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import NdarrayOrTensor

from ..io.files import atomic_path
from ..io.ownership import check_replaceable, ownership_mark
from .fastmri import FASTMRI_CROP, HEADER, KSPACE, OWNER_ATTR, RECONSTRUCTION, h5py_module

__all__ = ["DEFAULT_OWNER", "write_singlecoil_h5"]

#: Default owner of the files :func:`write_singlecoil_h5` writes.
DEFAULT_OWNER = "write_singlecoil_h5"


def _ismrmrd_header(shape_hw: Sequence[int], recon_hw: Sequence[int]) -> str:
    """A minimal ISMRMRD XML header with the fields fastMRI's ``SliceDataset`` reads (encoded and recon matrix
    sizes, phase-encode limits), for files simulated here."""
    (h, w), (rh, rw) = shape_hw, recon_hw

    def matrix(x: int, y: int) -> str:
        return f"<matrixSize><x>{x}</x><y>{y}</y><z>1</z></matrixSize>"

    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
        f"<encodedSpace>{matrix(h, w)}</encodedSpace><reconSpace>{matrix(rh, rw)}</reconSpace>"
        f"<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{w - 1}</maximum>"
        f"<center>{w // 2}</center></kspace_encoding_step_1></encodingLimits></encoding></ismrmrdHeader>"
    )


def _as_complex_kspace(kspace: NdarrayOrTensor) -> np.ndarray:
    """complex ``(S, H, W)`` or real ``(S, H, W, 2)`` -> complex64 ``(S, H, W)``."""
    k = kspace.detach().cpu().numpy() if isinstance(kspace, torch.Tensor) else np.asarray(kspace)
    if np.iscomplexobj(k):
        if k.ndim != 3:
            raise ValueError(f"complex kspace must have shape (slices, H, W), got {k.shape}")
        out = k.astype(np.complex64)
    else:
        if k.ndim != 4 or k.shape[-1] != 2:
            raise ValueError(f"real kspace must have shape (slices, H, W, 2) (real, imaginary last), got {k.shape}")
        out = (k[..., 0] + 1j * k[..., 1]).astype(np.complex64)
    if not np.isfinite(out).all():
        raise ValueError("kspace contains NaN or Inf values")
    return out


def write_singlecoil_h5(
    path: str | os.PathLike,
    kspace: NdarrayOrTensor,
    reconstruction: NdarrayOrTensor | None = None,
    attrs: Mapping[str, Any] | None = None,
    *,
    header: str | None = None,
    owner: str = DEFAULT_OWNER,
) -> str:
    """Write a fastMRI single-coil file (for tests and demos), atomically, marked as ``owner``'s.

    Layout: ``kspace`` complex64 ``(S, H, W)``; ``reconstruction_esc`` float32 ``(S, h, w)`` when given (fastMRI's is
    ``(S, 320, 320)``, e.g. ``complex_abs(center_crop(ifft2c(k), is_complex=True))``; any size is written);
    ``ismrmrd_header`` (``header``, or a minimal one from the shapes); the attributes ``attrs``, plus ``max`` and
    ``norm`` of the reconstruction when it is given and they are not (fastMRI stores the reference's maximum and L2
    norm: our reading of the released files), plus the ownership mark ``lfmri_owner = "lfmri:<owner>"``.

    Goes through :func:`shared_transforms.io.files.atomic_path`; an existing file is replaced only when it carries
    ``owner``'s mark (:func:`shared_transforms.io.ownership.check_replaceable`), else an :class:`InputError` naming it.

    Args:
        path: the destination ``.h5``.
        kspace: complex ``(S, H, W)`` or real ``(S, H, W, 2)`` (numpy or torch).
        reconstruction: real ``(S, h, w)`` or None (then no ``reconstruction_esc``, as fastMRI test files).
        attrs: file attributes (str, numbers).
        header: the ISMRMRD XML text, or None for a minimal one.
        owner: the writer's name in the ownership mark (one word).

    Returns:
        the absolute path written.
    """
    h5py = h5py_module()
    mark = ownership_mark(owner)
    k = _as_complex_kspace(kspace)  # (S, H, W) complex64
    recon = None
    if reconstruction is not None:
        r = reconstruction
        recon = (r.detach().cpu().numpy() if isinstance(r, torch.Tensor) else np.asarray(r)).astype(np.float32)
        if recon.ndim != 3 or recon.shape[0] != k.shape[0]:
            raise ValueError(
                f"reconstruction must have shape ({k.shape[0]}, h, w) to match kspace {k.shape}, got {recon.shape}"
            )
        if not np.isfinite(recon).all():
            raise ValueError("reconstruction contains NaN or Inf values")
    file_attrs = dict(attrs or {})
    if recon is not None:
        file_attrs.setdefault("max", float(recon.max()))
        file_attrs.setdefault("norm", float(np.linalg.norm(recon)))
    file_attrs[OWNER_ATTR] = mark
    if header is None:
        header = _ismrmrd_header(k.shape[1:], recon.shape[1:] if recon is not None else FASTMRI_CROP)
    path = check_replaceable(path, owner)
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(KSPACE, data=k)
        if recon is not None:
            f.create_dataset(RECONSTRUCTION, data=recon)
        f.create_dataset(HEADER, data=header, dtype=h5py.string_dtype("utf-8"))
        for key, value in file_attrs.items():
            f.attrs[key] = value
    return path
