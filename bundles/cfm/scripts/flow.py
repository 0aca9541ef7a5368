"""The flow of the CFM model: probability path, source and time sampling, training loss (docs/README.md, Method).

torchcfm style: the path is one small class with ``sample_location_and_conditional_flow``; the network is separate
(:mod:`.network`), and so are the ODE solvers (:mod:`shared_transforms.inference.ode`).

The authors' recipe (their train.py; docs/README.md, Method): x0 ~ U(-1, 1) (uniform, not Gaussian), t ~ U(0, 1) per
sample,
x_t = t x1 + (1 - t) x0, target u_t = x1 - x0, loss = MSE(v_theta([x_t, x_low], t), u_t); no sigma_min, no OT
coupling, no weighting. Images are in the model range [-1, 1] (the authors map [0, 255] -> [-1, 1]).

Why MONAI's ``RFlowScheduler`` / ``DiffusionInferer`` (MONAI 1.6.1) are not used, checked in their source:
- ``RFlowScheduler.add_noise(x1, noise, T)`` computes (1 - T/N) x1 + (T/N) noise with N = ``num_train_timesteps``:
  the same straight path, but in reversed time T = N (1 - t) (T = N is noise). The network would then have to be
  fed T instead of the raw t in [0, 1] that the authors' sinusoidal embedding expects (an adapter could convert).
- ``RFlowScheduler.sample_timesteps`` draws from the global RNG (no ``generator`` argument), so training time
  draws could not be seeded per run as the rest of this project is.
- ``RFlowScheduler.set_timesteps`` stores the inference grid as float16 (``astype(np.float16)``): for step counts
  that do not divide N (e.g. 7 steps: T = 857.14 -> 857.0) the time fed to the network is off by up to ~2.5e-4.
- ``RFlowScheduler.step`` is Euler only; the midpoint and Heun solvers of
  :mod:`shared_transforms.inference.ode` cannot be expressed.
- ``DiffusionInferer`` calls ``diffusion_model(x=..., timesteps=..., context=...)`` (keyword names that CFMUNet's
  ``forward(x, t)`` does not take) and passes one timestep ``torch.Tensor((t,))`` for the batch.
The source distribution itself is not a problem (``add_noise`` takes any ``noise`` tensor, uniform included); the
path formula is one line, so it is written here rather than wrapped.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from shared_transforms.transforms.intensity import from_model_range, to_model_range  # the one [0, 1] <-> [-1, 1] map

__all__ = [
    "StraightPath",
    "sample_source",
    "sample_time",
    "model_input",
    "cfm_loss",
    "ConditionalVelocity",
    "to_model_range",
    "from_model_range",
    "SOURCES",
]

SOURCES = ("uniform", "gaussian")


def _pad_time(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape t (B,) (or a scalar) to broadcast against x (B, ...): (B, 1, ..., 1)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        return t
    return t.reshape(-1, *([1] * (x.dim() - 1)))


class StraightPath:
    """Straight (rectified-flow / independent-coupling CFM with sigma = 0) path from x0 (t = 0) to x1 (t = 1).

    x_t = t x1 + (1 - t) x0,  u_t = dx_t/dt = x1 - x0    (docs/README.md, Method; torchcfm
    ``ConditionalFlowMatcher(0)``).
    """

    def compute_mu_t(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Location x_t = t x1 + (1 - t) x0. Shapes: x0, x1 (B, C, H, W); t (B,) or scalar -> (B, C, H, W)."""
        # torch.lerp: one kernel, exact at both ends (x0 + t (x1 - x0) for t < 0.5, x1 - (1 - t)(x1 - x0) above)
        return torch.lerp(x0, x1, _pad_time(t, x1))

    def compute_conditional_flow(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Target velocity u_t = x1 - x0 (independent of t and x_t on the straight path). Shape of x1."""
        return x1 - x0

    def sample_location_and_conditional_flow(
        self,
        x0: torch.Tensor,
        x1: torch.Tensor,
        t: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(t, x_t, u_t) for a batch; t ~ U(0, 1) per sample (``sample_time``) when not given.

        Shapes: x0, x1 (B, C, H, W); t (B,) -> t (B,), x_t (B, C, H, W), u_t (B, C, H, W).
        """
        if x0.shape != x1.shape:
            raise ValueError(f"x0 and x1 must have the same shape, got {list(x0.shape)} and {list(x1.shape)}.")
        if t is None:
            t = sample_time(x1.shape[0], generator=generator, device=x1.device, dtype=x1.dtype)
        return t, self.compute_mu_t(x0, x1, t), self.compute_conditional_flow(x0, x1, t)


def sample_source(
    shape_like: torch.Tensor, kind: str = "uniform", generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Source sample x0 with the shape, dtype and device of ``shape_like``.

    kind "uniform": U(-1, 1) as the authors' code (``torch.rand_like * 2 - 1``; mean 0, variance 1/3;
    docs/README.md, Method).
    kind "gaussian": N(0, 1), the usual CFM source (the authors' solver docstring says Gaussian, their code does not).
    ``generator`` must live on the device of ``shape_like``.
    """
    if kind == "uniform":
        x0 = torch.rand(shape_like.shape, generator=generator, dtype=shape_like.dtype, device=shape_like.device)
        return x0.mul_(2.0).sub_(1.0)
    if kind == "gaussian":
        return torch.randn(shape_like.shape, generator=generator, dtype=shape_like.dtype, device=shape_like.device)
    raise ValueError(f"Unknown source kind {kind!r}: use one of {SOURCES}.")


def sample_time(
    batch: int,
    generator: Optional[torch.Generator] = None,
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Flow times t ~ U(0, 1), one per sample: shape (batch,) (docs/README.md, Method)."""
    return torch.rand(batch, generator=generator, device=device, dtype=dtype)


def model_input(x_t: torch.Tensor, x_low: torch.Tensor) -> torch.Tensor:
    """Network input [x_t, x_low] by channel concatenation: (B, 1, H, W) x 2 -> (B, 2, H, W)."""
    if x_t.shape[0] != x_low.shape[0] or x_t.shape[2:] != x_low.shape[2:]:
        raise ValueError(
            f"x_t {list(x_t.shape)} and x_low {list(x_low.shape)} must share batch and spatial size "
            "(the low-field image must be on the high-field grid)."
        )
    return torch.cat([x_t, x_low], dim=1)


def cfm_loss(
    network: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x1: torch.Tensor,
    x_low: torch.Tensor,
    source: str = "uniform",
    generator: Optional[torch.Generator] = None,
    path: Optional[StraightPath] = None,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Conditional flow-matching loss MSE(v_theta([x_t, x_low], t), u_t) (docs/README.md, Method).

    Args:
        network: v_theta, called as ``network(x, t)`` with x (B, 2, H, W), t (B,) (e.g. CFMUNet).
        x1: high-field target (B, 1, H, W) in [-1, 1].
        x_low: low-field condition on the same grid (B, 1, H, W) in [-1, 1].
        source: "uniform" (authors) or "gaussian" source for x0.
        generator: seeds x0 and t (on the device of x1).
        path: probability path (default: StraightPath).

    Returns:
        (loss, info): scalar mean-squared error, and detached tensors for logging: "t" (B,), "x0", "x_t",
        "target" (u_t) and "prediction" (v_theta), each (B, 1, H, W).
    """
    path = StraightPath() if path is None else path
    x0 = sample_source(x1, source, generator)
    t, x_t, u_t = path.sample_location_and_conditional_flow(x0, x1, generator=generator)
    v = network(model_input(x_t, x_low), t)
    loss = F.mse_loss(v, u_t)
    return loss, {"t": t, "x0": x0, "x_t": x_t, "target": u_t, "prediction": v.detach()}


class ConditionalVelocity:
    """Velocity function v(x, t) = network([x, x_low], t) for the solvers in :mod:`shared_transforms.inference.ode`.

    Keeps one (B, 2, H, W) input buffer with x_low written once; each call copies x into channel 0 instead of
    concatenating anew (one allocation per solve, not per step). The buffer follows x_low's memory format.
    Use under ``torch.inference_mode()`` / ``torch.no_grad()`` (the buffer is overwritten in place each step).

    Shapes: x_low (B, 1, H, W); call: x (B, 1, H, W), t (B,) -> (B, 1, H, W).
    """

    def __init__(self, network: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x_low: torch.Tensor) -> None:
        self.network = network
        self.x_low = x_low
        self._buffer: Optional[torch.Tensor] = None

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self._buffer is None or self._buffer.shape[0] != x.shape[0]:
            self._buffer = model_input(x, self.x_low)
        else:
            self._buffer[:, : x.shape[1]].copy_(x)
        return self.network(self._buffer, t)
