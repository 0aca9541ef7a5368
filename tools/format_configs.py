#!/usr/bin/env python
"""The one JSON layout of every bundle config (``bundles/*/configs/*.json`` and ``bundles/_common/*.json``).

    python tools/format_configs.py            # rewrite the configs that are not in the layout
    python tools/format_configs.py --check    # list them and exit 1 (what tests/test_configs.py checks)

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


def formatted(path: Path) -> str:
    return render(json.loads(path.read_text())) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = [p for p in config_files() if p.read_text() != formatted(p)]
    for path in stale:
        if check:
            print(f"not in the layout: {path.relative_to(REPO)}")
        else:
            from shared_transforms.io.files import write_text_atomic

            write_text_atomic(str(path), formatted(path))
            print(f"formatted {path.relative_to(REPO)}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
