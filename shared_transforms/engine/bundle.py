"""Finding a bundle's folder, and the one place where a bundle run prepares the process.

Two jobs, kept apart:

- :func:`bundle_root` only finds the folder of ``bundles/<name>``, whether the command runs from the repository root
  or from inside the bundle (``$LFMRI_BUNDLES_DIR/<name>`` first when that variable is set). It changes nothing.
- :func:`setup_bundle` is what every bundle config calls first in its ``initialize`` list
  (``"$shared_transforms.engine.bundle.setup_bundle(@bundle_root)"``). It does two things, both on purpose:

  1. makes the bundle's own ``scripts`` package importable (:func:`activate_bundle`). MONAI's runner puts the
     bundle root on ``sys.path`` only when ``run`` starts (after ``initialize``) and only when the config sits in
     ``<root>/configs``; and every bundle names its code package ``scripts``, so two bundles in one process (the
     benchmark runs several) would otherwise share the first one's;
  2. installs the error hook (:func:`shared_transforms.errors.install_excepthook`) that repeats a bad input's
     one-line reason (``error: <file>: <problem>``) as the last line of the run.

Code that builds a bundle's objects without its ``initialize`` (the benchmark, the tests, MONAI's
``verify_net_in_out`` run from inside the bundle folder) calls :func:`activate_bundle` itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import install_excepthook

REPO_ROOT = Path(__file__).resolve().parents[2]


def _is_bundle(path: Path, name: str | None = None) -> bool:
    return (path / "configs" / "metadata.json").is_file() and (name is None or path.name == name)


def bundle_root(name: str) -> str:
    """Absolute path of ``bundles/<name>``: ``$LFMRI_BUNDLES_DIR/<name>``, the current folder if it is that bundle
    (or its ``configs``), else ``./bundles/<name>``, else the checkout this package lives in, else the exported
    bundle this package is vendored in (``<name>/scripts/shared_transforms``, see ``tools/export_bundle.py``).
    No side effects."""
    cwd = Path.cwd()
    vendored_in = Path(__file__).resolve().parents[3]
    candidates = [cwd, cwd.parent, cwd / "bundles" / name, REPO_ROOT / "bundles" / name, vendored_in]
    env = os.environ.get("LFMRI_BUNDLES_DIR")
    if env:
        candidates.insert(0, Path(env) / name)
    for cand in candidates:
        if _is_bundle(cand, name):
            return str(cand.resolve())
    raise FileNotFoundError(
        f"cannot find the bundle {name!r} (looked in {', '.join(str(c) for c in candidates)}); run from the "
        "repository root or the bundle folder, or pass --bundle_root"
    )


def activate_bundle(root: str | os.PathLike) -> str:
    """Put ``root`` first on ``sys.path`` and drop an already imported ``scripts`` package of another bundle."""
    root = str(Path(root).resolve())
    loaded = sys.modules.get("scripts")
    loaded_file = getattr(loaded, "__file__", None) or ""
    if loaded is not None and not str(Path(loaded_file).resolve()).startswith(root + os.sep):
        for mod in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
            del sys.modules[mod]
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    return root


def setup_bundle(root: str | os.PathLike) -> str:
    """The start of every bundle run (first entry of each config's ``initialize``): :func:`activate_bundle` and
    :func:`~shared_transforms.errors.install_excepthook`. Returns the absolute root."""
    install_excepthook()
    return activate_bundle(root)
