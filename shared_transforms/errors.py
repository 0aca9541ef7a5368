"""The one exception type for bad user input.

Every check in this package raises :class:`InputError` with the offending file (or datalist entry) and the
problem in one sentence, so a user sees ``path/to/scan.nii.gz: contains 12 NaN values`` instead of a traceback
from deep inside a resampler.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator


def source_name(img: object, default: str | None = None) -> str | None:
    """The file a loaded volume came from (its MetaTensor meta's ``filename_or_obj``), else ``default``: the name
    an error message, a subject column or an output file takes."""
    meta = getattr(img, "meta", None) or {}
    name = meta.get("filename_or_obj") if hasattr(meta, "get") else None
    return str(name) if name else default


class InputError(ValueError):
    """Bad input: names the file (or item) and the problem.

    Args:
        source: the file path, datalist entry or object the problem is in.
        problem: what is wrong with it, as a sentence fragment.
    """

    def __init__(self, source: str | os.PathLike | None, problem: str):
        self.source = None if source is None else str(source)
        self.problem = one_line(problem)  # a library's message may span several lines
        super().__init__(source, problem)  # every argument, so that pickle and copy rebuild the error

    def __str__(self) -> str:
        return self.problem if self.source is None else f"{self.source}: {self.problem}"


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc``, then its cause (or context), and so on, each once (MONAI wraps errors of transforms and config
    expressions in ``RuntimeError``s)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        yield exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__


def one_line(text: object) -> str:
    """``text`` with its whitespace, newlines included, collapsed to single spaces."""
    return " ".join(str(text).split())


def find_input_error(exc: BaseException | None) -> InputError | None:
    """The :class:`InputError` inside an exception chain, or None."""
    return next((e for e in exception_chain(exc) if isinstance(e, InputError)), None)


#: errno values of a write the file system had no room for (full disk, quota, file-size limit)
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation that failed: Python's and numpy's ``MemoryError``, torch's CUDA ``OutOfMemoryError``, and
    torch's CPU allocator, which raises a plain ``RuntimeError`` ("DefaultCPUAllocator: can't allocate memory")."""
    return (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"
        or (isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))
    )


def find_out_of_memory(exc: BaseException | None) -> BaseException | None:
    """The failed allocation (:func:`is_out_of_memory`) in an exception chain, or None."""
    return next((e for e in exception_chain(exc) if is_out_of_memory(e)), None)


def describe_fault(exc: BaseException | None) -> str | None:
    """One line for the faults of the machine, not of the input, that a user can act on: no room on the disk, no
    memory, input nested beyond Python's recursion limit; found anywhere in the exception chain. None otherwise (a
    bug keeps its traceback as the only report)."""
    for e in exception_chain(exc):
        if isinstance(e, OSError) and e.errno in _NO_ROOM:
            where = f"{e.filename}: " if e.filename else ""
            return (
                f"{where}the file system has no room for the output ({os.strerror(e.errno)}); nothing was written "
                "under its name: free space (or raise the quota or the file-size limit) and run again, or choose another "
                "--output_dir"
            )
        if is_out_of_memory(e):
            return (
                f"out of memory ({one_line(e)[:160] or type(e).__name__}): the input or the run does not fit in this "
                "machine's memory; try --slice_batch_size 1, a coarser --target_spacing, or a machine with more memory"
            )
        if isinstance(e, RecursionError):
            return (
                "an input is nested too deeply to be read (a JSON datalist or config nested beyond Python's "
                "recursion limit); check the file"
            )
    return None


def install_excepthook() -> None:
    """After the usual traceback, repeat the reason as the last line: ``error: <file>: <problem>`` for bad input
    (:class:`InputError`), ``error: <what to do>`` for a fault of the machine (:func:`describe_fault`).

    MONAI's runner reports a bad input as ``RuntimeError: applying transform ...`` with the real reason further up
    the chain; this makes the reason the line a user reads. Installed once by the bundle helpers.
    """
    import sys

    previous = sys.excepthook
    if getattr(previous, "_lfmri", False):
        return

    def hook(exc_type, exc, tb):
        previous(exc_type, exc, tb)
        found = find_input_error(exc)
        reason = str(found) if found is not None else describe_fault(exc)
        if reason is not None:
            print(f"error: {reason}", file=sys.stderr, flush=True)

    hook._lfmri = True  # type: ignore[attr-defined]
    sys.excepthook = hook
