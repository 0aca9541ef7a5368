"""Shared pieces of the low-field MRI bundles: I/O with clear errors, geometry, intensity normalisation,
low-field simulation, k-space sampling, metrics and the sample volume every bundle runs on by default.

Transforms follow MONAI's array + dictionary pattern (``Foo`` / ``Food``), take channel-first arrays or tensors
``(C, X, Y, Z)`` and are seeded through ``set_random_state`` where they are random.
"""

from .errors import InputError

__all__ = ["InputError"]
