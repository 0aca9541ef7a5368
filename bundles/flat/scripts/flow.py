"""The training target and loss of FLAT (arXiv 2512.03020), our reading: no official code exists.

The conditional probability path is the straight line between the fully-sampled image ``x_0`` (t = 0) and the
zero-filled image ``x_1 = A^H y`` (t = 1):

    x*_t = (1 - t) x_0 + t x_1,    velocity dx*/dt = x_1 - x_0 (constant).

Velocity alignment (our reading): each cascade's output ``x_k`` at grid time ``t_k`` is supervised against the point
of the path at that time, ``x*_{t_k}``, with an L1 loss averaged over the N cascades (the zero-filled start at t = 1
matches by construction and is left out; the last term, t = 0, is the usual final-image L1). With
``weighting="inverse_step"`` each term is divided by the step ``|delta|`` that produced it: if the step started on
the path, ``x_k - x*_{t_k} = -|delta| (v_hat - v*)``, so ``L1 / |delta|`` is the L1 error of the velocity the cascade
applied - an alignment of velocities, not positions. Those weights are ``1/|delta| = N`` on the default uniform grid
(alpha = 0) and span ~4 to ~1700 for N = 12, alpha = 2, so that loss is on a larger scale than the uniform one.

Images are complex ``(B, 1, H, W, 2)`` (real, imaginary last); ``x_0`` is the complex fully-sampled image
``F^H k`` (for k-space simulated from a magnitude image with no phase, the magnitude image + 0i).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["WEIGHTINGS", "interpolated_target", "velocity_alignment_loss"]

WEIGHTINGS = ("uniform", "inverse_step")


def interpolated_target(x0: torch.Tensor, x1: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """``x*_t = (1 - t) x_0 + t x_1``.

    Args:
        x0: fully-sampled image ``(B, 1, H, W, 2)``.
        x1: zero-filled image, same shape.
        t: a float, a 0-d tensor or one time per sample ``(B,)``.

    Returns:
        ``(B, 1, H, W, 2)``; ``x0`` at t = 0, ``x1`` at t = 1.
    """
    t = torch.as_tensor(t, dtype=x0.dtype, device=x0.device)
    if t.ndim == 1:
        t = t.reshape(-1, *([1] * (x0.ndim - 1)))  # (B, 1, 1, 1, 1)
    return (1 - t) * x0 + t * x1


def velocity_alignment_loss(
    images: Sequence[torch.Tensor], times: torch.Tensor | Sequence[float], x0: torch.Tensor, weighting: str = "uniform"
) -> torch.Tensor:
    """Mean over cascades of ``w_j * L1(z_j, x*_{tau_j})``, j = 1..N (module docstring).

    Args:
        images: the trajectory ``[z_0 = x_1 (zero-filled), z_1, ..., z_N = output]`` of
            ``FLATNet.trajectory(...)``, each ``(B, 1, H, W, 2)``.
        times: their times ``(N + 1,)``, 1 down to 0.
        x0: the fully-sampled image ``(B, 1, H, W, 2)``.
        weighting: ``"uniform"`` (w = 1) or ``"inverse_step"`` (w_j = 1 / (tau_{j-1} - tau_j)).

    Returns:
        scalar loss.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    times = torch.as_tensor(times, dtype=x0.dtype, device=x0.device)
    if len(images) < 2 or times.shape != (len(images),):
        raise ValueError(
            f"need N + 1 >= 2 images and as many times, got {len(images)} images, times {tuple(times.shape)}"
        )
    x1 = images[0].detach()  # A^H y: data, not a prediction
    x0 = x0.detach()
    terms = []
    for j in range(1, len(images)):
        term = F.l1_loss(images[j], interpolated_target(x0, x1, times[j]))
        if weighting == "inverse_step":
            term = term / (times[j - 1] - times[j])
        terms.append(term)
    return torch.stack(terms).mean()
