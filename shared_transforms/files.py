"""Atomic file writing: the one way this project writes a file.

Every writer (NIfTI volumes, PNG figures, CSV and Markdown tables, JSON datalists, checkpoints) goes through
:func:`atomic_path`: the content is written to a temporary file in the destination folder (``.tmp_*``, so a rename
stays on one file system) and renamed over the target only when the writer finished without an error. A crash or a
kill therefore never leaves a half-written file under the real name, and a failed write leaves no temporary behind.
The standard library has the pieces (``tempfile.mkstemp``, ``os.replace``) but not the pattern, hence this module.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

#: Prefix of the temporary files :func:`atomic_path` makes (beside the target).
TMP_PREFIX = ".tmp_"


def _default_mode() -> int:
    """The permissions a plain ``open(path, "w")`` would give under the current umask (mkstemp makes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block ends without an error.

    Args:
        path: the destination; its folder is created if missing.
        suffix: the temporary file's ending (writers such as nibabel and matplotlib pick the format from it);
            by default the destination's own ending (``.nii.gz`` counts as one).

    The temporary file is removed when the block raises. Usage::

        with atomic_path("out/table.csv") as tmp:
            with open(tmp, "w") as f:
                f.write(text)
    """
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    if suffix is None:
        name = os.path.basename(path).lower()
        suffix = ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: str | os.PathLike, text: str, newline: str | None = None) -> str:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`). Returns the absolute path."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline=newline) as f:
            f.write(text)
    return os.path.abspath(os.fspath(path))
