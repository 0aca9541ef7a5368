"""Training pieces shared by the bundles' trainers: a seeded ``PrepareBatch``.

A sampler-trained bundle (cfm's flow matching, diffusion_iqt's diffusion) turns each batch into a random network
input inside MONAI's ``SupervisedTrainer`` through its ``prepare_batch``. MONAI's ``DiffusionPrepareBatch`` draws
from the global RNG; :class:`SeededPrepareBatch` keeps a generator of its own, so a run is reproducible from its
``seed`` and every distributed rank draws differently.
"""

from __future__ import annotations

import torch
from monai.engines.utils import PrepareBatch

from .distributed import rank_and_world

__all__ = ["SeededPrepareBatch"]


class SeededPrepareBatch(PrepareBatch):
    """Base of a ``PrepareBatch`` with its own random generator: one per device, seeded with ``seed + 1000 * rank``
    (the distributed rank, 0 without ``torch.distributed``); subclasses draw from ``self._generator(device)``.

    Args:
        seed: the generator's seed on rank 0.
    """

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.generator: torch.Generator | None = None

    def _generator(self, device: torch.device) -> torch.Generator:
        if self.generator is None or self.generator.device != torch.device(device):
            rank = rank_and_world()[0]
            self.generator = torch.Generator(device=device).manual_seed(self.seed + 1000 * rank)
        return self.generator
