"""MONAI-style transforms: geometry, intensity normalisation, the contract's checks, and the standard pipelines
built from them.

Modules load on first use (:func:`shared_transforms.lazy_submodules`)."""

from .. import lazy_submodules

SUBMODULES = ("checks", "geometry", "intensity", "pipelines")

__all__ = list(SUBMODULES)

__getattr__ = lazy_submodules(__name__, SUBMODULES)
