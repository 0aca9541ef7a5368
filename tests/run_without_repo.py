"""Run an exported bundle with this repository off ``sys.path`` (no checkout, no editable install of it).

    python tests/run_without_repo.py REPO run --config_file configs/inference.json ...   # MONAI's bundle runner
    python tests/run_without_repo.py REPO workflow --config_file configs/inference.json --key value ...

Run from the unpacked bundle folder (it becomes ``sys.path[0]``, as for ``python -m monai.bundle``). Exits with 3 when
the repository's ``shared_transforms`` is still importable, so a test cannot pass on the repository's code.
"""

from __future__ import annotations

import os
import runpy
import sys

repo = os.path.realpath(sys.argv.pop(1))


def _in_repo(path: str) -> bool:
    real = os.path.realpath(path or os.getcwd())
    inside = real == repo or real.startswith(repo + os.sep)
    return inside and not real.startswith(os.path.join(repo, ".venv"))  # the interpreter's own packages may be there


sys.path[:] = [p for p in sys.path if not _in_repo(p)]
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "") + repr(f)]
for name in [m for m in sys.modules if m == "shared_transforms" or m.startswith("shared_transforms.")]:
    del sys.modules[name]
try:
    import shared_transforms
except ModuleNotFoundError:
    pass
else:
    print(f"the repository's shared_transforms is still importable: {shared_transforms.__file__}", file=sys.stderr)
    raise SystemExit(3)
sys.path.insert(0, os.getcwd())

if sys.argv[1] == "workflow":  # what monai.bundle.load-style use does: a ConfigWorkflow on the folder
    from monai.bundle import ConfigWorkflow

    args = sys.argv[2:]
    kwargs = {args[i].lstrip("-"): args[i + 1] for i in range(0, len(args), 2)}
    workflow = ConfigWorkflow(workflow_type="infer", logging_file=False, **kwargs)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    import scripts.shared_transforms as vendored

    print(f"vendored: {vendored.__file__}")
else:
    sys.argv[0] = "monai.bundle"
    runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
