"""Shared pieces of the low-field MRI bundles: I/O with clear errors, geometry, intensity normalisation,
low-field simulation, k-space sampling, metrics and the sample volume every bundle runs on by default.

Transforms follow MONAI's array + dictionary pattern (``Foo`` / ``Food``), take channel-first arrays or tensors
``(C, X, Y, Z)`` and are seeded through ``set_random_state`` where they are random.

Submodules load on first use, so a bundle config needs only ``$import shared_transforms`` and can then refer to
``shared_transforms.datalist.inference_items`` and the like.
"""

from __future__ import annotations

import importlib

from .errors import InputError

SUBMODULES = (
    "batch",
    "bundle",
    "checkpoint",
    "checks",
    "datalist",
    "degradation",
    "distributed",
    "errors",
    "evaluation",
    "fastmri",
    "files",
    "flops",
    "geometry",
    "inferers",
    "input_kinds",
    "intensity",
    "io",
    "kspace",
    "lowfield",
    "metrics",
    "ode",
    "ownership",
    "pipelines",
    "preview",
    "registration",
    "sample",
    "settings",
    "simulation",
    "synthesis",
    "training",
    "uncertainty",
)

__all__ = ["InputError", *SUBMODULES]


def __getattr__(name: str):
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
