"""Reading and writing: volumes (NIfTI, with the contract's checks), datalists, atomic files and their owners, the
shipped sample, batches, previews.

Modules load on first use (:func:`shared_transforms.lazy_submodules`)."""

from .. import lazy_submodules

SUBMODULES = ("batch", "datalist", "files", "input_kinds", "ownership", "preview", "sample", "volumes")

__all__ = list(SUBMODULES)

__getattr__ = lazy_submodules(__name__, SUBMODULES)
