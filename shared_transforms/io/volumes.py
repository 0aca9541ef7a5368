"""Reading and writing volumes: MONAI's loader behind the contract's checks, and an atomic NIfTI writer.

Reading reuses MONAI ``LoadImage`` (nibabel reader) and ``EnsureChannelFirst``; what is added is the check of each
bad input of the bundle contract *before* anything runs, so the error names the file and the problem.
Writing is by hand (nibabel) because MONAI's ``SaveImage`` writes in place: here a volume goes through
:func:`shared_transforms.io.files.atomic_path`, so a crash never leaves a half-written NIfTI, and a file this project
did not write is never overwritten (:mod:`shared_transforms.io.ownership`).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelReader
from monai.transforms import EnsureChannelFirst, LoadImage, MapTransform, SpatialResample, Transform
from monai.utils import ensure_tuple

from ..errors import InputError, source_name
from ..transforms.checks import (
    check_nifti_file,
    check_target_grid,
    check_values,
    check_volume_not_slab,
    is_nifti_path,
    squeeze_to_3d_shape,
)
from .files import atomic_path, atomic_paths
from .ownership import check_replaceable, ownership_mark, source_tag

#: The scale note in an output's header (the 80-character ``descrip`` also holds the mark, the input's digest, the
#: contrast and the grid).
NORMALISED_NOTE = "[0,1] (p1-p99)"


#: BIDS contrast suffixes an input file name may end with (``sub-01_T2w.nii.gz``), as written in outputs' headers.
BIDS_CONTRASTS = ("T1w", "T2w", "FLAIR", "PDw", "T2starw", "T1map", "T2map")


#: the output contrast a bundle's default weights give: the input's own (the enhancement keeps the contrast)
SAME_CONTRAST = "input"


def contrast_of(path: str | os.PathLike) -> str:
    """The contrast an enhancement output has: the enhancement bundles keep the input's contrast (their training
    pairs share it), so this is the input's BIDS suffix when its file name has one (``..._T2w.nii.gz`` -> ``T2w``),
    else ``input-contrast``."""
    stem = nifti_stem(os.path.basename(os.fspath(path)))
    for suffix in BIDS_CONTRASTS:
        if stem.lower().endswith(f"_{suffix.lower()}") or stem.lower() == suffix.lower():
            return suffix
    return "input-contrast"


def nifti_stem(path: str | os.PathLike) -> str:
    """File name without folder and without ``.nii``/``.nii.gz`` (or the ``.h5``/``.hdf5`` of a k-space input, whose
    reconstruction is written as NIfTI too)."""
    name = os.path.basename(os.fspath(path))
    for suffix in (".nii.gz", ".nii", ".h5", ".hdf5"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


class LoadVolume(Transform):
    """Load a NIfTI volume as a channel-first MetaTensor ``(1, X, Y, Z)`` after the contract's checks.

    Checks, each raising :class:`InputError` naming the file: missing file, not NIfTI, not 3D (a 4D file with one
    volume is accepted; a 2D slice ``(H, W)`` is read as ``(H, W, 1)``), a singular or non-finite affine, NaN/Inf
    values, an empty or constant volume; with ``volume_only_for`` (a 3D bundle's name), a single slice or thin slab
    (:func:`shared_transforms.transforms.checks.check_volume_not_slab`); with ``target_spacing``, a field of view whose
    grid at that spacing would exceed the voxel limit (:func:`shared_transforms.transforms.checks.check_target_grid`).
    An identity affine (voxel size unknown) gets a one-line warning.
    The MetaTensor carries MONAI's usual meta data (``affine``, ``original_affine``, ``spatial_shape``,
    ``filename_or_obj``), voxels as float32.
    """

    def __init__(
        self,
        dtype: np.dtype | type = np.float32,
        volume_only_for: str | None = None,
        target_spacing: Sequence[float] | None = None,
    ):
        self.volume_only_for = volume_only_for
        self.target_spacing = None if target_spacing is None else tuple(float(v) for v in target_spacing)
        self.dtype = np.dtype(dtype)
        self.loader = LoadImage(reader=NibabelReader(squeeze_non_spatial_dims=True), image_only=True, dtype=dtype)
        self.channel_first = EnsureChannelFirst(channel_dim="no_channel")

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        if isinstance(path, (MetaTensor, torch.Tensor, np.ndarray)):
            raise InputError(None, "LoadVolume expects a file path, got an array")
        path = os.fspath(path)
        if not is_nifti_path(path) and os.path.exists(path) and not os.path.isdir(path):
            hint = (
                "; for fastMRI k-space (HDF5) use the flat bundle with --input_kind kspace_hdf5"
                if path.lower().endswith((".h5", ".hdf5"))
                else ""
            )
            raise InputError(path, f"is not a NIfTI file (expected a .nii or .nii.gz name){hint}")
        header = check_nifti_file(path)
        shape3 = squeeze_to_3d_shape(header.shape)
        if self.volume_only_for:
            check_volume_not_slab(shape3, path, self.volume_only_for)
        check_target_grid(shape3, header.affine, self.target_spacing, path)
        if np.allclose(header.affine, np.eye(4)):
            warn_unknown_voxel_size(path)
        try:
            img = self._load_slice(path, header) if len(header.shape) == 2 else self.loader(path)
        except (EOFError, OSError, ValueError, RuntimeError) as err:  # a truncated .gz or a short .nii
            raise InputError(
                path,
                f"its voxel data could not be read ({type(err).__name__}: {err}); the file may "
                "be truncated or damaged",
            ) from None
        check_values(img.numpy() if isinstance(img, torch.Tensor) else img, path)
        warn_qform_sform(path, header, np.asarray(img.meta.get("original_affine", header.affine)))
        return self.channel_first(img)

    def _load_slice(self, path: str, header: nib.Nifti1Image) -> MetaTensor:
        """A 2D file ``(H, W)`` as the single-slice volume ``(H, W, 1)`` with the file's affine (MONAI's reader
        would give a 2D image with a 3x3 affine, which the 3D pipeline cannot take)."""
        data = np.asarray(header.get_fdata(dtype=np.float32))[..., None]
        affine = torch.as_tensor(header.affine, dtype=torch.float64)
        meta = {
            "filename_or_obj": path,
            "original_affine": header.affine.copy(),
            "spatial_shape": np.asarray(data.shape),
            "original_channel_dim": "no_channel",
        }
        return MetaTensor(torch.from_numpy(data.astype(self.dtype, copy=False)), affine=affine, meta=meta)


def warn_qform_sform(path: str, img: nib.Nifti1Image, used: np.ndarray) -> None:
    """One warning line when a file's qform and sform are both set and disagree (by more than 1e-3 mm), naming the
    one the run uses (``used``: the affine MONAI's reader took)."""
    header = getattr(img, "header", None)
    if header is None or not hasattr(header, "get_qform"):
        return
    qform, q_code = header.get_qform(coded=True)
    sform, s_code = header.get_sform(coded=True)
    if q_code and s_code and not np.allclose(qform, sform, atol=1e-3):
        which = "the qform" if np.allclose(used, qform, atol=1e-3) else "the sform"
        print(f"warning: {path}: its qform and sform disagree; using {which}", flush=True)


_WARNED_UNKNOWN_SPACING: set[str] = set()


def warn_unknown_voxel_size(path: str) -> None:
    """One warning line per file whose affine is the identity: its voxel size is unknown, 1 mm is assumed."""
    if path not in _WARNED_UNKNOWN_SPACING:
        _WARNED_UNKNOWN_SPACING.add(path)
        print(f"warning: {path}: its affine is the identity (voxel size unknown); taking 1 mm voxels", flush=True)


class LoadVolumed(MapTransform):
    """Dictionary version of :class:`LoadVolume`: each key holds a file path and is replaced by its volume."""

    def __init__(
        self,
        keys: KeysCollection,
        dtype: np.dtype | type = np.float32,
        allow_missing_keys: bool = False,
        volume_only_for: str | None = None,
        target_spacing: Sequence[float] | None = None,
    ):
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadVolume(dtype=dtype, volume_only_for=volume_only_for, target_spacing=target_spacing)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


def nifti_image(
    data: np.ndarray | torch.Tensor,
    affine: np.ndarray | torch.Tensor,
    owner: str,
    description: str = "",
    dtype: np.dtype | type = np.float32,
) -> nib.Nifti1Image:
    """A 3D volume ``(X, Y, Z)`` (or ``(1, X, Y, Z)``) as a NIfTI image in mm, marked as ``owner``'s
    (:mod:`shared_transforms.io.ownership`): the header's 80-character ``descrip`` is ``lfmri:<owner> <description>``.
    A channel-first series ``(C, X, Y, Z)``, C > 1 (e.g. flat's per-cascade images), is written as one 4D NIfTI
    ``(X, Y, Z, C)``.

    Args:
        affine: 4x4 voxel-to-world matrix in mm (written as both qform and sform).
        dtype: the on-disk type; float data into an integer type gets nibabel's ``scl_slope`` / ``scl_inter``.
    """
    arr = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if arr.ndim == 4:
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)  # a series: volumes along the 4th axis
    if arr.ndim not in (3, 4):
        raise ValueError(f"a NIfTI volume must be 3D (or a channel-first 4D series), got shape {arr.shape}")
    aff = affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else np.asarray(affine)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    img = nib.Nifti1Image(arr, aff.astype(np.float64))
    img.set_data_dtype(dtype)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = f"{ownership_mark(owner)} {description}".strip()[:79].encode("latin-1", "replace")
    return img


def write_nifti_atomic(
    data: np.ndarray | torch.Tensor,
    affine: np.ndarray | torch.Tensor,
    path: str | os.PathLike,
    owner: str,
    description: str = "",
    inputs: Sequence[str | os.PathLike] = (),
    dtype: np.dtype | type = np.float32,
) -> str:
    """Write one volume (see :func:`nifti_image`) via a temporary file and an atomic rename; ``path`` may replace
    only an earlier file of the same ``owner``, never one of ``inputs``
    (:func:`shared_transforms.io.ownership.check_replaceable`). Returns the absolute path written."""
    path = check_replaceable(path, owner, inputs)
    img = nifti_image(data, affine, owner, description, dtype)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return path


def output_stem_of(data: Mapping, source: str | os.PathLike) -> str:
    """The name stem of an item's outputs: its ``output_stem`` (unique within the run,
    :func:`shared_transforms.io.datalist.output_stems`), else the input file's stem."""
    return data.get("output_stem") or nifti_stem(source)


def output_path_for(input_path: str | os.PathLike, output_dir: str | os.PathLike, bundle_name: str, suffix="") -> str:
    """``<output_dir>/<input name>_<bundle><suffix>.nii.gz`` (the contract's output name); ``input_path`` may be the
    input file or its output stem (:func:`shared_transforms.io.datalist.output_stems`)."""
    return os.path.join(os.fspath(output_dir), f"{nifti_stem(input_path)}_{bundle_name}{suffix}.nii.gz")


class SaveVolumed(MapTransform):
    """Write a predicted volume next to the contract: ``<output_dir>/<input name>_<bundle>.nii.gz``.

    Used as the last postprocessing transform of every bundle's inference (one item of a decollated batch).
    The prediction is written on the grid of the preprocessed image ``ref_key`` (``target_spacing`` covering the
    input's field of view), or, with ``resample_to_input``, resampled by cubic spline onto the input file's own grid.
    Intensities are clipped to [0, 1] and the header says so. Writing is atomic, an item's files (the image and its
    maps) are renamed together, and only this bundle's own earlier outputs are ever replaced (never an input).

    Args:
        keys: prediction key(s), tensors ``(1, X, Y, Z)`` (a ``(C, X, Y, Z)`` series is written as one 4D NIfTI);
            a second key gets its own suffix from ``suffixes``.
        ref_key: the preprocessed input, a MetaTensor whose meta holds ``affine``, ``original_affine``,
            ``spatial_shape`` and ``filename_or_obj``.
        suffixes: per key, appended after ``_<bundle>`` (e.g. ``{"pred_std": "_std"}``).
        clip: clip to [0, 1] (off for maps that are not images, e.g. a standard deviation).
        output_contrast: ``"input"`` (the enhancement keeps the input's contrast; the header says the input's BIDS
            suffix, :func:`contrast_of`) or the contrast the weights produce (``"T1w"``), which the header says and
            every file name ends with.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        bundle_name: str,
        ref_key: str = "image",
        resample_to_input: bool | str = False,
        suffixes: Mapping[str, str] | None = None,
        clip: Mapping[str, bool] | bool = True,
        description: str = NORMALISED_NOTE,
        output_contrast: str = SAME_CONTRAST,
        allow_missing_keys: bool = True,
    ):
        super().__init__(keys, allow_missing_keys)
        self.output_dir = output_dir
        self.bundle_name = bundle_name
        self.ref_key = ref_key
        self.resample_to_input = as_bool(resample_to_input)
        self.suffixes = dict(suffixes or {})
        self.clip = clip
        self.description = description
        self.output_contrast = str(output_contrast)
        # another contrast than the input's is named in the file name too (``sub-01_T2w_unet_T1w.nii.gz``)
        self.same_contrast = self.output_contrast.lower() == SAME_CONTRAST
        tag = "" if self.same_contrast else f"_{self.output_contrast}"
        self.suffixes = {k: self.suffixes.get(k, "") + tag for k in ensure_tuple(keys)}
        self.written: list[str] = []

    def planned_paths(self, item: Mapping) -> list[str]:
        """The files this writer will write for an inference item (``{"image": path, "output_stem": stem}``), so a
        run can check them before computing anything."""
        source = item.get(self.ref_key) if isinstance(item.get(self.ref_key), (str, os.PathLike)) else "volume"
        stem = output_stem_of(item, source)
        return [output_path_for(stem, self.output_dir, self.bundle_name, self.suffixes.get(k, "")) for k in self.keys]

    def check_outputs(self, item: Mapping) -> None:
        """Refuse, before computing, an item whose output would replace an input or a file this bundle did not
        write."""
        source = item.get(self.ref_key)
        is_path = isinstance(source, (str, os.PathLike))
        for path in self.planned_paths(item):
            check_replaceable(path, self.bundle_name, [source] if is_path else [], source if is_path else None)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        ref = d[self.ref_key]
        if not isinstance(ref, MetaTensor):
            raise TypeError(f"SaveVolumed needs the MetaTensor {self.ref_key!r} for its grid")
        source = source_name(ref, "volume")
        paths, images = [], []
        for key in self.key_iterator(d):
            pred = torch.as_tensor(d[key]).detach().float().cpu()
            if pred.ndim == 3:
                pred = pred[None]
            bad = int((~torch.isfinite(pred)).sum())
            if bad:  # damaged or diverged weights: never a file of NaNs reported as written
                raise InputError(
                    source,
                    f"the {self.bundle_name} output ({key}) holds {bad:,} NaN or Inf values of {pred.numel():,} "
                    "(damaged or diverged weights?); nothing was written for it",
                )
            clip = self.clip.get(key, True) if isinstance(self.clip, Mapping) else self.clip
            if clip:
                pred = pred.clamp(0.0, 1.0)
            affine = ref.affine
            if self.resample_to_input:
                dst_affine = torch.as_tensor(np.asarray(ref.meta["original_affine"]), dtype=torch.float64)
                shape = [int(s) for s in np.asarray(ref.meta["spatial_shape"]).tolist()]
                pred = SpatialResample(mode=3, padding_mode="border", dtype=torch.float64)(
                    MetaTensor(pred, affine=ref.affine), dst_affine=dst_affine, spatial_size=shape
                )
                affine = dst_affine
                if clip:
                    pred = pred.clamp(0.0, 1.0)
            path = output_path_for(
                output_stem_of(d, source), self.output_dir, self.bundle_name, self.suffixes.get(key, "")
            )
            grid = "input grid" if self.resample_to_input else "target grid"
            paths.append(check_replaceable(path, self.bundle_name, [source], source))
            contrast = contrast_of(source) if self.same_contrast else self.output_contrast
            note = f"{source_tag(source)} {self.description if clip else key} {contrast} {grid}"
            images.append(nifti_image(torch.as_tensor(pred), affine, self.bundle_name, note))
            d[f"{key}_path"] = paths[-1]
        with atomic_paths(paths) as tmps:  # the image and its maps appear together, or none of them
            for img, tmp in zip(images, tmps, strict=True):
                nib.save(img, tmp)
        for path in paths:
            self.written.append(path)
            print(f"[{self.bundle_name}] wrote {path}", flush=True)
        return d


def as_bool(value: bool | str | int | None) -> bool:
    """Command-line friendly boolean: ``True``, ``"true"``, ``"1"``, ``"yes"`` are true; ``None`` is false."""
    if isinstance(value, str):
        if value.strip().lower() in ("1", "true", "yes", "y", "on"):
            return True
        if value.strip().lower() in ("0", "false", "no", "n", "off", "", "none"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    return bool(value)
