#!/usr/bin/env python
"""Merge datalists into one for training on several sources at once (scanners, sites, simulators), split by split.

    python tools/merge_datalists.py --out demo_data_mixed/datalist.json \\
        --random demo_data_random/datalist.json --demo demo_data/datalist.json

Each flag after ``--out`` names a source and its datalist; items keep their split, their subject becomes
``<source>_<subject>`` and records ``"source"``; paths are rewritten relative to the new datalist's folder (no file
is copied). ``--training_repeats '{"demo": 2}'`` lists a source's training items that many times (a weight per
epoch). See :func:`shared_transforms.io.datalist.merge_datalists`.
"""

from __future__ import annotations

import os

import fire

from shared_transforms.io.datalist import merge_datalists


def main(out: str, training_repeats: dict | None = None, **sources: str) -> str:
    """Write the merged datalist to ``out`` from ``--<name> <datalist.json>`` sources (at least two);
    ``training_repeats`` maps a source name to how many times its training items are listed."""
    if len(sources) < 2:
        raise SystemExit("give at least two sources, e.g. --random a/datalist.json --demo b/datalist.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    merged = merge_datalists(sources, out, training_repeats)
    print(f"wrote {out}: " + ", ".join(f"{k} {len(v)}" for k, v in merged.items()))
    return out


if __name__ == "__main__":
    fire.Fire(main)
