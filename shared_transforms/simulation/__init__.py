"""Synthetic low field: the simulators (blur-gamma, tissue contrast, randomised degradation), their shared
machinery, and label-to-image synthesis.

Modules load on first use (:func:`shared_transforms.lazy_submodules`)."""

from .. import lazy_submodules

SUBMODULES = ("common", "degradation", "dictionary", "lowfield", "psf", "synthesis")

__all__ = list(SUBMODULES)

__getattr__ = lazy_submodules(__name__, SUBMODULES)
