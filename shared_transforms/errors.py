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
        super().__init__(problem if source is None else f"{source}: {problem}")
