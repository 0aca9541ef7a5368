"""A bundle's run: finding and loading the bundle, checked settings, checkpoints, training helpers, processes, FLOP
counting, evaluation handlers.

Modules load on first use (:func:`shared_transforms.lazy_submodules`)."""

from .. import lazy_submodules

SUBMODULES = ("bundle", "checkpoint", "distributed", "evaluation", "flops", "loader", "settings", "training")

__all__ = list(SUBMODULES)

__getattr__ = lazy_submodules(__name__, SUBMODULES)
