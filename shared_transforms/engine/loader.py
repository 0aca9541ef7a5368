"""Loading a bundle outside its runner: the one way the benchmark, the sweep, the stress test, the MONAI Label app,
the study scripts and the tests build a bundle's objects from its configs.

MONAI's runner (``python -m monai.bundle run``) parses a bundle's configs and runs its ``initialize`` list; code that
wants the bundle's network or inferer itself (to time it, to serve it, to study it) needs the same objects without
running the workflow. Three steps, each usable alone:

- :func:`bundle_parser`: MONAI's ``ConfigParser`` over ``<root>/configs/<files>`` with the bundle's ``scripts``
  importable (:func:`.bundle.activate_bundle`), ``bundle_root`` pinned to the folder found, the device set and
  ``overrides`` (config id -> value) applied; an unknown id is refused in one line naming the bundle and its ids.
- :func:`bundle_weights`: the weights file to load (given, else the config's ``ckpt_path``), checked to exist.
- :func:`build_network`: the config's network (``network`` or ``network_def``) with those weights (checksummed by
  :func:`.checkpoint.load_weights`), in eval mode.

:func:`load_bundle` does all three and builds the inferer. Written here: MONAI's ``ConfigWorkflow`` would run the
bundle's ``initialize`` (which claims output folders and checks run settings) and has no "objects only" mode.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from .bundle import activate_bundle
from .checkpoint import load_weights

__all__ = ["LoadedBundle", "bundle_parser", "bundle_weights", "build_network", "load_bundle"]


def bundle_parser(
    root: str | os.PathLike,
    configs: str | Sequence[str] = "inference.json",
    overrides: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    option: str = "--overrides",
):
    """MONAI ``ConfigParser`` of ``<root>/configs/<configs>`` (a list is merged in order, as the runner merges
    ``--config_file`` lists), the bundle's ``scripts`` importable, ``bundle_root`` = ``root``, ``device`` set when
    given (and the config has the id), then ``overrides`` applied. ``option``: the command-line option named in the
    refusal of an unknown config id."""
    from monai.bundle import ConfigParser

    root = Path(root).resolve()
    activate_bundle(root)
    parser = ConfigParser()
    files = [configs] if isinstance(configs, str) else list(configs)
    parser.read_config([str(root / "configs" / f) for f in files])
    parser["bundle_root"] = str(root)  # the caller found it; no search from the current folder
    if device is not None and "device" in parser:
        parser["device"] = str(device)
    for key, value in (overrides or {}).items():
        if key not in parser:
            ids = ", ".join(k for k in parser.get() if k != "imports")
            raise InputError(option, f"bundle '{root.name}' has no config id '{key}' (top-level ids: {ids})")
        parser[key] = value
    return parser


def bundle_module(root: str | os.PathLike, name: str):
    """The module ``scripts.<name>`` of the bundle at ``root`` (its own code, for a study or a tool that uses it
    outside a run): :func:`~.bundle.activate_bundle` puts the bundle first on the path, then the import."""
    activate_bundle(root)
    return importlib.import_module(f"scripts.{name}")


def bundle_weights(parser, weights: str | os.PathLike | None = None, option: str = "--weights") -> str | None:
    """The weights file a bundle loads: ``weights`` when given, else its config's ``ckpt_path``; None for a bundle
    without weights (no ``ckpt_path``, e.g. interpolation). Refused in one line when ``weights`` is given to a bundle
    without weights, or when the file does not exist."""
    name = Path(str(parser.get("bundle_root", "bundle"))).name
    if weights is None and "ckpt_path" in parser:
        weights = str(parser.get_parsed_content("ckpt_path"))
    elif weights is not None and "ckpt_path" not in parser:
        raise InputError(option, f"bundle '{name}' has no weights (its config has no 'ckpt_path')")
    if weights is not None:
        weights = os.path.expanduser(str(weights))
        if not os.path.isfile(weights):
            raise InputError(weights, f"checkpoint not found (weights of bundle '{name}'; train it or pass {option})")
    return weights


def build_network(parser, weights: str | None, network_id: str | None = None) -> torch.nn.Module:
    """The config's network (``network_id``, default ``network`` when the config has it, else ``network_def``)
    with ``weights`` loaded (none: as built), in eval mode."""
    network_id = network_id or ("network" if "network" in parser else "network_def")
    network = parser.get_parsed_content(network_id)
    if weights is not None:
        load_weights(network, weights)
    return network.eval()


@dataclass
class LoadedBundle:
    """A bundle's parsed config, network (eval mode, weights loaded) and inferer."""

    root: Path
    parser: Any
    weights: str | None
    network: torch.nn.Module
    inferer: Any

    @property
    def name(self) -> str:
        return self.root.name


def load_bundle(
    root: str | os.PathLike,
    configs: str | Sequence[str] = "inference.json",
    overrides: Mapping[str, Any] | None = None,
    weights: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    network_id: str | None = None,
    inferer_id: str | None = "inferer",
) -> LoadedBundle:
    """:func:`bundle_parser`, :func:`bundle_weights` and :func:`build_network` in one, plus the config's inferer
    (``inferer_id``; None: none built)."""
    parser = bundle_parser(root, configs, overrides, device)
    path = bundle_weights(parser, weights)
    network = build_network(parser, path, network_id)
    inferer = parser.get_parsed_content(inferer_id) if inferer_id else None
    return LoadedBundle(root=Path(root).resolve(), parser=parser, weights=path, network=network, inferer=inferer)
