"""flat's inference over volumes: MONAI-style slice inference of the magnitude, optionally of every cascade.

:class:`FLATSliceInferer` is :class:`shared_transforms.inference.inferers.SliceInferer2D` set up for k-space inputs
(every slice computed, whole slices: a crop or a zero padding of packed k-space would not be the k-space of the cropped
image; the U-Net pads internally) and, with ``return_trajectory``, returning the magnitudes of all ``N + 1``
images of the trajectory (zero-filled first, the reconstruction last) as channels, for ``--save_trajectory true``.
:class:`SplitTrajectoryd` then puts the reconstruction (the last channel) in ``pred`` and the series in
``trajectory``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

import torch
from monai.apps.reconstruction.complex_utils import complex_abs_t
from monai.transforms import MapTransform

from shared_transforms.inference.inferers import SliceInferer2D

__all__ = ["FLATSliceInferer", "SplitTrajectoryd"]


class FLATSliceInferer(SliceInferer2D):
    """Slices along ``spatial_dim`` of packed volumes ``(B, 3, X, Y, Z)`` -> magnitudes ``(B, 1, X, Y, Z)``, or with
    ``return_trajectory`` ``(B, N + 1, X, Y, Z)``. Other arguments as :class:`SliceInferer2D`."""

    def __init__(
        self,
        slice_batch_size: int = 8,
        spatial_dim: int = 2,
        return_trajectory: bool = False,
        progress: bool = False,
        precision: str = "float32",
    ) -> None:
        super().__init__(
            slice_batch_size=slice_batch_size,
            spatial_dim=spatial_dim,
            divisible_by=1,
            empty_threshold=-float("inf"),
            margin_vox=0,
            progress=progress,
            precision=precision,
        )
        self.return_trajectory = bool(return_trajectory)

    def predict(self, slices: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        if not self.return_trajectory:
            return network(slices, *args, **kwargs)
        return complex_abs_t(network(slices, *args, return_trajectory=True, **kwargs).float())  # (n, N + 1, H, W)


class SplitTrajectoryd(MapTransform):
    """``pred`` ``(N + 1, X, Y, Z)`` (a trajectory) -> ``pred`` = its last channel ``(1, X, Y, Z)`` and
    ``trajectory_key`` = the whole series; a one-channel ``pred`` passes unchanged."""

    def __init__(self, keys: str = "pred", trajectory_key: str = "trajectory") -> None:
        super().__init__(keys)
        self.trajectory_key = trajectory_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key].shape[0] > 1:
                d[self.trajectory_key] = d[key]
                d[key] = d[key][-1:]
        return d
