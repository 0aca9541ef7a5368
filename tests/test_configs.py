"""The bundle configs as text: one name, one meaning when files are merged, and common blocks that agree.

Checked without running anything (the contract test runs the configs):

1. An override merged on top of its base (``train.json`` + ``evaluate.json``, ``train.json`` + ``multi_gpu_train.json``;
   ``inference.json`` + ``evaluate.json`` for a bundle without training) never changes a setting (a number, a string, an
   expression) that the base file uses, except the few that the override exists to change (:data:`DECLARED`), and then
   only where the base uses them for that purpose. This is what went wrong once: ``num_samples`` was the crop count in
   cfm's ``train.json`` and the number of ODE samples in its ``evaluate.json``, so the merge changed the crop count.
2. The settings every learned bundle's ``train.json`` shares (checkpointing and resume, the validation handlers, the
   wiring) are defined once, in ``bundles/_common/train_common.json``, and written into each ``train.json`` by
   ``tools/format_configs.py`` (the contract runs ``train.json`` alone); the multi-GPU overrides and the logging config are one file each in ``bundles/_common``, linked
   from every bundle's ``configs/`` (the contract's paths), and copied whole into each Model Zoo archive by the
   export tool.
3. The project's own loader (clear error naming the file) is the only ``CheckpointLoader``, resume included.
4. Handlers are named and referred to by id (``@validate#best_saver``, ``train#checkpoint_saver#_disabled_``), never by
   their position in a list (``@validate#handlers#2``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs").is_dir())
LEARNED = [b for b in BUNDLES if (REPO / "bundles" / b / "configs" / "train.json").is_file()]

#: The values an override may change although its base uses them: id -> the base paths where the base may use it
#: (``None``: everywhere). evaluate.json scores the checkpoint as inference runs it: it writes into its own folder
#: (nothing trains in an evaluation run) and sets the sampler as inference.json does, which in the training config
#: only the validation inferer uses. multi_gpu_train.json replaces the device and wraps the network in DDP for
#: every user of either.
DECLARED = {
    "evaluate.json": {
        "output_dir": None,
        "num_steps": ("validate#inferer",),
        "solver": ("validate#inferer",),
        "num_samples": ("validate#inferer",),
    },
    "multi_gpu_train.json": {"device": None, "network": None},
    "multi_gpu_inference.json": {"device": None},
}
#: Whole lists that an override replaces on purpose (the run's entry points).
ENTRY_POINTS = {"initialize", "run", "finalize", "imports"}
REF = re.compile(r"@([A-Za-z0-9_#]+)")


def load(bundle: str, name: str) -> dict:
    return json.loads((REPO / "bundles" / bundle / "configs" / name).read_text())


def flatten(cfg, prefix: str = "") -> dict[str, object]:
    """Every path of a config (``a#b#0``) with its value, containers included."""
    out: dict[str, object] = {}
    items = cfg.items() if isinstance(cfg, dict) else enumerate(cfg) if isinstance(cfg, list) else ()
    for k, v in items:
        path = f"{prefix}#{k}" if prefix else str(k)
        out[path] = v
        out.update(flatten(v, path))
    return out


def references(flat: dict[str, object]) -> dict[str, list[str]]:
    """id -> the paths whose (string) value refers to it with ``@id``."""
    refs: dict[str, list[str]] = {}
    for path, value in flat.items():
        if isinstance(value, str):
            for ref in REF.findall(value):
                refs.setdefault(ref, []).append(path)
    return refs


def merged(base: dict, override: dict) -> dict:
    """``override`` applied to ``base`` as MONAI's runner merges config files: each top-level ``a#b`` id replaces the
    value at that path."""
    out = json.loads(json.dumps(base))
    for path, value in override.items():
        node, keys = out, path.split("#")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
        if isinstance(node, list):
            node[int(keys[-1])] = value
        else:
            node[keys[-1]] = value
    return out


def reachable(cfg: dict) -> set[str]:
    """The ids a run of ``cfg`` builds: referenced from its entry points, directly or through what they refer to."""
    flat = flatten(cfg)
    seen: set[str] = set()
    todo = [p for p in flat if p.split("#")[0] in ENTRY_POINTS]
    while todo:
        root = todo.pop()
        for path, value in flat.items():
            if (path == root or path.startswith(root + "#")) and isinstance(value, str):
                for ref in REF.findall(value):
                    if ref not in seen:
                        seen.add(ref)
                        todo.append(ref)
    return seen


def merge_pairs():
    for b in BUNDLES:
        base = "train.json" if b in LEARNED else "inference.json"
        for override in ("evaluate.json", "multi_gpu_train.json"):
            if (REPO / "bundles" / b / "configs" / override).is_file():
                yield b, base, override
        if (REPO / "bundles" / b / "configs" / "multi_gpu_inference.json").is_file():
            yield b, "inference.json", "multi_gpu_inference.json"


def silent_changes(base: dict, override: dict, declared: dict) -> list[str]:
    """What merging ``override`` on ``base`` changes in places the base uses and the override does not rewrite."""
    flat_base = flatten(base)
    refs = references(flat_base)
    override_paths = set(override)  # MONAI merges by "a#b" ids at the top level of an override file
    built = reachable(merged(base, override))
    problems = []
    for path, new in override.items():
        if path in ENTRY_POINTS or path not in flat_base or flat_base[path] == new:
            continue
        if isinstance(new, (dict, list)) or isinstance(flat_base[path], (dict, list)):
            continue  # a component or list replaced whole is the override's purpose, not a shared setting
        for site in refs.get(path, []):
            if any(site == p or site.startswith(p + "#") for p in override_paths):
                continue  # the override rewrites this use itself
            if built and not any(site == r or site.startswith(r + "#") for r in built):
                continue  # a component the merged run never builds (e.g. training's savers in an evaluation)
            allowed = declared.get(path, ())
            if allowed is None or (allowed and any(site == a or site.startswith(a + "#") for a in allowed)):
                continue
            problems.append(f"'{path}' changes from {flat_base[path]!r} to {new!r}, and the base uses it at '{site}'")
    return problems


@pytest.mark.parametrize("bundle,base,override", list(merge_pairs()))
def test_override_changes_no_value_the_base_uses(bundle, base, override):
    problems = silent_changes(load(bundle, base), load(bundle, override), DECLARED[override])
    assert not problems, f"{bundle}: {override} on {base}:\n" + "\n".join(problems)


def test_the_merge_check_catches_a_name_with_two_meanings():
    """The fault this test exists for: an override's ``num_samples`` (ODE samples) silently changing the base's
    crop count."""
    base = {
        "num_samples": 8,
        "train": {"crop": {"_target_": "RandCropByPosNegLabeld", "num_samples": "@num_samples"}},
        "validate": {"inferer": {"_target_": "Sampler", "num_samples": 1}},
    }
    override = {"num_samples": 2, "validate#inferer#num_samples": "@num_samples"}
    problems = silent_changes(base, override, DECLARED["evaluate.json"])
    assert len(problems) == 1 and "train#crop#num_samples" in problems[0]
    base["patches_per_volume"] = base.pop("num_samples")
    base["train"]["crop"]["num_samples"] = "@patches_per_volume"
    assert silent_changes(base, override, DECLARED["evaluate.json"]) == []


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if (REPO / "bundles" / b / "configs" / "evaluate.json").exists()])
def test_evaluate_samples_as_inference_does(bundle):
    """The sampler settings evaluate.json sets are the inference defaults (the table scores what a user runs)."""
    inference, evaluate = load(bundle, "inference.json"), load(bundle, "evaluate.json")
    for key in ("num_steps", "solver", "num_samples"):
        if key in evaluate:
            assert evaluate[key] == inference[key], f"{bundle}: evaluate.json {key}={evaluate[key]!r}"


# ---------------------------------------------------------------------------------------------------------------------
# common blocks agree across bundles


def _format_configs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("format_configs", REPO / "tools" / "format_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("bundle", LEARNED)
def test_every_train_config_carries_the_common_training_block(bundle):
    """Issue 31.3: the settings every train.json shares are defined once, in ``bundles/_common/train_common.json``."""
    tool = _format_configs()
    common = json.loads(tool.COMMON_TRAIN.read_text())
    changes: list[str] = []
    tool.overlay(load(bundle, "train.json"), common, changes)
    assert not changes, f"{bundle}: out of step with the common block (run python tools/format_configs.py): {changes}"
    # the block is what the bundles share: checkpointing and resume, the validation metrics and handlers, the wiring
    for key in ("checkpoint_saver", "resume_loader", "checkpointing", "training_state", "trainer"):
        assert key in common["train"], key
    for key in ("key_metric", "additional_metrics", "stats", "tensorboard", "best_saver", "handlers", "evaluator"):
        assert key in common["validate"], key
    assert common["initialize"][0] == "$shared_transforms.engine.bundle.setup_bundle(@bundle_root)"


def test_the_common_block_is_written_into_a_train_config_and_every_change_is_named():
    tool = _format_configs()
    config = {"seed": 1, "train": {"trainer": {"max_epochs": "@max_epochs", "amp": True}, "only_here": 3}}
    common = {"seed": 0, "train": {"trainer": {"amp": False}, "checkpointing": ["@train#checkpoint_saver"]}}
    changes: list[str] = []
    merged = tool.overlay(config, common, changes)
    assert merged == {"seed": 0, "train": {"trainer": {"max_epochs": "@max_epochs", "amp": False}, "only_here": 3,
                                           "checkpointing": ["@train#checkpoint_saver"]}}
    assert list(merged) == ["seed", "train"] and list(merged["train"]) == ["trainer", "only_here", "checkpointing"]
    assert changes == ["seed: 1 -> 0", "train#trainer#amp: true -> false",
                       'train#checkpointing: (absent) -> ["@train#checkpoint_saver"]']
    assert config["seed"] == 1  # the input is not changed


@pytest.mark.skipif(len(LEARNED) < 2, reason="needs two learned bundles to compare")
@pytest.mark.parametrize("bundle", LEARNED[1:])
def test_the_training_handlers_end_alike_across_bundles(bundle):
    """``train#handlers`` is a list of inline handlers (MONAI's ``check_properties`` reads each item's ``_target_``),
    so it cannot be a common setting: its last three (validation, logging, TensorBoard) are compared here."""
    reference, handlers = load(LEARNED[0], "train.json"), load(bundle, "train.json")
    assert handlers["train"]["handlers"][-3:] == reference["train"]["handlers"][-3:], bundle


#: the files every bundle has that are the same for all (issue 31.3): one copy in ``bundles/_common``, and in each
#: bundle's ``configs/`` a relative link to it (the contract's paths work; the export tool copies the file itself)
COMMON = REPO / "bundles" / "_common"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_the_common_configs_exist_once_and_every_bundle_links_to_them(bundle):
    names = ["logging.conf"] + (["multi_gpu_train.json", "multi_gpu_inference.json"] if bundle in LEARNED else [])
    for name in names:
        path = REPO / "bundles" / bundle / "configs" / name
        assert path.is_symlink() and path.resolve() == (COMMON / name).resolve(), f"{bundle}: {name} is not the link"
        assert os.readlink(path) == f"../../_common/{name}", f"{bundle}: {name} links by an absolute path"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_run_starts_with_setup_bundle_and_uses_the_projects_loader(bundle):
    for path in sorted((REPO / "bundles" / bundle / "configs").glob("*.json")):
        cfg = json.loads(path.read_text())
        if path.name == "metadata.json":
            continue
        if "initialize" in cfg:
            assert cfg["initialize"][0] == "$shared_transforms.engine.bundle.setup_bundle(@bundle_root)", path
        for where, value in flatten(cfg).items():
            if where.endswith("_target_") and isinstance(value, str) and value.endswith("CheckpointLoader"):
                assert value == "shared_transforms.engine.checkpoint.CheckpointLoader", f"{path}: {where}"
            assert "_requires_" not in where, f"{path}: {where} (bundle_root has no side effect to wait for)"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_no_config_refers_to_a_list_item_by_its_position(bundle):
    """Issue 31.3: a reference or an override into a list by index breaks silently when the list changes."""
    positional = re.compile(r"#\d+(#|$)")
    for path in [*(REPO / "bundles" / bundle / "configs").glob("*.json"), *COMMON.glob("*.json")]:
        cfg = json.loads(path.read_text())
        ids = [k for k in cfg if "#" in k]  # an override file's ids
        ids += [ref for value in flatten(cfg).values() if isinstance(value, str) for ref in REF.findall(value)]
        bad = [i for i in ids if positional.search(i)]
        assert not bad, f"{path.name}: {bad} refer to list items by position; name the item and refer to its id"


def test_every_config_is_in_the_one_layout():
    """Issue 31.3: one JSON formatter for every config (``python tools/format_configs.py`` rewrites them)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(REPO / "tools" / "format_configs.py"), "--check"], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr + "\nrun: python tools/format_configs.py"
