"""Mean and uncertainty channels: the one place that knows how a sampler's K-sample output is laid out.

A sampling bundle (cfm's ODE sampler, diffusion samplers) run with ``num_samples`` K > 1 returns two channels:
:data:`MEAN_CHANNEL` = the mean of the K samples (the enhanced image) and :data:`STD_CHANNEL` = their per-voxel
standard deviation (an uncertainty map). With K = 1 it returns one channel, the sample itself, and no uncertainty.
Inference writes both (:class:`SplitUncertaintyd` before the writer), evaluation and the benchmark score the mean
(:func:`split_mean_std`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch

MEAN_CHANNEL = 0
STD_CHANNEL = 1


def split_mean_std(pred: torch.Tensor, channel_dim: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(C, ...)`` with C = 1 (one sample) or 2 (mean, std) -> ``(mean (1, ...), std (1, ...) or None)``.

    ``channel_dim`` 1 for a batch ``(B, C, ...)``. Other channel counts are an error (not a sampler's output).
    """
    n = pred.shape[channel_dim]
    if n not in (1, 2):
        raise ValueError(f"expected 1 (sample) or 2 (mean, std) channels, got shape {tuple(pred.shape)}")
    mean = pred.narrow(channel_dim, MEAN_CHANNEL, 1)
    std = pred.narrow(channel_dim, STD_CHANNEL, 1) if n == 2 else None
    return mean, std


class SplitUncertaintyd:
    """Postprocessing of one decollated item: a 2-channel ``key`` (mean, std) becomes ``key`` (the mean, 1 channel)
    and ``std_key`` (the std, 1 channel); a 1-channel ``key`` is left as it is and ``std_key`` is not set. With
    ``std_key=None`` the std is dropped (evaluation scores the mean only)."""

    def __init__(self, key: str = "pred", std_key: str | None = "pred_std"):
        self.key, self.std_key = key, std_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        mean, std = split_mean_std(d[self.key])
        d[self.key] = mean
        if std is not None and self.std_key is not None:
            d[self.std_key] = std
        return d
