#!/usr/bin/env python
"""The bundles' research studies, one command: ``python tools/study.py <study> [options]`` (``--help`` after a name
lists its options).

    python tools/study.py diffusion_iqt_seams --datalist demo_data/datalist.json --out_dir bench/seams
    python tools/study.py amir_routing --stress_dir bench/stress/stress_data --out_dir bench/amir_routing
    python tools/study.py flat_cascades --datalist demo_data_random/datalist.json --models "{...}" --out_dir bench/flat
    python tools/study.py flat_speed [--mode learned_steps --ckpt_path bundles/flat/models/model_unrolled.pt]
    python tools/study.py flat_results --datalist demo_data_random/datalist.json --models "{...}"

Each study is one module of ``tools/studies/`` and runs its bundle through the engine's loader
(:mod:`shared_transforms.engine.loader`) or the benchmark's runner (:mod:`benchmarking.runner`), timed by the one
:class:`benchmarking.measure.Stopwatch`. They live here, not in the bundles' ``scripts/``, so that a Model Zoo archive
carries only what its configs call. A grid over a bundle's inference settings alone (cfm's step study: steps x
solvers, or precision) is ``tools/sweep.py``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import fire

from shared_transforms.errors import InputError

STUDIES = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).resolve().parent / "studies")]))


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in STUDIES:
        print(__doc__.split("\n\n")[0] + "\n\nstudies: " + ", ".join(STUDIES), file=sys.stderr)
        return 2
    module = importlib.import_module(f"studies.{argv[0]}")
    try:
        # a study prints its own tables; its return value (rows, for the tests) is not printed again
        fire.Fire(module.main, argv[1:], name=argv[0], serialize=lambda result: None)
    except InputError as err:
        print(f"study.py {argv[0]}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
