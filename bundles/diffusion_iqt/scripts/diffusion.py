"""DiffusionIQT's diffusion: continuous time, cosine log-SNR schedule, the network predicts the clean image.

As in the authors' code (github.com/edshkim98/DiffusionIQT, ``GaussianDiffusionContinuousTimes`` of
``imagen_pytorch3D.py``, from lucidrains/imagen-pytorch; Kingma et al. 2021, "Variational Diffusion Models"):

- ``logSNR(t) = -log(cos((t + s) / (1 + s) * pi / 2)^-2 - 1)``, ``s = 0.008``, ``t`` in [0, 1] (1 = pure noise);
  ``alpha = sqrt(sigmoid(logSNR))``, ``sigma = sqrt(sigmoid(-logSNR))``, ``x_t = alpha x_0 + sigma eps``;
- training: ``t ~ U(0, 1)``, one ``t`` for all sub-patches of a big patch (the network shares it); the network sees
  ``[x_t, x_low]`` and ``logSNR(t)`` and predicts ``x_0``; the loss is the mean squared error to ``x_0``;
- sampling from ``t = 1`` to ``0`` on ``T`` uniform steps: ``"ancestral"`` draws from the posterior
  ``q(x_s | x_t, x_0 = x0_hat)`` (mean ``alpha_s (x_t (1 - c) / alpha_t + c x0_hat)``, variance ``sigma_s² c``,
  ``c = -expm1(logSNR_t - logSNR_s)``), without noise in the last step; ``"ddim"`` is the deterministic step
  ``x_s = alpha_s x0_hat + sigma_s eps_hat`` (Song et al. 2021) with ``eps_hat = (x_t - alpha_t x0_hat) / sigma_t``,
  whose last step returns ``x0_hat``.
  ``x0_hat`` is clamped below at ``min_bound`` (the authors: the normalised zero, -0.7203 for their z-scoring).

MONAI's schedulers (``DDPMScheduler``, ``DDIMScheduler``) and ``DiffusionInferer`` work on a discrete grid of
training timesteps with a ``beta`` table; this model is trained and sampled in continuous time through logSNR (a
discrete table would only approximate the cosine schedule the network was trained on), so the few lines are here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["SAMPLERS", "alpha_sigma", "cosine_log_snr", "posterior", "q_sample", "sample", "training_input"]

SAMPLERS = ("ancestral", "ddim")

#: the network: ``denoise(x_t_and_condition (B, 2, ...), log_snr (B,)) -> x0_hat (B, 1, ...)``
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cosine_log_snr(t: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """The cosine schedule's ``logSNR(t)``: decreasing in ``t``, about 8.8 at 0, very negative at 1 (alpha ~ 0)."""
    return -torch.log((torch.cos((t + s) / (1 + s) * math.pi * 0.5) ** -2 - 1).clamp(min=1e-5))


def alpha_sigma(log_snr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sqrt(sigmoid(logSNR)), sqrt(sigmoid(-logSNR)))``: ``alpha² + sigma² = 1``."""
    return torch.sigmoid(log_snr).sqrt(), torch.sigmoid(-log_snr).sqrt()


def _per_sample(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return value.reshape(-1, *([1] * (like.dim() - 1)))


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_t, logSNR(t))`` for ``x0`` ``(B, C, ...)`` and ``t`` ``(B,)``."""
    log_snr = cosine_log_snr(t)
    alpha, sigma = alpha_sigma(_per_sample(log_snr, x0))
    return alpha * x0 + sigma * noise, log_snr


def posterior(
    x0_hat: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ``q(x_s | x_t, x_0 = x0_hat)`` for ``s = t_next < t`` (VDM eq. 33, the authors' form)."""
    log_snr, log_snr_next = _per_sample(cosine_log_snr(t), x_t), _per_sample(cosine_log_snr(t_next), x_t)
    alpha, _ = alpha_sigma(log_snr)
    alpha_next, sigma_next = alpha_sigma(log_snr_next)
    c = -torch.expm1(log_snr - log_snr_next)
    return alpha_next * (x_t * (1 - c) / alpha + c * x0_hat), sigma_next**2 * c


def training_input(
    x0: torch.Tensor, condition: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's training input ``([x_t, condition] (B, 2, ...), logSNR(t) (B,))``, ``t ~ U(0, 1)`` per sample
    (a big patch: the network shares its ``t`` among the patch's sub-patches); the loss is then the mean squared
    error of the network's output to ``x0`` (the trainer's ``MSELoss``). ``x0``, ``condition``: ``(B, 1, ...)``.
    """
    t = torch.rand(x0.shape[0], generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t, log_snr = q_sample(x0, t, noise)
    return torch.cat((x_t, condition), dim=1), log_snr


@torch.no_grad()
def sample(
    denoise: Denoiser,
    condition: torch.Tensor,
    num_steps: int = 20,
    sampler: str = "ancestral",
    min_bound: float | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """A sample ``x_0`` ``(B, 1, ...)`` given ``condition`` ``(B, 1, ...)`` (the low field on the target grid).

    ``num_steps`` uniform steps from ``t = 1`` to ``0``; ``sampler`` one of :data:`SAMPLERS`; the start and the
    ancestral noise come from ``generator``; ``callback(step, num_steps)`` after each step (progress).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    b, device, dtype = condition.shape[0], condition.device, condition.dtype
    x = torch.randn(condition.shape, generator=generator, device=device, dtype=dtype)
    times = torch.linspace(1.0, 0.0, num_steps + 1, device=device, dtype=dtype)
    for i in range(num_steps):
        t, t_next = times[i].expand(b), times[i + 1].expand(b)
        log_snr = cosine_log_snr(t)
        x0_hat = denoise(torch.cat((x, condition), dim=1), log_snr)
        if min_bound is not None:
            x0_hat = x0_hat.clamp(min=min_bound)
        last = i == num_steps - 1
        if sampler == "ddim" and last:
            x = x0_hat  # sigma(0) = 0.0125 (the offset s), not 0: the last step returns the clean estimate itself
        elif sampler == "ddim":
            alpha, sigma = alpha_sigma(_per_sample(log_snr, x))
            alpha_next, sigma_next = alpha_sigma(_per_sample(cosine_log_snr(t_next), x))
            x = alpha_next * x0_hat + sigma_next * (x - alpha * x0_hat) / sigma
        else:
            mean, var = posterior(x0_hat, x, t, t_next)
            noise = torch.randn(x.shape, generator=generator, device=device, dtype=dtype)
            x = mean if last else mean + var.sqrt() * noise
        if callback is not None:
            callback(i + 1, num_steps)
    return x
