"""fastMRI single-coil HDF5 files: a checked reader, fastMRI's 320 x 320 centre crop, a MONAI loading transform
(the ``kspace_hdf5`` input kind of the reconstruction bundle ``flat``).

fastMRI single-coil layout (Zbontar et al., arXiv 1811.08839; files ``singlecoil_*/*.h5``):

- dataset ``kspace``: complex64 ``(slices, H, W)``, the (emulated single-coil) k-space of every slice;
- dataset ``reconstruction_esc``: float32 ``(slices, 320, 320)``, ``|centre_crop(F^H k)|`` (absent in test files);
- dataset ``ismrmrd_header``: the ISMRMRD XML header, a scalar string;
- file attributes such as ``acquisition`` (e.g. ``"CORPD_FBK"``), ``max`` and ``norm`` of the reference,
  ``patient_id``.

Multi-coil files (``kspace`` of shape ``(slices, coils, H, W)``, reference ``reconstruction_rss``) are refused:
only single-coil is supported.

What MONAI has and what is added here:

- MONAI's :class:`monai.apps.reconstruction.fastmri_reader.FastMRIReader` reads every dataset of a file eagerly (no
  single slice), checks nothing, and without a ``mask`` dataset allocates a zero mask the size of the k-space; so
  :func:`read_singlecoil_h5` uses h5py directly: it checks the layout from the dataset headers before reading any
  data, reads one slice when asked, and raises one :class:`~shared_transforms.errors.InputError` naming the file.
- The centre crop is MONAI's :class:`monai.transforms.CenterSpatialCrop`; :func:`center_crop` only adds fastMRI's
  refusal of an image smaller than the crop (MONAI silently leaves such an axis uncropped) and the complex flag.
- :class:`LoadFastMRId` (dictionary transform) is new; so is the writer, :mod:`.fastmri_writer`.

Complex convention as in :mod:`shared_transforms.kspace.fourier`: a trailing dimension of 2 (real, imaginary).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import CenterSpatialCrop, MapTransform
from monai.utils import ensure_tuple
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor

from ..errors import InputError
from ..io.ownership import H5_MARK_ATTR
from ..transforms.checks import MAX_VOXELS_ENV, check_input_file, max_voxels

__all__ = [
    "FASTMRI_CROP",
    "HDF5_SUFFIXES",
    "HEADER",
    "KSPACE",
    "OWNER_ATTR",
    "RECONSTRUCTION",
    "FastMRISingleCoil",
    "LoadFastMRId",
    "center_crop",
    "count_slices",
    "read_singlecoil_h5",
    "h5py_module",
]

#: fastMRI's crop of the reference reconstruction (``reconstruction_esc`` and ``reconstruction_rss``).
FASTMRI_CROP = (320, 320)
#: fastMRI dataset names.
KSPACE, RECONSTRUCTION, HEADER = "kspace", "reconstruction_esc", "ismrmrd_header"
#: File attribute that holds this project's ownership mark ``lfmri:<owner>`` in an HDF5 file.
OWNER_ATTR = H5_MARK_ATTR
HDF5_SUFFIXES = (".h5", ".hdf5")


def h5py_module():
    try:
        import h5py
    except ImportError as err:  # not yet in the project's dependencies everywhere
        raise ImportError("reading fastMRI files needs h5py: pip install h5py") from err
    return h5py


class FastMRISingleCoil(NamedTuple):
    """What :func:`read_singlecoil_h5` returns.

    Attributes:
        kspace: float32 ``(S, H, W, 2)`` for the whole file, ``(1, H, W, 2)`` for one slice (real, imaginary last).
        reconstruction: float32 ``(S, h, w)`` / ``(1, h, w)`` (``reconstruction_esc``; fastMRI: h = w = 320), or None
            when the file has none (fastMRI test files).
        attrs: the file attributes, numpy scalars as Python numbers and bytes as str.
        header: the ISMRMRD XML header as text, or None.
        num_slices: S, the number of slices in the file.
    """

    kspace: np.ndarray
    reconstruction: np.ndarray | None
    attrs: dict[str, Any]
    header: str | None
    num_slices: int


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------


@contextmanager
def _open(path: str) -> Iterator[Any]:
    """Open ``path`` read-only as HDF5, or raise an :class:`InputError` naming it."""
    h5py = h5py_module()
    path = check_input_file(path, "a fastMRI HDF5 file (.h5)")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as err:
        raise InputError(path, f"cannot be read ({type(err).__name__}: {err})") from None
    if not is_hdf5:
        raise InputError(path, "is not an HDF5 file (expected fastMRI's .h5 layout with a 'kspace' dataset)")
    try:
        f = h5py.File(path, "r")
    except OSError as err:  # truncated or corrupt HDF5
        raise InputError(path, f"is not a readable HDF5 file ({type(err).__name__}: {err})") from None
    try:
        yield f
    finally:
        f.close()


def _kspace_dataset(f: Any, path: str) -> Any:
    """The checked ``kspace`` dataset (from its header only: nothing is read)."""
    h5py = h5py_module()
    if KSPACE not in f:
        found = ", ".join(sorted(f.keys())) or "nothing"
        raise InputError(path, f"has no {KSPACE!r} dataset (found: {found}); expected fastMRI's single-coil layout")
    ds = f[KSPACE]
    if not isinstance(ds, h5py.Dataset):
        raise InputError(path, f"{KSPACE!r} is a group, expected a complex dataset (slices, H, W)")
    shape = tuple(int(s) for s in ds.shape)
    if len(shape) == 4:
        raise InputError(
            path,
            f"holds multi-coil k-space of shape {shape} (slices, coils, H, W); only single-coil k-space "
            "(slices, H, W) is supported (fastMRI singlecoil_* files)",
        )
    if len(shape) != 3:
        raise InputError(path, f"{KSPACE!r} must be 3D (slices, H, W), got shape {shape}")
    if ds.dtype.kind != "c":
        raise InputError(path, f"{KSPACE!r} must be complex (complex64), got dtype {ds.dtype}")
    if shape[0] < 1 or min(shape[1:]) < 2:
        raise InputError(path, f"{KSPACE!r} of shape {shape} needs at least 1 slice of at least 2 x 2 samples")
    n = int(np.prod(np.asarray(shape, dtype=np.int64)))
    if n > max_voxels():
        raise InputError(
            path,
            f"{KSPACE!r} claims {n:,} samples {shape}, more than the limit of {max_voxels():,}; "
            f"if the file is real, raise the limit with the environment variable {MAX_VOXELS_ENV}",
        )
    return ds


def _reference_dataset(f: Any, path: str, num_slices: int) -> Any | None:
    """The checked ``reconstruction_esc`` dataset, or None when the file has none."""
    if RECONSTRUCTION not in f:
        return None
    h5py = h5py_module()
    ds = f[RECONSTRUCTION]
    shape = tuple(int(s) for s in getattr(ds, "shape", ()))
    if not isinstance(ds, h5py.Dataset) or len(shape) != 3:
        raise InputError(path, f"{RECONSTRUCTION!r} must be a 3D dataset (slices, 320, 320), got shape {shape}")
    if ds.dtype.kind not in "fiu":
        raise InputError(path, f"{RECONSTRUCTION!r} must be real (float32), got dtype {ds.dtype}")
    if shape[0] != num_slices:
        raise InputError(path, f"{RECONSTRUCTION!r} has {shape[0]} slices but {KSPACE!r} has {num_slices}")
    return ds


def _check_finite(arr: np.ndarray, path: str, what: str) -> None:
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(arr.size - finite.sum() - n_nan)
        raise InputError(path, f"{what} contains {n_nan} NaN and {n_inf} Inf values")


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (bytes -> str, numpy scalar -> number)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _slice_index(index: Any, num_slices: int, path: str) -> int:
    if isinstance(index, torch.Tensor) and index.numel() == 1:
        index = index.item()
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise InputError(path, f"slice index must be an integer, got {index!r}")
    index = int(index)
    if not -num_slices <= index < num_slices:
        raise InputError(path, f"slice {index} is out of range: the file holds {num_slices} slices")
    return index % num_slices


def _complex_to_pairs(k: np.ndarray) -> np.ndarray:
    """complex ``(..., H, W)`` -> float32 ``(..., H, W, 2)`` (real, imaginary)."""
    return np.stack([k.real, k.imag], axis=-1).astype(np.float32)


def read_singlecoil_h5(path: str | os.PathLike, slice_index: int | None = None) -> FastMRISingleCoil:
    """Read a fastMRI single-coil HDF5 file (all slices, or one) after checking its layout.

    Raises :class:`~shared_transforms.errors.InputError` naming the file when it is missing, not HDF5 or unreadable,
    has no ``kspace``, holds multi-coil k-space (4D), a ``kspace`` that is not complex or not 3D, a
    ``reconstruction_esc`` that does not fit it, or NaN/Inf values (only the slices read are checked).

    Args:
        path: the ``.h5`` file.
        slice_index: one slice to read (negative counts from the end), or None for the whole file.

    Returns:
        :class:`FastMRISingleCoil`: k-space ``(S, H, W, 2)`` or ``(1, H, W, 2)`` float32, the reference
        ``(S, 320, 320)`` / ``(1, 320, 320)`` float32 or None, the attributes, the header text, S.
    """
    path = os.fspath(path)
    with _open(path) as f:
        ds = _kspace_dataset(f, path)
        num_slices = int(ds.shape[0])
        ref_ds = _reference_dataset(f, path, num_slices)
        index = None if slice_index is None else _slice_index(slice_index, num_slices, path)
        what = f"{KSPACE!r}" if index is None else f"{KSPACE!r} slice {index}"
        try:
            k = ds[()] if index is None else ds[index][None]  # (S, H, W) or (1, H, W) complex
            ref = None
            if ref_ds is not None:
                ref = ref_ds[()] if index is None else ref_ds[index][None]  # (S, h, w) or (1, h, w)
        except OSError as err:  # a dataset whose data cannot be read (truncated file)
            raise InputError(path, f"{what} cannot be read ({type(err).__name__}: {err})") from None
        _check_finite(k, path, what)
        if ref is not None:
            _check_finite(ref, path, f"{RECONSTRUCTION!r}" + ("" if index is None else f" slice {index}"))
            ref = ref.astype(np.float32)
        attrs = {str(key): _plain(value) for key, value in f.attrs.items()}
        header = None
        if HEADER in f and isinstance(f[HEADER], h5py_module().Dataset):
            header = _plain(f[HEADER][()])
            header = header if isinstance(header, str) else None
    return FastMRISingleCoil(_complex_to_pairs(k), ref, attrs, header, num_slices)


def count_slices(path: str | os.PathLike) -> int:
    """The number of slices of a fastMRI single-coil file, after the layout checks of :func:`read_singlecoil_h5`
    (no data read): for building a datalist of slices."""
    path = os.fspath(path)
    with _open(path) as f:
        return int(_kspace_dataset(f, path).shape[0])


# ----------------------------------------------------------------------------------------------------------------
# Centre crop
# ----------------------------------------------------------------------------------------------------------------


def center_crop(
    image: NdarrayOrTensor, size: Sequence[int] = FASTMRI_CROP, is_complex: bool = False
) -> NdarrayOrTensor:
    """fastMRI's centre crop of the last two spatial dims (``reconstruction_esc`` = ``|center_crop(F^H k)|``).

    Rows ``(H - h) // 2 : (H - h) // 2 + h`` and columns ``(W - w) // 2 : ... + w``, as fastMRI's ``center_crop``;
    done by MONAI's :class:`~monai.transforms.CenterSpatialCrop` (whose start ``H // 2 - h // 2`` is the same for
    even ``h``, as 320). Unlike MONAI, an image smaller than the crop is refused, as fastMRI does.

    Args:
        image: real ``(..., H, W)`` or, with ``is_complex``, ``(..., H, W, 2)``; at least one leading dim
            (channel-first, e.g. ``(S, H, W)``).
        size: ``(h, w)``, fastMRI's (320, 320) by default; even sizes keep the crop identical to fastMRI's.
        is_complex: the last dim is (real, imaginary) and is kept.

    Returns:
        the crop ``(..., h, w)`` or ``(..., h, w, 2)``, same array type as ``image``.
    """
    h, w = (int(s) for s in size)
    spatial = image.shape[-3:-1] if is_complex else image.shape[-2:]
    min_ndim = 4 if is_complex else 3
    if image.ndim < min_ndim or (is_complex and image.shape[-1] != 2):
        want = "(C, ..., H, W, 2)" if is_complex else "(C, ..., H, W)"
        raise ValueError(f"center_crop expects a channel-first image {want}, got shape {tuple(image.shape)}")
    if spatial[0] < h or spatial[1] < w:
        raise ValueError(f"image of size {tuple(spatial)} is smaller than the crop {(h, w)}")
    n_spatial = image.ndim - 1
    roi = [-1] * (n_spatial - (3 if is_complex else 2)) + [h, w] + ([-1] if is_complex else [])
    cropped = CenterSpatialCrop(roi_size=roi, lazy=False)(convert_to_tensor(image, track_meta=False))
    return convert_to_dst_type(cropped, image)[0]


# ----------------------------------------------------------------------------------------------------------------
# MONAI dictionary transform
# ----------------------------------------------------------------------------------------------------------------


class LoadFastMRId(MapTransform):
    """Load fastMRI single-coil files named in ``data[key]`` into k-space, reference and meta data.

    For each key (the path of a ``.h5`` file, e.g. the ``kspace`` entry of a ``kspace_hdf5`` datalist item):

    - ``data[kspace_key]``: float32 tensor ``(S, H, W, 2)``, or ``(1, H, W, 2)`` for one slice (the channel-first
      single-coil k-space of :class:`~shared_transforms.kspace.sampling.CartesianUndersample`);
    - ``data[target_key]``: float32 tensor ``(S, 320, 320)`` / ``(1, 320, 320)``, the ``reconstruction_esc``
      reference, when the file has one (an :class:`InputError` instead with ``require_target``);
    - ``data[meta_key]``: a dict with ``filename_or_obj``, ``num_slices``, ``slice_index`` (-1 for all slices),
      ``attrs`` (the file attributes) and ``ismrmrd_header`` (text, "" when absent).

    Args:
        keys: keys holding file paths.
        kspace_keys: where the k-space goes, one per key; None (default) replaces the path by the k-space.
        target_keys: where the reference goes, one per key (default ``"target"``).
        meta_keys: where the meta dict goes, one per key; None gives ``f"{kspace_key}_meta_dict"``.
        slice_index: read this slice of every file (negative counts from the end), or None for all slices.
        slice_key: key of each item's own slice index (a datalist of slices); overrides ``slice_index``.
        require_target: refuse a file without ``reconstruction_esc`` (training, evaluation).
        allow_missing_keys: as MONAI's.
    """

    def __init__(
        self,
        keys: KeysCollection,
        kspace_keys: KeysCollection | None = None,
        target_keys: KeysCollection = "target",
        meta_keys: KeysCollection | None = None,
        slice_index: int | None = None,
        slice_key: str | None = None,
        require_target: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.kspace_keys = self.keys if kspace_keys is None else ensure_tuple(kspace_keys)
        self.target_keys = ensure_tuple(target_keys)
        self.meta_keys = (
            tuple(f"{k}_meta_dict" for k in self.kspace_keys) if meta_keys is None else ensure_tuple(meta_keys)
        )
        for name, value in (
            ("kspace_keys", self.kspace_keys),
            ("target_keys", self.target_keys),
            ("meta_keys", self.meta_keys),
        ):
            if len(value) != len(self.keys):
                raise ValueError(f"need one of {name} per key: keys={self.keys}, {name}={value}")
        self.slice_index = slice_index
        self.slice_key = slice_key
        self.require_target = require_target

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, kspace_key, target_key, meta_key in self.key_iterator(
            d, self.kspace_keys, self.target_keys, self.meta_keys
        ):
            path = d[key]
            if not isinstance(path, (str, os.PathLike)):
                raise InputError(key, f"LoadFastMRId expects a file path, got {type(path).__name__}")
            path = os.fspath(path)
            index = d[self.slice_key] if self.slice_key is not None else self.slice_index
            sample = read_singlecoil_h5(path, index)
            if sample.reconstruction is None and self.require_target:
                raise InputError(
                    path, f"has no reference {RECONSTRUCTION!r} dataset, needed for training and evaluation"
                )
            d[kspace_key] = torch.as_tensor(sample.kspace)
            if sample.reconstruction is not None:
                d[target_key] = torch.as_tensor(sample.reconstruction)
            d[meta_key] = {
                "filename_or_obj": path,
                "num_slices": sample.num_slices,
                "slice_index": -1 if index is None else _slice_index(index, sample.num_slices, path),
                "attrs": sample.attrs,
                "ismrmrd_header": sample.header or "",
            }
        return d


# ----------------------------------------------------------------------------------------------------------------
# Writing (tests and demos)
# ----------------------------------------------------------------------------------------------------------------
