"""k-space: single-coil Cartesian simulation and under-sampling, and fastMRI's HDF5 files.

Modules load on first use (:func:`shared_transforms.lazy_submodules`)."""

from .. import lazy_submodules

SUBMODULES = ("fastmri", "fastmri_writer", "fourier", "masks", "sampling")

__all__ = list(SUBMODULES)

__getattr__ = lazy_submodules(__name__, SUBMODULES)
