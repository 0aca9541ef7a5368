#!/usr/bin/env python
"""The one JSON layout of every bundle config, and the settings every ``train.json`` shares, defined once.

    python tools/format_configs.py            # rewrite the configs that are not in the layout or not in step
    python tools/format_configs.py --check    # list them and exit 1 (what tests/test_configs.py checks)

The common training block: ``bundles/_common/train_common.json`` holds the settings that are the same in every
learned bundle's ``configs/train.json`` (the datasets and loaders, checkpointing and resume, the validation metrics
and handlers, the trainer's and evaluator's wiring, ``initialize``). It is the one place to change them: this tool
writes each of its settings into every ``train.json`` (dicts merged key by key, any other value replaced, key order
kept) and prints every value it changed. The settings are written out rather than merged at run time because the
bundle contract runs ``configs/train.json`` alone (``--config_file bundles/<name>/configs/train.json``) and a Model Zoo
archive must stand alone. A setting that one bundle needs to differ leaves the common block and goes into each
bundle's ``train.json``.

The layout: four spaces of indent; a value stays on its key's line when the whole line fits in 120 columns (a
short component, list or expression reads at a glance), otherwise a dict or list opens one item per line; a string
longer than the line stays whole. Key order and values are kept: only whitespace changes, so the parsed config is
the same. Written here because ``json.dumps`` has one indent for all depths (every leaf on its own line, or none).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WIDTH = 120
COMMON_TRAIN = REPO / "bundles" / "_common" / "train_common.json"


def render(value, indent: int = 0, prefix: str = "") -> str:
    """``value`` as JSON text starting after ``prefix`` (the key, already at ``indent`` spaces)."""
    one_line = json.dumps(value, ensure_ascii=False)
    if indent + len(prefix) + len(one_line) + 1 <= WIDTH or not isinstance(value, (dict, list)) or not value:
        return one_line
    pad = " " * (indent + 4)
    if isinstance(value, dict):
        items = [f'{pad}{json.dumps(k, ensure_ascii=False)}: ' for k in value]
        items = [head + render(v, indent + 4, head.strip()) for head, v in zip(items, value.values(), strict=True)]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + render(v, indent + 4) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def config_files() -> list[Path]:
    """Every config file of the bundles (links to ``bundles/_common`` counted once, as the file they point to)."""
    paths = sorted((REPO / "bundles").glob("*/configs/*.json")) + sorted((REPO / "bundles" / "_common").glob("*.json"))
    return [p for p in paths if not p.is_symlink()]


def overlay(config: dict, common: dict, changes: list[str] | None = None, where: str = "") -> dict:
    """``config`` with every setting of ``common`` written in (dicts merged key by key, other values replaced).

    Key order is kept; a key ``config`` lacks is appended. The ids whose value changed go to ``changes``
    (``train#checkpoint_saver#n_saved: 2 -> 1``).
    """
    out = dict(config)
    for key, value in common.items():
        at = f"{where}#{key}" if where else key
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = overlay(out[key], value, changes, at)
            continue
        if key not in out or out[key] != value:
            if changes is not None:
                was = json.dumps(out[key]) if key in out else "(absent)"
                changes.append(f"{at}: {was} -> {json.dumps(value)}")
            out[key] = value
    return out


def is_learned_train_config(path: Path) -> bool:
    return path.name == "train.json" and path.parent.name == "configs"


def formatted(path: Path, changes: list[str] | None = None) -> str:
    """The file's text in the layout; a bundle's ``train.json`` with the common training block written in."""
    value = json.loads(path.read_text())
    if is_learned_train_config(path):
        value = overlay(value, json.loads(COMMON_TRAIN.read_text()), changes)
    return render(value) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = 0
    for path in config_files():
        changes: list[str] = []
        text = formatted(path, changes)
        if path.read_text() == text:
            continue
        stale += 1
        name = path.relative_to(REPO)
        if check:
            print(f"not in the layout: {name}" if not changes else f"not in step with {COMMON_TRAIN.name}: {name}")
        else:
            from shared_transforms.io.files import write_text_atomic

            write_text_atomic(str(path), text)
            print(f"formatted {name}" + (f", {len(changes)} common settings written:" if changes else ""))
        for change in changes:
            print(f"    {change}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
