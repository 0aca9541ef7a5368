"""Speed of the reconstruction: seconds per slice and per volume, and peak memory, for a model of the bundle.

The network is built from ``configs/inference.json`` (with any overrides, e.g. ``mode``) and loaded with its weights;
the input is a 256 x 256 slice of simulated k-space (a smooth random image, fastMRI's 8x random mask with centre
fraction 0.04: the cost does not depend on the content), packed as the bundle's network input. Timed:

- ``seconds_per_slice``: ``network(x)`` on one slice (batch 1), the median of ``repeats`` runs after ``warmup``;
- ``seconds_per_volume``: a volume of ``num_slices`` such slices through the bundle's own inferer
  (``scripts.inference.FLATSliceInferer``, ``slice_batch_size`` from the config), once after the warm-up;
- ``peak_memory_mb``: on CUDA ``torch.cuda.max_memory_allocated`` over the volume run; on the CPU the process's peak
  resident set (``resource.getrusage``), Python, torch and the weights included, so an upper bound.

Run from the repository root::

    python tools/study.py flat_speed                       # FLAT, 12 cascades
    python tools/study.py flat_speed --mode learned_steps --ckpt_path bundles/flat/models/model_unrolled.pt

Prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import statistics
from pathlib import Path

import torch

from shared_transforms.engine import loader
from shared_transforms.kspace.fourier import kspace_from_magnitude
from shared_transforms.kspace.masks import cartesian_mask

from benchmarking.measure import Stopwatch

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "flat"


def packed_slice(size: int = 256, acceleration: float = 8.0, center_fraction: float = 0.04, seed: int = 0):
    """One packed network input ``(1, 3, size, size)``: the k-space of a smooth random image under a random mask."""
    pack_inputs = loader.bundle_module(BUNDLE, "network").pack_inputs
    g = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.avg_pool2d(torch.rand(1, 1, size, size, generator=g), 9, 1, 4)
    kspace = kspace_from_magnitude(image)  # (1, 1, H, W, 2)
    mask = cartesian_mask((size, size), acceleration, center_fraction, "random", seed=seed).view(1, 1, 1, size, 1)
    return pack_inputs(kspace, mask)


@torch.no_grad()
def main(
    mode: str = "flow",
    ckpt_path: str | None = None,
    size: int = 256,
    num_slices: int = 36,
    warmup: int = 2,
    repeats: int = 10,
    device: str | None = None,
    num_cascades: int | None = None,
) -> dict:
    """The measurement (module docstring); returns and prints the result."""
    overrides = {"mode": mode}
    if device:
        overrides["device"] = f"$torch.device({str(device)!r})"
    if num_cascades:
        overrides["num_cascades"] = int(num_cascades)
    parser = loader.bundle_parser(BUNDLE, "inference.json", overrides)
    dev = parser.get_parsed_content("device")
    ckpt = loader.bundle_weights(parser, ckpt_path, "--ckpt_path")
    network = loader.build_network(parser, ckpt, "network")
    inferer = parser.get_parsed_content("inferer")
    inferer.progress = False

    x = packed_slice(size).to(dev)
    for _ in range(warmup):
        network(x)
    times = []
    for _ in range(repeats):
        with Stopwatch(dev) as watch:
            network(x)
        times.append(watch.seconds)

    volume = x[..., None].expand(-1, -1, -1, -1, int(num_slices)).contiguous()  # (1, 3, H, W, S): slices along z
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with Stopwatch(dev) as watch:
        out = inferer(volume, network)
    seconds_volume = watch.seconds
    if tuple(out.shape[-3:]) != (size, size, int(num_slices)):
        raise RuntimeError(f"the inferer returned {tuple(out.shape)} for a volume of {tuple(volume.shape)}")
    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kB
    result = {
        "mode": mode,
        "checkpoint": ckpt,
        "num_cascades": int(parser.get_parsed_content("num_cascades")),
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "slice": [size, size],
        "seconds_per_slice": round(statistics.median(times), 4),
        "num_slices": int(num_slices),
        "slice_batch_size": int(parser.get_parsed_content("slice_batch_size")),
        "seconds_per_volume": round(seconds_volume, 2),
        "peak_memory_mb": round(peak_mb, 1),
    }
    print(json.dumps(result))
    return result
