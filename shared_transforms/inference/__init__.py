"""Inference: slice and patch inferers, ODE solvers for the flow bundles, uncertainty from samples.

Modules load on first use (:func:`shared_transforms.lazy_submodules`)."""

from .. import lazy_submodules

SUBMODULES = ("inferers", "ode", "uncertainty")

__all__ = list(SUBMODULES)

__getattr__ = lazy_submodules(__name__, SUBMODULES)
