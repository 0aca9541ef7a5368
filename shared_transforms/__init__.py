"""Shared pieces of the low-field MRI bundles, one sub-package per concern:

- ``io``: reading and writing volumes with clear errors, datalists, files written atomically and their owners, the
  shipped sample, batches that survive a bad file, previews;
- ``transforms``: geometry, intensity normalisation, the contract's checks, the standard pipelines;
- ``simulation``: the low-field simulators and the label-to-image synthesis of training data;
- ``kspace``: Cartesian k-space simulation and under-sampling, fastMRI files;
- ``inference``: slice and patch inferers, ODE solvers, uncertainty from samples;
- ``engine``: a bundle's run (finding it, settings, checkpoints, training helpers, processes, FLOPs, evaluation);
- ``metrics``: image-quality metrics, the papers' scoring protocols and the 2D registration of real-data scoring.

Transforms follow MONAI's array + dictionary pattern (``Foo`` / ``Food``), take channel-first arrays or tensors
``(C, X, Y, Z)`` and are seeded through ``set_random_state`` where they are random.

Submodules load on first use, so a bundle config needs only ``$import shared_transforms`` and can then refer to
``shared_transforms.io.datalist.inference_items`` and the like.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from .errors import InputError


def lazy_submodules(package: str, names: Sequence[str]) -> Callable[[str], object]:
    """A module ``__getattr__`` (PEP 562) that imports ``package.<name>`` on first use, for each of ``names``: a
    bundle config can write ``shared_transforms.io.datalist.inference_items`` after ``$import shared_transforms``,
    and importing the package does not import torch, scipy or MONAI."""

    def __getattr__(name: str):
        if name in names:
            return importlib.import_module(f".{name}", package)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


#: the sub-packages, one concern each
SUBMODULES = ("engine", "errors", "inference", "io", "kspace", "metrics", "simulation", "transforms")

__all__ = ["InputError", "lazy_submodules", *SUBMODULES]

__getattr__ = lazy_submodules(__name__, SUBMODULES)
