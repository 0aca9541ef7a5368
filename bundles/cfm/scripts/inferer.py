"""The whole CFM sampler as a MONAI ``Inferer``: ``inferer(inputs, network)`` enhances a volume.

Every non-empty sagittal slice of the low-field volume (on the output grid, [0, 1]) is the condition x_low; from a
source sample x0 (uniform on [-1, 1] as the authors, or Gaussian) the ODE dx/dt = v_theta([x, x_low], t) is solved
from t = 0 to 1 with the chosen solver and number of steps (docs/README.md, Method); the result, back on [0, 1], is the
enhanced slice. With ``num_samples`` K > 1 the K samples (different x0) give the mean (channel 0) and the per-voxel
standard deviation (channel 1): an uncertainty map, which the paper names as future work
(:mod:`shared_transforms.inference.uncertainty` splits them).

Slicing, empty-slice skipping, cropping to the head and batching are
:class:`shared_transforms.inference.inferers.SliceInferer2D`'s; this class adds only the sampler, so MONAI's evaluators
and MONAI Label (which call ``inferer(inputs, network)``) get the enhanced image.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from shared_transforms.inference.inferers import SliceInferer2D
from shared_transforms.inference.ode import evaluations, solve

from .flow import ConditionalVelocity, from_model_range, sample_source, to_model_range

#: how the source samples of a volume's slices relate: independent for every slice (the paper), one shared by all
#: slices, or a field that varies smoothly across slices (correlation ``source_correlation_slices``)
SOURCE_PER = ("slice", "volume", "smooth")


def smooth_source_field(
    n_slices: int,
    shape_hw: tuple[int, int],
    kind: str,
    sigma_slices: float,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``(n_slices, 1, H, W)`` source samples whose value at each pixel varies smoothly from slice to slice.

    Standard normal noise, Gaussian-filtered across slices (``sigma_slices``, scipy, reflecting at the ends) and
    rescaled to unit variance slice by slice (each slice's exact variance from the filter's weights), is a normal field
    correlated across slices (correlation exp(-d^2 / (4 sigma^2)) at a distance of d slices); each pixel's marginal
    is exactly the source's: N(0, 1), or for "uniform" U(-1, 1) through the normal's CDF (``erf(g / sqrt 2)``).
    Written here: neither MONAI nor torch draws noise correlated along one axis.
    """
    from scipy.ndimage import gaussian_filter1d

    g = torch.randn((n_slices, 1, *shape_hw), generator=generator, device=generator.device, dtype=torch.float32)
    field = gaussian_filter1d(g.cpu().numpy(), sigma_slices, axis=0, mode="reflect", truncate=4.0)
    # the filter is linear: slice i is sum_j W[i, j] g_j, of variance sum_j W[i, j]^2 (the reflection at the ends
    # repeats draws, most in a thin slab), so each slice is rescaled by its own
    weights = gaussian_filter1d(np.eye(n_slices), sigma_slices, axis=0, mode="reflect", truncate=4.0)
    std = np.sqrt((weights**2).sum(1)).astype(np.float32)
    field = torch.from_numpy(field / std[:, None, None, None])
    if kind == "uniform":
        field = torch.special.erf(field / 2**0.5)
    elif kind != "gaussian":
        raise ValueError(f"Unknown source kind {kind!r}")
    return field.to(device=device, dtype=dtype)


class FlowMatchingInferer(SliceInferer2D):
    """Sample the CFM ODE for every sagittal slice of ``(B, 1, X, Y, Z)`` volumes in [0, 1].

    Args:
        num_steps: ODE steps (the step study in docs/README.md chose the default).
        solver: "euler" (the paper), "midpoint" or "heun".
        source: "uniform" (the authors' code) or "gaussian"; must match training.
        num_samples: K samples per slice; K > 1 returns ``(B, 2, X, Y, Z)``: mean and standard deviation.
        seed: the source samples are drawn from a generator seeded with this at every call (reproducible output).
        channels_last: run the network in channels-last memory format (faster convolutions on CPU).
        source_per: "slice" draws x0 for every slice (the paper: neighbouring slices get independent noise, which
            shows as stripes across slices); "volume" draws one x0 per sample, shared by every slice of the volume
            (what remains of the noise is then the same in every slice: streaks along the slicing axis); "smooth"
            draws a field that varies smoothly across slices (:func:`smooth_source_field`, correlation length
            ``source_correlation_slices``), neither (:data:`SOURCE_PER`).
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
        source_per: str = "smooth",
        source_correlation_slices: float = 4.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if source_per not in SOURCE_PER:
            raise ValueError(f"source_per must be one of {SOURCE_PER}, got {source_per!r}")
        self.source_per = source_per
        self.source_correlation_slices = float(source_correlation_slices)
        if self.source_correlation_slices <= 0:
            raise ValueError(f"source_correlation_slices must be > 0, got {source_correlation_slices}")
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
        self._sources: dict = {}  # source_per "volume" / "smooth": each sample's x0 of the volume, drawn once
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
        for k in range(self.num_samples):
            if self.source_per == "volume":
                key = (k, tuple(x_low.shape[1:]), x_low.dtype)
                if key not in self._sources:
                    self._sources[key] = sample_source(x_low[:1], self.source, self.generator)
                x0 = self._sources[key].expand_as(x_low).clone()
            elif self.source_per == "smooth":
                indices, n_slices = self.slice_positions or (torch.arange(x_low.shape[0]), x_low.shape[0])
                key = (k, n_slices, tuple(x_low.shape[1:]), x_low.dtype)
                if key not in self._sources:
                    self._sources[key] = smooth_source_field(
                        n_slices,
                        tuple(x_low.shape[-2:]),
                        self.source,
                        self.source_correlation_slices,
                        self.generator,
                        x_low.device,
                        x_low.dtype,
                    )
                x0 = self._sources[key][indices.to(self._sources[key].device)].clone()
            else:
                x0 = sample_source(x_low, self.source, self.generator)
            samples.append(from_model_range(solve(velocity, x0, self.num_steps, self.solver)).float())
        if self.num_samples == 1:
            return samples[0].clamp_(0.0, 1.0)
        stack = torch.stack(samples)  # (K, N, 1, H, W)
        return torch.cat([stack.mean(0).clamp_(0.0, 1.0), stack.std(0)], dim=1)
