"""Atomic file writing: the one way this project writes a file.

Every writer (NIfTI volumes, PNG figures, CSV and Markdown tables, JSON datalists, checkpoints) goes through
:func:`atomic_path`: the content is written to a temporary file in the destination folder (``.tmp_*``, so a rename
stays on one file system) and renamed over the target only when the writer finished without an error. A crash or a
kill therefore never leaves a half-written file under the real name, and a failed write leaves no temporary behind.
The standard library has the pieces (``tempfile.mkstemp``, ``os.replace``) but not the pattern, hence this module.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

#: Prefix of the temporary files :func:`atomic_path` makes (beside the target): ``.tmp_<pid>_<random><ending>``.
TMP_PREFIX = ".tmp_"
_TMP_NAME = re.compile(r"^\.tmp_(\d+)_")


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
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}_", suffix=suffix, dir=folder)
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def clean_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove the temporaries a killed writer of this project left in ``folder`` (``.tmp_<pid>_*`` whose process no
    longer runs); a live writer's are kept. Returns the removed paths. Called explicitly at the start of a run (the
    bundles' ``initialize``), never as a side effect of writing."""
    folder = os.fspath(folder)
    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in os.listdir(folder):
        found = _TMP_NAME.match(name)
        path = os.path.join(folder, name)
        if found and os.path.isfile(path) and not _alive(int(found.group(1))):
            os.remove(path)
            removed.append(path)
    return removed
