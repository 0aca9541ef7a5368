"""The whole CFM sampler as a MONAI ``Inferer``: ``inferer(inputs, network)`` enhances a volume.

Every non-empty sagittal slice of the low-field volume (on the output grid, [0, 1]) is the condition x_low; from a
source sample x0 (uniform on [-1, 1] as the authors, or Gaussian) the ODE dx/dt = v_theta([x, x_low], t) is solved
from t = 0 to 1 with the chosen solver and number of steps (docs/README.md, Method); the result, back on [0, 1], is the
enhanced slice. With ``num_samples`` K > 1 the K samples (different x0) give the mean (channel 0) and the per-voxel
standard deviation (channel 1): an uncertainty map, which the paper names as future work
(:mod:`shared_transforms.uncertainty` splits them).

Slicing, empty-slice skipping, cropping to the head and batching are :class:`shared_transforms.inferers.SliceInferer2D`'s;
this class adds only the sampler, so MONAI's evaluators and MONAI Label (which call ``inferer(inputs, network)``) get
the enhanced image.
"""

from __future__ import annotations

from typing import Callable

import torch

from shared_transforms.inferers import SliceInferer2D
from shared_transforms.ode import evaluations, solve

from .flow import ConditionalVelocity, from_model_range, sample_source, to_model_range


class FlowMatchingInferer(SliceInferer2D):
    """Sample the CFM ODE for every sagittal slice of ``(B, 1, X, Y, Z)`` volumes in [0, 1].

    Args:
        num_steps: ODE steps (the step study in docs/README.md chose the default).
        solver: "euler" (the paper), "midpoint" or "heun".
        source: "uniform" (the authors' code) or "gaussian"; must match training.
        num_samples: K samples per slice; K > 1 returns ``(B, 2, X, Y, Z)``: mean and standard deviation.
        seed: the source samples are drawn from a generator seeded with this at every call (reproducible output).
        channels_last: run the network in channels-last memory format (faster convolutions on CPU).
        other args: see :class:`SliceInferer2D` (``slice_batch_size``, ``precision``, ``progress``, ...).
    Returns (call):
        ``(B, 1, X, Y, Z)`` enhanced volume in [0, 1], or ``(B, 2, X, Y, Z)`` (mean, std) when K > 1.
    """

    def __init__(
        self,
        num_steps: int = 4,
        solver: str = "euler",
        source: str = "uniform",
        num_samples: int = 1,
        seed: int = 0,
        channels_last: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_steps, self.solver, self.source = int(num_steps), solver, source
        self.num_samples, self.seed, self.channels_last = int(num_samples), int(seed), bool(channels_last)
        evaluations(self.solver, self.num_steps)  # validates solver and steps now, not after loading a volume
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.generator: torch.Generator | None = None

    def evaluations_per_unit(self) -> int:
        """Network evaluations for one slice: solver evaluations x samples."""
        return evaluations(self.solver, self.num_steps) * self.num_samples

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        self.generator = torch.Generator(device=inputs.device).manual_seed(self.seed)
        if self.channels_last and isinstance(network, torch.nn.Module):
            network = network.to(memory_format=torch.channels_last)
        with torch.inference_mode():
            return super().__call__(inputs, network, *args, **kwargs)

    def predict(self, slices: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        """(N, 1, H, W) low-field slices in [0, 1] -> (N, 1 or 2, H, W)."""
        x_low = to_model_range(slices)
        if self.channels_last:
            x_low = x_low.contiguous(memory_format=torch.channels_last)
        velocity = ConditionalVelocity(network, x_low)
        samples = []
        for _ in range(self.num_samples):
            x0 = sample_source(x_low, self.source, self.generator)
            samples.append(from_model_range(solve(velocity, x0, self.num_steps, self.solver)).float())
        if self.num_samples == 1:
            return samples[0].clamp_(0.0, 1.0)
        stack = torch.stack(samples)  # (K, N, 1, H, W)
        return torch.cat([stack.mean(0).clamp_(0.0, 1.0), stack.std(0)], dim=1)
