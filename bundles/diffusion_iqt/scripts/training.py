"""DiffusionIQT training in MONAI's ``SupervisedTrainer``: the noising as a ``PrepareBatch``.

As MONAI's ``DiffusionPrepareBatch`` turns a batch into (noisy input, target, timesteps), this turns a batch of
big low/high-field patches into the network input ``[x_t, x_low]``, the target ``x0`` (the network predicts the
clean image) and the time ``logSNR(t)`` (passed to the network as ``time=``), one ``t`` per big patch; the network
shares it among the patch's sub-patches (the authors' ``batch_sample``), and the trainer's ``MSELoss`` is the
authors' L2 loss (:mod:`scripts.diffusion`). ``DiffusionPrepareBatch`` itself draws integer timesteps from the
global RNG and its target is the noise: neither fits this continuous-time, clean-image model.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.utils import convert_to_tensor

from shared_transforms.engine.training import SeededPrepareBatch
from shared_transforms.transforms.intensity import to_model_range

from .diffusion import training_input

__all__ = ["DiffusionIQTPrepareBatch"]


class DiffusionIQTPrepareBatch(SeededPrepareBatch):
    """``batch{"image": x_low, "label": x0}``, each ``(B, 1, X, Y, Z)`` in [0, 1] (big patches) ->
    ``([x_t, x_low] (B, 2, X, Y, Z), x0 (B, 1, X, Y, Z), (), {"time": logSNR (B,)})`` in the model range [-1, 1].

    Args:
        seed: seeds the generator of ``t`` and the noise (one per device, offset by the distributed rank).
    """

    def __call__(self, batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
        # plain tensors: a MetaTensor would carry its metadata through every operation of the network
        x_low, x0 = (
            to_model_range(convert_to_tensor(batchdata[k], track_meta=False).to(device, torch.float32, non_blocking))
            for k in ("image", "label")
        )
        inputs, log_snr = training_input(x0, x_low, generator=self._generator(x0.device))
        return inputs, x0, (), {"time": log_snr}
