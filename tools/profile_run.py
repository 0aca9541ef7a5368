#!/usr/bin/env python
"""Where a bundle run's time goes, end to end: start-up, loading, resampling, normalisation, network, writing,
preview.

    python tools/profile_run.py bundles/cfm/configs/inference.json [runner options, e.g. --output_dir out]

Runs MONAI's bundle runner (``monai.bundle.run``, as ``python -m monai.bundle run --config_file ...`` does) in this
process under Python's ``cProfile`` and prints one row per phase: the cumulative seconds of the functions that do
it (a phase's functions are listed beside it), then the wall time of the whole command from the interpreter's
start. Start-up is the interpreter and the imports (torch, MONAI, Ignite, nibabel) before the runner starts; "config
and network" is the runner's parsing and instantiation (network build included) outside the other phases. cProfile
adds a little to Python-heavy code; the network's time is spent in torch's kernels and is not inflated.
Written here: MONAI has no per-phase timing of a bundle run.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before any import of substance: start-up counts from here

import cProfile  # noqa: E402
import functools  # noqa: E402
import pstats  # noqa: E402
import sys  # noqa: E402

#: phase -> the (module path fragment, class, method) whose cumulative time makes the phase
PHASES = {
    "load (read and check the NIfTI)": [("shared_transforms/io/volumes.py", "LoadVolumed", "__call__")],
    "orient to RAS": [("monai/transforms/spatial/dictionary.py", "Orientationd", "__call__")],
    "resample to the target grid": [("monai/transforms/spatial/dictionary.py", "Spacingd", "__call__")],
    "normalise (percentiles in the head)": [("shared_transforms/transforms/intensity.py", "PercentileNormalized", "__call__")],
    "weights (read, checksum, load)": [("shared_transforms/engine/checkpoint.py", "CheckpointLoader", "__call__")],
    "network (the inferer)": [("shared_transforms/inference/inferers.py", "SliceInferer2D", "__call__"),
                              ("shared_transforms/inference/inferers.py", "VolumeInferer", "__call__")],
    "write the NIfTI files": [("shared_transforms/io/volumes.py", "SaveVolumed", "__call__")],
    "preview PNG": [("shared_transforms/io/preview.py", "SavePreviewd", "__call__")],
}


def _phase_seconds(stats: pstats.Stats) -> dict[str, float]:
    """The largest cumulative time among each phase's functions."""
    out = {}
    raw = stats.stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    for phase, funcs in PHASES.items():
        best = 0.0
        for file_frag, cls, name in funcs:
            for (file, line, fname), (_, _, _, ct, _) in raw.items():
                if fname == name and file_frag in file.replace("\\", "/") and _defined_in_class(file, line, cls):
                    best = max(best, ct)
        out[phase] = best
    return out


@functools.lru_cache(maxsize=None)
def _source_lines(file: str) -> tuple[str, ...]:
    """The lines of a profiled module (read once; empty when it cannot be read)."""
    try:
        with open(file) as f:
            return tuple(f.readlines())
    except OSError:
        return ()


def _defined_in_class(file: str, line: int, cls: str) -> bool:
    """Whether the function at ``file:line`` is a method of class ``cls`` (the nearest ``class`` line above it)."""
    for text in reversed(_source_lines(file)[:line]):
        if text.startswith("class "):
            return text[6:].split("(")[0].split(":")[0].strip() == cls
    return False


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    import ignite  # noqa: F401  (start-up: what every bundle run imports first)
    import monai  # noqa: F401
    import nibabel  # noqa: F401
    import torch  # noqa: F401
    from monai.bundle import run

    startup = time.perf_counter() - STARTED
    kwargs = {"config_file": argv[0]}
    rest = argv[1:]
    for i in range(0, len(rest) - 1, 2):  # --key value pairs, as the runner's command line gives them
        kwargs[rest[i].lstrip("-")] = rest[i + 1]
    profile = cProfile.Profile()
    t0 = time.perf_counter()
    profile.enable()
    try:
        run(**kwargs)
    finally:
        profile.disable()
        run_seconds = time.perf_counter() - t0
        phases = _phase_seconds(pstats.Stats(profile))
        other = max(run_seconds - sum(phases.values()), 0.0)
        print("\n| phase | seconds |\n| --- | --- |")
        print(f"| start-up (interpreter and imports) | {startup:.1f} |")
        for phase, seconds in phases.items():
            print(f"| {phase} | {seconds:.1f} |")
        print(f"| config and network build, and the rest | {other:.1f} |")
        print(f"| **whole command** (from the tool's first line) | **{time.perf_counter() - STARTED:.1f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
