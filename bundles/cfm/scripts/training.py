"""Flow-matching training in MONAI's ``SupervisedTrainer``: the path sampling as a ``PrepareBatch``.

As MONAI's ``DiffusionPrepareBatch`` turns a batch into (noisy input, target, timesteps), this turns a batch of
low/high-field slices into the network input [x_t, x_low], the target velocity x1 - x0 and the time t (passed to the
network as ``t=``); the trainer's MSE loss is then the CFM loss of the paper (docs/README.md, Method).
(``DiffusionPrepareBatch`` itself samples integer timesteps and noise from the global RNG, and its target is the
noise: neither fits the flow.)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.utils import convert_to_tensor

from shared_transforms.engine.training import SeededPrepareBatch

from .flow import StraightPath, model_input, sample_source, to_model_range


class FlowMatchingPrepareBatch(SeededPrepareBatch):
    """``batch{"image": x_low, "label": x1}`` (each (B, 1, H, W) in [0, 1]) -> ([x_t, x_low], x1 - x0, (), {"t": t}),
    the network input a plain channels-last tensor (the network's own memory format in train.json).

    Args:
        source: "uniform" (the authors) or "gaussian" source for x0.
        seed: seeds the generator of x0 and t (one per device, offset by the distributed rank).
    """

    def __init__(self, source: str = "uniform", seed: int = 0):
        super().__init__(seed)
        self.source = source
        self.path = StraightPath()

    def __call__(self, batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
        # plain tensors: a MetaTensor would carry its metadata through every operation of the network
        # (measured: twice the time per training step on the CPU)
        x_low, x1 = (
            to_model_range(convert_to_tensor(batchdata[k], track_meta=False).to(device, torch.float32, non_blocking))
            for k in ("image", "label")
        )
        generator = self._generator(x1.device)
        x0 = sample_source(x1, self.source, generator)
        t, x_t, u_t = self.path.sample_location_and_conditional_flow(x0, x1, generator=generator)
        inputs = model_input(x_t, x_low).contiguous(memory_format=torch.channels_last)
        return inputs, u_t, (), {"t": t}
