"""Loading and shipping weights.

:class:`CheckpointLoader` is MONAI's handler with the contract's error: a missing checkpoint, a damaged one, or one
that does not fit the network names the file and says what is wrong, before any output is written. A shipped file
(``<bundle>/models/model.pt``) carries its SHA-256 in the bundle's ``large_files.yml`` (the Model Zoo's file of large
files: ``path``, ``hash_val``, ``hash_type``); :func:`read_state_dict` checks it before loading, so flipped bytes are
refused instead of producing garbage (:func:`verify_checksum`, :func:`write_large_files`). :func:`export_weights` writes
the file a bundle ships as ``models/model.pt``: a plain state dict (loadable with ``weights_only=True``), float16
when float32 would exceed the Model Zoo's 25 MB file limit (``load_state_dict`` copies it back into float32).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from collections.abc import Mapping

import torch
from monai.handlers import CheckpointLoader as MonaiCheckpointLoader

from ..errors import InputError
from ..io.files import atomic_path, write_text_atomic
from ..io.volumes import BIDS_CONTRASTS, SAME_CONTRAST

ZOO_FILE_LIMIT_BYTES = 25 * 1024 * 1024


LARGE_FILES = "large_files.yml"
HASH_TYPE = "sha256"
#: the interval training states MONAI's CheckpointSaver writes (``checkpoint_epoch=N.pt``)
EPOCH_STATE = re.compile(r"checkpoint_epoch=(\d+)\.pt")


def file_hash(path: str | os.PathLike, hash_type: str = HASH_TYPE) -> str:
    """Hex digest of a file (read in 1 MiB blocks)."""
    digest = hashlib.new(hash_type)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _listed_entries(yml: str) -> list[dict]:
    """The entries of a ``large_files.yml`` (``[]`` when the file is absent or lists none)."""
    import yaml

    if not os.path.isfile(yml):
        return []
    with open(yml) as f:
        listed = (yaml.safe_load(f) or {}).get("large_files", []) or []
    return [entry for entry in listed if isinstance(entry, dict)]


def _large_files_entry(path: str) -> tuple[str, dict] | None:
    """``(yml path, entry)`` of the ``large_files.yml`` one or two folders above ``path`` that lists it, or None."""
    target = os.path.realpath(path)
    folder = os.path.dirname(target)
    for root in (folder, os.path.dirname(folder)):
        yml = os.path.join(root, LARGE_FILES)
        for entry in _listed_entries(yml):
            if os.path.realpath(os.path.join(root, str(entry.get("path", "")))) == target:
                return yml, entry
    return None


def verify_checksum(path: str | os.PathLike) -> bool:
    """Check ``path`` against its ``large_files.yml`` entry; True when checked, False when no entry lists it.

    Raises :class:`InputError` naming the file when the digest differs.
    """
    path = os.fspath(path)
    found = _large_files_entry(path)
    if found is None:
        return False
    yml, entry = found
    hash_type = str(entry.get("hash_type", HASH_TYPE)).lower()
    actual = file_hash(path, hash_type)
    if actual != str(entry.get("hash_val", "")).lower():
        expected = str(entry.get("hash_val"))[:16]
        raise InputError(
            path,
            f"{hash_type} checksum {actual[:16]}... differs from {yml} ({expected}...): the file is damaged or not "
            "the weights this bundle ships; restore it (git checkout) or pass --ckpt_path",
        )
    return True


def write_large_files(bundle_root: str | os.PathLike, files: tuple[str, ...] | None = None) -> str:
    """Write ``<bundle_root>/large_files.yml`` with the SHA-256 of each of ``files`` (relative to the root); None:
    the files the existing ``large_files.yml`` lists (a bundle may ship several, e.g. a baseline's weights beside
    ``models/model.pt``), or ``models/model.pt`` where there is none."""
    import yaml

    root = os.fspath(bundle_root)
    if files is None:
        listed = [e["path"] for e in _listed_entries(os.path.join(root, LARGE_FILES)) if "path" in e]
        files = tuple(listed) or ("models/model.pt",)
    entries = [{"path": rel, "hash_val": file_hash(os.path.join(root, rel)), "hash_type": HASH_TYPE} for rel in files]
    text = "# the bundle's large files and their checksums, checked when the weights load\n"
    return write_text_atomic(
        os.path.join(root, LARGE_FILES), text + yaml.safe_dump({"large_files": entries}, sort_keys=False)
    )


def read_state_dict(path: str | os.PathLike, map_location="cpu") -> dict[str, torch.Tensor]:
    """The model state dict in ``path`` (a plain state dict, or MONAI/Ignite's ``{"model": ...}``), after the
    checksum check of a shipped file (:func:`verify_checksum`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(path, "checkpoint not found")
    verify_checksum(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's weights_only refusal is a paragraph that suggests weights_only=False; keep only its reason
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "global" in ln.lower()), None)
        if why is None:  # not a pickle of objects at all (a damaged or foreign file: "Unsupported operand ...")
            reason = next((ln for ln in lines if "Unsupported" in ln), lines[0] if lines else "")
            raise InputError(path, f"is not a readable PyTorch checkpoint ({type(err).__name__}: {reason})") from None
        raise InputError(
            path,
            f"holds Python objects besides tensors and was not loaded, since loading it could run code ({why}); "
            "use weights saved as a state dict (torch.save(model.state_dict(), path))",
        ) from None
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
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
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


def weights_for_contrast(bundle_root: str | os.PathLike, output_contrast: str = SAME_CONTRAST) -> str:
    """The shipped weights that give ``output_contrast``: ``models/model.pt`` for ``"input"`` (the input's own
    contrast), ``models/model_<contrast>.pt`` for a BIDS contrast (``"T1w"`` -> ``model_t1w.pt``: a T1-weighted image
    from any input, SynthSR's task). Raises :class:`InputError` on ``--output_contrast`` naming the contrasts this
    bundle has weights for."""
    models = os.path.join(os.fspath(bundle_root), "models")
    name = str(output_contrast).strip()
    if name.lower() == SAME_CONTRAST:
        return os.path.join(models, "model.pt")
    have = [c for c in BIDS_CONTRASTS if os.path.isfile(os.path.join(models, f"model_{c.lower()}.pt"))]
    match = [c for c in have if c.lower() == name.lower()]
    if not match:
        raise InputError(
            "--output_contrast", f"this bundle has no weights for {name!r}; it has: {', '.join([SAME_CONTRAST, *have])}"
        )
    return os.path.join(models, f"model_{match[0].lower()}.pt")


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
            found = EPOCH_STATE.fullmatch(name)
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
    found = _large_files_entry(destination)
    if found is not None:  # a bundle's shipped file: its checksum follows (the other listed files' stay listed)
        write_large_files(os.path.dirname(found[0]))
    return destination


class BestModelState:
    """The best validation score so far of a key-metric ``CheckpointSaver`` (the one that writes ``model.pt``), as
    an object with ``state_dict`` / ``load_state_dict`` for the training state, so that a resumed run keeps it.

    Without it a resumed run starts with an empty record and its first validation replaces the best ``model.pt``
    even when it is worse. MONAI's ``CheckpointSaver`` can load that record (``load_state_dict``) but gives no
    ``state_dict``; the record lives in the ignite ``Checkpoint`` it keeps as ``_key_metric_checkpoint`` (its list
    of ``(score, file name)``), which this adapter reads. Written here because neither library stores it in the
    training state.
    """

    def __init__(self, saver):
        if getattr(saver, "_key_metric_checkpoint", None) is None:
            raise ValueError("BestModelState needs a CheckpointSaver with save_key_metric=True")
        self.saver = saver

    def state_dict(self) -> dict:
        return self.saver._key_metric_checkpoint.state_dict()

    def load_state_dict(self, state_dict: Mapping) -> None:
        self.saver.load_state_dict(dict(state_dict))


RUN_FILE = "run.json"
#: The weights file a training run writes (its key-metric CheckpointSaver's ``key_metric_filename``).
WEIGHTS_FILE = "model.pt"


def _refuse_foreign_weights(output_dir: str) -> None:
    """A fresh run refuses a folder whose ``model.pt`` it did not write (a bundle's shipped weights, a user's own
    file): its first validation would replace it."""
    weights = os.path.join(output_dir, WEIGHTS_FILE)
    if os.path.lexists(weights):
        raise InputError(
            output_dir,
            f"holds {WEIGHTS_FILE}, which this training run did not write (shipped or someone's weights) and would "
            "replace at its first validation; choose another --output_dir (nothing was overwritten)",
        )


def _training_states(output_dir: str) -> list[str]:
    if not os.path.isdir(output_dir):
        return []
    return sorted(n for n in os.listdir(output_dir) if n == "checkpoint.pt" or EPOCH_STATE.fullmatch(n))


def claim_run(output_dir: str | os.PathLike, identity: Mapping, resume) -> str:
    """Bind ``output_dir`` to one training run, so that ``--resume true`` only continues that run's own states.

    ``identity`` is what makes two runs the same run (the bundle, the datalist, the network's architecture); it is
    written to ``<output_dir>/run.json`` by a fresh run. Raises :class:`InputError` naming the folder when

    - a fresh run (``resume`` false) would start in a folder that holds training states (its ``model.pt`` and
      states would be replaced: another run's results lost), or
    - ``resume`` is true and the folder's ``run.json`` names another run (which setting differs is said).

    A folder with states but no ``run.json`` (written before this check existed) is resumed with a printed note.
    Several processes of one ``torchrun`` job may call it together: each writes the same file atomically.
    Returns the path of ``run.json``.
    """
    from ..io.volumes import as_bool

    output_dir = os.fspath(output_dir)
    path = os.path.join(output_dir, RUN_FILE)
    identity = {
        str(k): (v if isinstance(v, (str, int, float, bool)) or v is None else str(v)) for k, v in identity.items()
    }
    if "network" in identity and len(identity["network"]) > 64:  # an architecture's repr: keep its hash
        identity["network"] = "sha256:" + hashlib.sha256(identity["network"].encode()).hexdigest()[:16]
    states = _training_states(output_dir)
    recorded = None
    if os.path.isfile(path):
        try:
            with open(path) as f:
                recorded = json.load(f).get("identity")
        except (OSError, ValueError, AttributeError):
            raise InputError(path, "is not a readable run record; remove it or choose another --output_dir") from None
    if as_bool(resume):
        if recorded is None:
            if states:
                print(f"note: {output_dir} has no {RUN_FILE}; resuming its newest state as this run's", flush=True)
            else:  # nothing of a run to resume: model.pt here is not this run's to replace
                _refuse_foreign_weights(output_dir)
            return path
        differs = [k for k in sorted(set(identity) | set(recorded)) if identity.get(k) != recorded.get(k)]
        if differs:
            what = "; ".join(f"{k}: this run {identity.get(k)!r}, the folder's {recorded.get(k)!r}" for k in differs)
            raise InputError(
                output_dir,
                f"holds the training state of another run ({what}); resume it with its "
                "own settings, or choose another --output_dir",
            )
        return path
    if states:  # a fresh start would replace that run's model.pt and states
        raise InputError(
            output_dir,
            f"holds the training state of an earlier run ({', '.join(states[:3])}); "
            "--resume true continues it, or choose another --output_dir (nothing was overwritten)",
        )
    _refuse_foreign_weights(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    write_text_atomic(path, json.dumps({"identity": identity}, indent=2) + "\n")
    return path
