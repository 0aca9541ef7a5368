"""What a bundle takes as input: the declared input kinds, and the datalist keys of each.

Every bundle declares its kind in its configs (``"input_kind": "lowfield_nifti"`` in ``inference.json`` and
``train.json``); the datalist loader (:func:`shared_transforms.io.datalist.pair_items`,
:func:`~shared_transforms.io.datalist.inference_items`), the benchmark's pairing and the contract test follow the
declaration instead of assuming low/high volumes. A kind says:

- ``datalist_keys``: datalist key -> MONAI engine key (``image`` = the network's input, ``label`` = the reference,
  ``mask`` = the brain mask), e.g. ``{"low": "image", "high": "label", "mask": "mask"}``;
- ``required_keys``: the keys every training/evaluation item must have (besides ``subject``);
- ``inference_key``: the datalist key inference reads from a datalist's items;
- ``suffixes``: the file endings a folder of inputs is filtered by.

Kinds: ``lowfield_nifti`` (the enhancement bundles: interpolation, unet, cfm, amir, diffusion_iqt),
``kspace_hdf5`` (fastMRI single-coil HDF5: ``kspace``, ``reconstruction_esc``) and ``image_to_undersample`` (a
magnitude NIfTI under-sampled on the fly), the last two for the reconstruction bundle ``flat``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class InputKind:
    """One kind of bundle input (see the module docstring)."""

    name: str
    description: str
    datalist_keys: Mapping[str, str]
    required_keys: tuple[str, ...]
    inference_key: str
    suffixes: tuple[str, ...] = NIFTI_SUFFIXES
    path_keys: tuple[str, ...] = field(default=())

    def __post_init__(self):
        if not self.path_keys:  # every datalist key of a kind names a file
            object.__setattr__(self, "path_keys", tuple(self.datalist_keys))

    def accepts(self, filename: str) -> bool:
        """Whether a file name has one of the kind's endings (case-insensitive)."""
        return filename.lower().endswith(self.suffixes)


INPUT_KINDS: dict[str, InputKind] = {
    kind.name: kind
    for kind in (
        InputKind(
            "lowfield_nifti",
            "a low-field 3D NIfTI volume; training pairs are low/high NIfTI volumes with an optional brain mask",
            {"low": "image", "high": "label", "mask": "mask"},
            ("low", "high"),
            "low",
        ),
        InputKind(
            "kspace_hdf5",
            "single-coil Cartesian k-space in fastMRI's HDF5 layout ('kspace', reference 'reconstruction_esc')",
            {"kspace": "kspace", "mask": "mask"},
            ("kspace",),
            "kspace",
            (".h5", ".hdf5"),
        ),
        InputKind(
            "image_to_undersample",
            "a magnitude NIfTI volume whose k-space is simulated and under-sampled on the fly (the image is the "
            "reference); a paired low/high datalist trains it as it is, from its high fields",
            {"high": "label", "mask": "mask"},
            ("high",),
            "high",
        ),
    )
}

DEFAULT_KIND = "lowfield_nifti"


def input_kind(kind: str | InputKind = DEFAULT_KIND) -> InputKind:
    """The registered :class:`InputKind` called ``kind`` (or ``kind`` itself); a clear error for an unknown name."""
    if isinstance(kind, InputKind):
        return kind
    if kind not in INPUT_KINDS:
        raise InputError("input_kind", f"unknown input kind {kind!r}; known kinds: {', '.join(INPUT_KINDS)}")
    return INPUT_KINDS[kind]
