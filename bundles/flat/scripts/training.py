"""What flat's training adds to MONAI's ``SupervisedTrainer``: the whole trajectory out of the network, the complex
target into the loss, and the loss itself.

- :class:`TrajectoryInferer`: the training inferer; ``inferer(x, network)`` returns ``network.trajectory(x)``
  ``(B, N + 1, H, W, 2)`` instead of the magnitude, so the loss sees every cascade's image.
- :class:`PrepareTargetBatch`: the trainer's ``prepare_batch``; gives ``(image, target)`` with ``target`` the complex
  fully-sampled image ``(B, 2, H, W)`` (MONAI's default would give ``label``, the magnitude).
- :class:`FLATLoss`: final-image L1 on the complex image plus ``alignment_weight`` x the velocity alignment of
  :func:`scripts.flow.velocity_alignment_loss` (FLAT, arXiv 2512.03020, our reading). ``alignment_weight = 0`` is
  the paper's unrolled baseline's final-image-only supervision.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from monai.utils import CommonKeys

from shared_transforms.inference.inferers import AutocastInferer

from .flow import WEIGHTINGS, velocity_alignment_loss

__all__ = ["FLATLoss", "PrepareTargetBatch", "TrajectoryInferer", "complex_from_channels"]


def complex_from_channels(x: torch.Tensor) -> torch.Tensor:
    """``(B, 2, H, W)`` (real, imaginary channels) -> ``(B, 1, H, W, 2)``, the complex layout of the network."""
    if x.ndim != 4 or x.shape[1] != 2:
        raise ValueError(f"expected a complex image as 2 channels (B, 2, H, W), got {tuple(x.shape)}")
    return x.movedim(1, -1)[:, None]


class TrajectoryInferer(AutocastInferer):
    """``inferer(x, network)`` -> ``network(x, return_trajectory=True)`` under the project's autocast
    (``precision``, "auto" = bfloat16 where it is fast): packed inputs ``(B, 3, H, W)`` to the complex images of
    every cascade ``(B, N + 1, H, W, 2)`` in float32 (:class:`scripts.network.FLATReconstructor`; through the module
    call, so a ``DistributedDataParallel`` wrapper sees the forward pass). The FFTs of the data term run on the
    float32 cascade state; only the U-Net's convolutions go to the lower precision."""

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        return super().__call__(inputs, network, *args, return_trajectory=True, **kwargs)


class PrepareTargetBatch:
    """``prepare_batch`` for ``SupervisedTrainer``: ``(batch["image"], batch[target_key])`` on ``device``."""

    def __init__(self, target_key: str = "target") -> None:
        self.target_key = target_key

    def __call__(
        self, batchdata: Mapping, device: torch.device | str | None = None, non_blocking: bool = False, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.target_key not in batchdata:
            raise KeyError(f"the training batch has no {self.target_key!r} (UndersampleVolumed's target_key)")
        image = batchdata[CommonKeys.IMAGE]
        target = batchdata[self.target_key]
        return (
            torch.as_tensor(image).to(device=device, non_blocking=non_blocking),
            torch.as_tensor(target).to(device=device, non_blocking=non_blocking),
        )


class FLATLoss(torch.nn.Module):
    """``L1(x_N, x_0) + alignment_weight * velocity_alignment(trajectory, times, x_0)``.

    Args:
        times: the trajectory's flow times ``(N + 1,)``, 1 down to 0 (``network.net.times``).
        alignment_weight: weight of the velocity alignment term (0: final-image loss only).
        weighting: ``"uniform"`` or ``"inverse_step"`` (:func:`scripts.flow.velocity_alignment_loss`).

    Call: ``loss(trajectory (B, N + 1, H, W, 2), target (B, 2, H, W))`` -> scalar.
    """

    def __init__(self, times: torch.Tensor, alignment_weight: float = 1.0, weighting: str = "uniform") -> None:
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if not alignment_weight >= 0:
            raise ValueError(f"alignment_weight must be >= 0, got {alignment_weight}")
        self.register_buffer("times", torch.as_tensor(times, dtype=torch.float32).detach().clone())
        self.alignment_weight = float(alignment_weight)
        self.weighting = weighting

    def forward(self, trajectory: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if trajectory.ndim != 5 or trajectory.shape[1] != self.times.numel() or trajectory.shape[-1] != 2:
            raise ValueError(f"expected a trajectory (B, {self.times.numel()}, H, W, 2), got {tuple(trajectory.shape)}")
        x0 = complex_from_channels(target.to(trajectory.dtype))  # (B, 1, H, W, 2)
        images = list(trajectory.split(1, dim=1))  # N + 1 of (B, 1, H, W, 2)
        loss = F.l1_loss(images[-1], x0)
        if self.alignment_weight > 0:
            loss = loss + self.alignment_weight * velocity_alignment_loss(
                images, self.times.to(trajectory.device), x0, self.weighting
            )
        return loss
