"""Loading and shipping weights.

:class:`CheckpointLoader` is MONAI's handler with the contract's error: a missing checkpoint or one that does not fit
the network names the file and says what does not fit, before any output is written. :func:`export_weights` writes
the file a bundle ships as ``models/model.pt``: a plain state dict (loadable with ``weights_only=True``), float16
when float32 would exceed the Model Zoo's 25 MB file limit (``load_state_dict`` copies it back into float32).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from monai.handlers import CheckpointLoader as MonaiCheckpointLoader

from .errors import InputError
from .files import atomic_path

ZOO_FILE_LIMIT_BYTES = 25 * 1024 * 1024


def read_state_dict(path: str | os.PathLike, map_location="cpu") -> dict[str, torch.Tensor]:
    """The model state dict in ``path`` (a plain state dict, or MONAI/Ignite's ``{"model": ...}``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(path, "checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise InputError(path, f"is not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(path, "does not hold a state dict of tensors")
    return dict(obj)


def check_fits(network: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str) -> None:
    """Raise :class:`InputError` naming ``path`` when ``state`` does not fit ``network`` exactly."""
    net = network.module if hasattr(network, "module") and isinstance(network.module, torch.nn.Module) else network
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[:3]}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es) e.g. {shapes[:2]}")
        raise InputError(path, f"checkpoint does not fit the network {type(net).__name__}: " + "; ".join(parts))


class CheckpointLoader(MonaiCheckpointLoader):
    """MONAI's ``CheckpointLoader`` that first checks the file exists and fits ``load_dict["model"]``."""

    def __call__(self, engine) -> None:
        model = self.load_dict.get("model") if isinstance(self.load_dict, Mapping) else None
        state = read_state_dict(self.load_path)
        if model is not None:
            check_fits(model, state, self.load_path)
        super().__call__(engine)


def load_weights(network: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """Load ``path`` into ``network`` (float16 files load into float32 parameters) after the fit check."""
    state = read_state_dict(path)
    check_fits(network, state, os.fspath(path))
    net = network.module if hasattr(network, "module") and isinstance(network.module, torch.nn.Module) else network
    net.load_state_dict(state, strict=True)
    return network


def latest_training_state(output_dir: str | os.PathLike, final_name: str = "checkpoint.pt") -> str:
    """The newest training state in ``output_dir``, for ``--resume true``.

    MONAI's ``CheckpointSaver`` writes ``checkpoint_epoch=N.pt`` every epoch and ``final_name`` only when the run ends
    (or raises): after a killed run only the former exists. Returns the newer of the two (by epoch, the final file
    winning a tie), or the path of ``final_name`` when neither exists (the loader then says it is missing).
    """
    output_dir = os.fspath(output_dir)
    final = os.path.join(output_dir, final_name)
    epochs = []
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            found = re.fullmatch(r"checkpoint_epoch=(\d+)\.pt", name)
            if found:
                epochs.append((int(found.group(1)), os.path.join(output_dir, name)))
    if not epochs:
        return final
    newest = max(epochs)[1]
    if os.path.isfile(final) and os.path.getmtime(final) >= os.path.getmtime(newest):
        return final
    return newest


def export_weights(source: str | os.PathLike | Mapping, destination: str | os.PathLike) -> str:
    """Write a plain state dict for shipping; float16 if the float32 file would be over 25 MB."""
    state = read_state_dict(source) if not isinstance(source, Mapping) else dict(source)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    size = sum(v.numel() * v.element_size() for v in state.values())
    if size > ZOO_FILE_LIMIT_BYTES:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    destination = os.fspath(destination)
    with atomic_path(destination) as tmp:
        torch.save(state, tmp)
    return destination
