"""The benchmark's runner: a bundle configured and loaded through the engine
(:mod:`shared_transforms.engine.loader`), one volume through its inferer (timed, its evaluations and FLOPs counted),
and the pairs every bundle sees, aligned once per subject (:func:`shared_transforms.transforms.pipelines.pair_transforms`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from shared_transforms.engine.bundle import REPO_ROOT, activate_bundle
from shared_transforms.engine.loader import build_network, bundle_parser, bundle_weights
from shared_transforms.errors import InputError
from shared_transforms.inference.inferers import VolumeInferer, acquisition_plan
from shared_transforms.inference.uncertainty import split_mean_std
from shared_transforms.transforms.pipelines import pair_transforms

from .measure import PeakMemory, Stopwatch, count_gflop_per_evaluation


def available_bundles() -> dict[str, Path]:
    """``{name: folder}`` of every bundle in the checkout with a ``configs/inference.json``."""
    root = REPO_ROOT / "bundles"
    return {p.name: p for p in sorted(root.iterdir()) if (p / "configs" / "inference.json").is_file()}


@dataclass
class Bundle:
    """One method ready to run: its parsed config, and after :func:`load_bundle` its network and inferer."""

    name: str
    root: Path
    parser: Any  # monai.bundle.ConfigParser
    weights: str | None
    network: torch.nn.Module | None = None
    inferer: Any = None
    load_seconds: float = 0.0
    parameters: int = 0
    evaluations_per_unit: int = 0
    unit: str = "volume"
    memory: PeakMemory | None = None


def configure_bundle(name: str, root: Path, overrides: dict, weights: str | None, device: torch.device) -> Bundle:
    """Parse ``<root>/configs/inference.json`` with ``overrides`` (config id -> value) and the device, and find the
    weights file (``weights``, else the config's ``ckpt_path``; None when the config has no ``ckpt_path``): the
    engine's :func:`~shared_transforms.engine.loader.bundle_parser` and
    :func:`~shared_transforms.engine.loader.bundle_weights`, which refuse an unknown config id and a missing weights
    file in one line (before anything runs)."""
    parser = bundle_parser(root, "inference.json", overrides, device)
    return Bundle(name=name, root=root, parser=parser, weights=bundle_weights(parser, weights))


def load_bundle(bundle: Bundle, device: torch.device) -> None:
    """Build ``network`` (``network_def`` moved to the device), load the weights, build ``inferer``; the network
    build and weight load are timed (``load_seconds``) and inside the bundle's memory meter."""
    activate_bundle(bundle.root)
    bundle.memory = PeakMemory(device)
    with bundle.memory.window(load=True), Stopwatch(device) as watch:
        network = build_network(bundle.parser, bundle.weights, "network")
    bundle.load_seconds = watch.seconds
    inferer = bundle.parser.get_parsed_content("inferer")
    bundle.network, bundle.inferer = network, inferer
    bundle.parameters = int(sum(p.numel() for p in network.parameters()))
    if isinstance(inferer, VolumeInferer):
        inferer.progress = False  # the benchmark shows its own bar
        bundle.unit, bundle.evaluations_per_unit = inferer.unit, int(inferer.evaluations_per_unit())
    else:  # a plain MONAI inferer: one network call per volume (none for a network without parameters)
        bundle.unit, bundle.evaluations_per_unit = "volume", 1 if bundle.parameters > 0 else 0


def predict(bundle: Bundle, image: torch.Tensor, device: torch.device) -> tuple[np.ndarray, float, int, float | None]:
    """Run the bundle on one ``(1, X, Y, Z)`` image: ``(pred (X, Y, Z) in [0, 1], seconds, network evaluations,
    GFLOP per evaluation)``.

    The seconds cover the inferer call only (input already on the device, CUDA synchronised); the memory window
    also covers the input's copy to the device. The evaluations are what a :class:`VolumeInferer` counted
    (``last_stats["network_evaluations"]``), else one call per volume. The GFLOP are counted after the timed call, on
    the arguments of the network's first call in it (:func:`count_gflop_per_evaluation`; None when the inferer never
    called the network).
    """
    metered = isinstance(bundle.inferer, VolumeInferer)
    if metered:
        bundle.inferer.reset_stats()
    first_call: dict[str, tuple] = {}

    def keep_first_call(module, args, kwargs):
        first_call.setdefault("call", (args, kwargs))

    hook = bundle.network.register_forward_pre_hook(keep_first_call, with_kwargs=True)
    try:
        with bundle.memory.window(), torch.inference_mode():
            x = image[None].to(device)
            with Stopwatch(device) as watch:
                out = bundle.inferer(x, bundle.network)
            seconds = watch.seconds
    finally:
        hook.remove()
    gflop = count_gflop_per_evaluation(bundle.network, first_call.get("call"))
    mean, _ = split_mean_std(torch.as_tensor(out)[0])  # a sampler's (mean, std): score the mean
    pred = mean[0].float().clamp(0.0, 1.0).cpu().numpy()
    evaluations = bundle.inferer.last_stats["network_evaluations"] if metered else bundle.evaluations_per_unit
    return pred, seconds, int(evaluations), gflop


def striping_axes(bundle: Bundle, image: torch.Tensor) -> tuple[int, int]:
    """``(across, within)`` for the striping index: the axis a slice-wise inferer sliced along in its last call,
    else (3D bundles) the one the 2D bundles' ``"auto"`` slicing takes for this image (:func:`acquisition_plan`), so
    that every row of a table looks across the same axis; and the slice's axis that is not the acquisition's thick
    one (the plan puts the thick axis along the slice's width, or its height when it transposes)."""
    stats = getattr(bundle.inferer, "last_stats", None) or {}
    if "spatial_dim" in stats:
        across, transposed = int(stats["spatial_dim"]), bool(stats.get("transposed", False))
    else:
        across, transposed = acquisition_plan(image[None], 0)
    height, width = (a for a in range(3) if a != across)
    return across, (width if transposed else height)


# ---------------------------------------------------------------------------------------------------------------------
# outputs


def align_pairs(items: list[dict], target_spacing) -> list[dict]:
    """Each item through ``Compose(pair_transforms(target_spacing))``, kept as tensors/arrays:
    ``{"subject", "image" (1, X, Y, Z), "label" (X, Y, Z), "mask" (X, Y, Z) bool, "affine" 4x4, "files"}``.

    The image stays a MetaTensor with only its affine and ``original_affine`` (the low field as acquired), so that
    an inferer that slices along the acquisition (``spatial_dim: "auto"``) sees what the bundle's own inference sees.
    """
    from monai.data import MetaTensor
    from monai.transforms import Compose

    align = Compose(pair_transforms(target_spacing))
    out = []
    for item in tqdm(items, desc="aligning pairs", unit="subject", leave=False):
        d = align(dict(item))
        out.append({
            "subject": str(item["subject"]),
            "image": MetaTensor(d["image"].as_tensor().contiguous(), affine=d["image"].affine,
                                meta={"original_affine": d["image"].meta["original_affine"]}),
            "label": d["label"][0].numpy().astype(np.float32),
            "mask": d["mask"][0].numpy() > 0.5,
            "affine": np.asarray(d["label"].affine, dtype=np.float64),
            "files": [item[k] for k in ("image", "label", "mask") if item.get(k)],
        })
    return out


def common_spacing(bundles: list[Bundle]) -> list[float]:
    """The ``target_spacing`` all bundles share (the evaluation grid); raises when they differ."""
    spacings = {b.name: [float(s) for s in b.parser.get_parsed_content("target_spacing")] for b in bundles}
    first = next(iter(spacings.values()))
    if any(not np.allclose(s, first) for s in spacings.values()):
        raise InputError("--overrides", f"the bundles have different target_spacing {spacings}; give them one "
                         "(e.g. --overrides '{\"unet\": {\"target_spacing\": [1, 1, 1]}}')")
    return first


def common_input_kind(bundles: list[Bundle]) -> str:
    """The input kind all bundles declare (``input_kind`` in their inference.json); raises when they differ, since
    one datalist then cannot feed them all (the pairing follows the declaration)."""
    kinds = {b.name: str(b.parser.get_parsed_content("input_kind")) for b in bundles}
    first = next(iter(kinds.values()))
    if any(k != first for k in kinds.values()):
        raise InputError("--bundles", f"the bundles take different input kinds {kinds}; benchmark them separately")
    if first != "lowfield_nifti":
        raise InputError("--bundles", f"the benchmark pairs low/high NIfTI volumes; input kind {first!r} has its own "
                         "evaluation (see the bundle's docs)")
    return first
