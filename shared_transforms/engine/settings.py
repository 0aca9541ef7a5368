"""The command-line settings of a bundle run, checked before anything is built: a bad value ends the run with one
line naming the setting (``error: --slice_batch_size: must be a positive integer, got 0``), not with a traceback
from deep inside the network or a silently ignored value.

Every inference config calls :func:`check_settings` right after :func:`shared_transforms.engine.bundle.setup_bundle` in
its ``initialize`` list, with the settings it has.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import InputError
from ..io.volumes import as_bool


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"--{name}", f"must be a positive integer, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"--{name}", f"must be a positive integer, got {value!r}") from None
    if not (math.isfinite(number) and number >= 1 and number == int(number)):
        raise InputError(f"--{name}", f"must be a positive integer, got {value!r}")


def check_device(device) -> None:
    """A device the run can use: ``cpu``, or ``cuda``/``cuda:N`` when torch sees that GPU."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError("--device", f"is not a device name: {device!r} (use cpu or cuda)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device", f"{device!r} was asked for, but torch sees no CUDA GPU here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError("--device", f"{device!r}: torch sees only {torch.cuda.device_count()} GPU(s)")
    elif dev.type not in ("cpu", "mps"):
        raise InputError("--device", f"{device!r} is not supported here; use cpu or cuda")


def check_settings(
    device=None,
    target_spacing: Sequence[float] | None = None,
    resample_to_input=None,
    slice_batch_size=None,
    num_steps=None,
    num_samples=None,
) -> bool:
    """Raise :class:`InputError` naming the first bad setting given (None: not a setting of this bundle, or, for
    ``target_spacing``, the file's own voxels). Returns True."""
    if device is not None:
        check_device(device)
    if target_spacing is not None:
        try:
            values = [float(v) for v in target_spacing]
        except (TypeError, ValueError):
            raise InputError("--target_spacing", f"must be three voxel sizes in mm, got {target_spacing!r}") from None
        if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
            raise InputError("--target_spacing", f"must be three positive voxel sizes in mm, got {target_spacing!r}")
    if resample_to_input is not None:
        try:
            as_bool(resample_to_input)
        except ValueError:
            raise InputError("--resample_to_input", f"must be true or false, got {resample_to_input!r}") from None
    for name, value in (("slice_batch_size", slice_batch_size), ("num_steps", num_steps), ("num_samples", num_samples)):
        if value is not None:
            _positive_int(name, value)
    return True
