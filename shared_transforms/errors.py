"""The one exception type for bad user input.

Every check in this package raises :class:`InputError` with the offending file (or datalist entry) and the
problem in one sentence, so a user sees ``path/to/scan.nii.gz: contains 12 NaN values`` instead of a traceback
from deep inside a resampler.
"""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input: names the file (or item) and the problem.

    Args:
        source: the file path, datalist entry or object the problem is in.
        problem: what is wrong with it, as a sentence fragment.
    """

    def __init__(self, source: str | os.PathLike | None, problem: str):
        self.source = None if source is None else str(source)
        self.problem = problem
        super().__init__(source, problem)  # every argument, so that pickle and copy rebuild the error

    def __str__(self) -> str:
        return self.problem if self.source is None else f"{self.source}: {self.problem}"


def find_input_error(exc: BaseException | None) -> InputError | None:
    """The :class:`InputError` inside an exception chain (MONAI wraps errors of transforms and config expressions
    in ``RuntimeError``s), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, InputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def install_excepthook() -> None:
    """After the usual traceback, repeat the bad-input message as the last line: ``error: <file>: <problem>``.

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
        if found is not None:
            print(f"error: {found}", file=sys.stderr, flush=True)

    hook._lfmri = True  # type: ignore[attr-defined]
    sys.excepthook = hook
