"""Atomic file writing: the one way this project writes a file.

Every writer (NIfTI volumes, PNG figures, CSV and Markdown tables, JSON datalists, checkpoints) goes through
:func:`atomic_path`: the content is written to a temporary file in the destination folder (``.tmp_*``, so a rename
stays on one file system) and renamed over the target only when the writer finished without an error. A crash or a
kill therefore never leaves a half-written file under the real name, and a failed write leaves no temporary behind.
The standard library has the pieces (``tempfile.mkstemp``, ``os.replace``) but not the pattern, hence this module.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

#: Prefix of the temporary files :func:`atomic_path` makes (beside the target):
#: ``.tmp_lfmri_<host>_<pid>_<random><ending>``, ``<host>`` the first 8 hex digits of the SHA-256 of the machine's
#: name. Only names of that pattern, from this machine, with a process id that no longer runs, are ever removed
#: (:func:`clean_stale_temporaries`): a user's ``.tmp_*`` file, or another machine's writer on a shared folder, is
#: left alone.
TMP_PREFIX = ".tmp_lfmri_"


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _tmp_name() -> re.Pattern:
    return re.compile(rf"^{re.escape(TMP_PREFIX)}{_host_tag()}_(\d+)_")


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
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{_host_tag()}_{os.getpid()}_", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) and err.filename != path:
            # the writer names the temporary (or nothing): name the file the user asked for
            raise OSError(err.errno, os.strerror(err.errno), path) from err
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike]) -> Iterator[list[str]]:
    """:func:`atomic_path` for files that belong together (an image and its uncertainty map): yields one temporary
    per path, and renames them all only when the block ends without an error, one rename after another, so a crash
    or a kill during the (long) writing leaves none of them half-written or alone; only a kill within the renames
    themselves (microseconds) could. The temporaries are removed when the block raises."""
    with ExitStack() as stack:
        tmps = [stack.enter_context(atomic_path(p)) for p in paths]
        yield tmps
    # ExitStack leaves the contexts in reverse order: each renames its temporary; on an error each removes it


def write_text_atomic(path: str | os.PathLike, text: str, newline: str | None = None) -> str:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`). Returns the absolute path."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline=newline) as f:
            f.write(text)
    return os.path.abspath(os.fspath(path))


def check_writable_folder(folder: str | os.PathLike) -> str:
    """Create ``folder`` if needed and write and remove a probe file in it, so that a run that could not save its
    results says so before computing them. Raises :class:`~shared_transforms.errors.InputError` naming the folder.
    Returns the absolute folder."""
    from ..errors import InputError

    folder = os.path.abspath(os.fspath(folder))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}_", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise InputError(
            folder,
            f"output folder cannot be written ({type(err).__name__}: {err.strerror or err}); "
            "choose another --output_dir",
        ) from None
    return folder


def safe_name(text: str) -> str:
    """``text`` as one file-name component: every run of characters other than letters, digits, ``.``, ``-`` and
    ``_`` becomes ``_``, and leading dots and underscores go, so an id such as ``../x`` or ``a/b`` can never name a
    file outside its folder (``"../x"`` -> ``"x"``, ``"thick 3 mm"`` -> ``"thick_3_mm"``). Raises ``ValueError`` when
    nothing is left."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).lstrip("._").rstrip("_")
    if not name:
        raise ValueError(f"{text!r} gives no usable file name")
    return name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def clean_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove the temporaries a killed writer of this project on this machine left in ``folder``
    (``.tmp_lfmri_<host>_<pid>_*``, see :data:`TMP_PREFIX`, whose process no longer runs); a live writer's, another
    machine's and every other file are kept. Returns the removed paths. Called explicitly at the start of a run (the
    bundles' ``initialize``), never as a side effect of writing."""
    folder = os.fspath(folder)
    removed = []
    if not os.path.isdir(folder):
        return removed
    pattern = _tmp_name()
    for name in os.listdir(folder):
        found = pattern.match(name)
        path = os.path.join(folder, name)
        if found and os.path.isfile(path) and not _alive(int(found.group(1))):
            os.remove(path)
            removed.append(path)
    return removed
