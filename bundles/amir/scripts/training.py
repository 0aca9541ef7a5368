"""AMIR's training loss in MONAI's ``SupervisedTrainer``: L1 plus the weighted load-balancing loss of the routing.

The authors train with ``L1(output, target) + 0.001 * load_loss`` (``main_train_AMIR.py`` of
https://github.com/Yaziwel/All-In-One-Medical-Image-Restoration-via-Task-Adaptive-Routing), where ``load_loss`` is the
sum over the three Spatial Routing Modules of cv²(importance) + cv²(load) of the same forward pass. Seed 002 reports
L1 only; ``load_weight`` is a config value (``load_loss_weight`` in train.json), by default the authors'.

``SupervisedTrainer`` calls ``loss_function(pred, label)``: the load loss is not among those arguments, so this loss
reads it from the network it was built with (``network.last_load_loss``, set by every forward of
:class:`scripts.network.AMIR`; the module inside a ``DistributedDataParallel`` wrapper is looked through). MONAI
has no loss that adds a model's auxiliary term, hence this class.
"""

from __future__ import annotations

import torch
from torch import nn

from .network import OFFICIAL_LOAD_LOSS_WEIGHT


class RoutedL1Loss(nn.Module):
    """``L1(pred, target) + load_weight * network.last_load_loss``; pred, target ``(B, C, H, W)`` -> scalar.

    Args:
        network: the AMIR network the trainer runs (or a ``DistributedDataParallel`` around it).
        load_weight: weight of the load-balancing loss (the authors' 1e-3; 0 gives seed 002's plain L1).

    ``last_l1`` and ``last_load`` keep the two terms of the last call (detached floats) for logging.
    """

    def __init__(self, network: nn.Module, load_weight: float = OFFICIAL_LOAD_LOSS_WEIGHT):
        super().__init__()
        if load_weight < 0:
            raise ValueError(f"load_weight must be >= 0, got {load_weight}")
        self._network = [network]  # a list, so the network is not registered (and saved) as a submodule of the loss
        self.load_weight = float(load_weight)
        self.l1 = nn.L1Loss()
        self.last_l1 = self.last_load = float("nan")

    @property
    def network(self) -> nn.Module:
        net = self._network[0]
        return getattr(net, "module", net)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        l1 = self.l1(pred, target)
        load = getattr(self.network, "last_load_loss", None)
        if load is None:
            raise AttributeError(f"{type(self.network).__name__} has no last_load_loss: RoutedL1Loss needs AMIR")
        load = load.to(l1.device, l1.dtype)
        self.last_l1, self.last_load = float(l1.detach()), float(load.detach())
        return l1 + self.load_weight * load
