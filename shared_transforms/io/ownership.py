"""Which files a run may replace: only its own earlier outputs, never an input and never a user's file.

Every file this project writes carries the name of its writer, its *owner*: ``lfmri:<owner>`` at the start of a
NIfTI header's ``descrip``, in a PNG's ``Software`` text chunk, and in an HDF5 file's ``lfmri_owner`` attribute. The
owner is the bundle for inference outputs (``cfm``), or the tool for data and reports (``make_demo_data``,
``prepare_data``, ``stress``, ``benchmark``). A later run may replace a file only when its mark names the same
owner; anything else at an output path - a user's scan, the shipped sample, another bundle's or tool's output, a
file marked the older way (``lfmri <text>``, without an owner) - is refused before anything is computed. nibabel and
Pillow (matplotlib's own dependency) read the marks; the rule is written here because neither has one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..errors import InputError

#: Start of every mark: ``lfmri:<owner>``.
MARK_PREFIX = "lfmri:"
#: The PNG text chunk that holds the mark (one of the keys matplotlib's PNG writer accepts).
PNG_MARK_KEY = "Software"
#: The HDF5 file attribute that holds the mark (fastMRI-layout files, :mod:`shared_transforms.kspace.fastmri`).
H5_MARK_ATTR = "lfmri_owner"


def ownership_mark(owner: str) -> str:
    """``lfmri:<owner>``; ``owner`` is one word (a bundle or tool name)."""
    owner = str(owner)
    if not owner or any(c.isspace() for c in owner):
        raise ValueError(f"an owner is one non-empty word, got {owner!r}")
    return f"{MARK_PREFIX}{owner}"


def _is_nifti(path: str) -> bool:
    return path.lower().endswith((".nii", ".nii.gz"))


def _mark_text(path: str) -> str:
    """The text that holds an existing file's mark (NIfTI ``descrip``, PNG text chunk, HDF5 attribute); "" when the
    file has none or cannot be read."""
    text = ""
    try:
        if _is_nifti(path):
            import nibabel as nib

            descrip = nib.load(path).header.get("descrip")
            text = descrip.tobytes().split(b"\0")[0].decode("latin-1") if descrip is not None else ""
        elif path.lower().endswith(".png"):
            from PIL import Image

            with Image.open(path) as img:
                text = str(img.info.get(PNG_MARK_KEY, ""))
        elif path.lower().endswith((".h5", ".hdf5")):
            import h5py

            with h5py.File(path, "r") as f:
                value = f.attrs.get(H5_MARK_ATTR, "")
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    except Exception:  # noqa: BLE001 - any unreadable file (nibabel, gzip, Pillow errors alike) is not ours
        return ""
    return text


def _owner_in(text: str) -> str | None:
    if not text.startswith(MARK_PREFIX):
        return None
    owner = text[len(MARK_PREFIX) :].split(" ", 1)[0]
    return owner or None


def written_by(path: str | os.PathLike) -> str | None:
    """The owner named in an existing file's mark, or None (no mark, an unreadable file, another format)."""
    return _owner_in(_mark_text(os.fspath(path)))


#: The token after the owner in an output's mark that names the input it was made from: ``src:<8 hex digits>``.
SOURCE_PREFIX = "src:"


def source_tag(source: str | os.PathLike) -> str:
    """``src:<8 hex>`` of the absolute path of the input an output was made from (the mark has 80 characters:
    a digest, not the path)."""
    import hashlib

    digest = hashlib.sha256(os.path.abspath(os.fspath(source)).encode("utf-8", "surrogateescape")).hexdigest()
    return f"{SOURCE_PREFIX}{digest[:8]}"


def check_replaceable(
    path: str | os.PathLike,
    owner: str,
    inputs: Sequence[str | os.PathLike | None] = (),
    source: str | os.PathLike | None = None,
) -> str:
    """Return ``path`` (absolute) when it may be written by ``owner``: it does not exist, or it holds ``owner``'s
    own mark and is none of ``inputs``; with ``source``, a NIfTI output must also have been made from that same
    input (its mark's :func:`source_tag`), so that a run never replaces an earlier output of another input that
    happens to share the file name. Raises :class:`InputError` naming the file otherwise."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.lexists(path):
        return path
    for src in inputs:
        src = os.fspath(src) if src else ""
        if src and os.path.exists(src) and os.path.exists(path) and os.path.samefile(path, src):
            raise InputError(path, "output would overwrite an input file; choose another --output_dir")
    if not os.path.isfile(path) or os.path.islink(path):
        raise InputError(path, "exists and is not a plain file; refusing to replace it")
    mark = _mark_text(path)  # read once: the owner, and the input an output was made from
    found = _owner_in(mark)
    if found != owner:
        who = f"was written by {found}, not by {owner}" if found else f"was not written by {owner} (no mark of its)"
        raise InputError(path, f"exists and {who}; refusing to overwrite it - remove it or choose another --output_dir")
    if source is not None and _is_nifti(path):
        tags = [t for t in mark.split() if t.startswith(SOURCE_PREFIX)]
        if tags and tags[0] != source_tag(source):
            raise InputError(
                path,
                f"exists and holds {owner}'s output of another input than {os.fspath(source)}; refusing to replace "
                "it - choose another --output_dir",
            )
    return path
