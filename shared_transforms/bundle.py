"""Helpers the bundle configs call: find the bundle's folder, and keep each bundle's ``scripts`` package its own.

MONAI's runner puts the bundle root on ``sys.path`` only when ``run`` starts (after ``initialize``), and only when
the config sits in ``<root>/configs``; every bundle names its code package ``scripts``, so two bundles in one process
(the benchmark runs several) would share the first one's. :func:`bundle_root` finds the folder whether the command
runs from the repository root or from inside the bundle, and :func:`activate_bundle` swaps the ``scripts`` package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _is_bundle(path: Path, name: str | None = None) -> bool:
    return (path / "configs" / "metadata.json").is_file() and (name is None or path.name == name)


def bundle_root(name: str, activate: bool = True) -> str:
    """Absolute path of ``bundles/<name>``: the current folder if it is that bundle (or its ``configs``),
    else ``./bundles/<name>``, else the checkout this package lives in. Makes its ``scripts`` importable.
    """
    cwd = Path.cwd()
    candidates = [cwd, cwd.parent, cwd / "bundles" / name, REPO_ROOT / "bundles" / name]
    env = os.environ.get("LFMRI_BUNDLES_DIR")
    if env:
        candidates.insert(0, Path(env) / name)
    from .errors import install_excepthook

    install_excepthook()
    for cand in candidates:
        if _is_bundle(cand, name):
            root = str(cand.resolve())
            if activate:
                activate_bundle(root)
            return root
    raise FileNotFoundError(
        f"cannot find the bundle '{name}' (looked in {', '.join(str(c) for c in candidates)}); run from the "
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
