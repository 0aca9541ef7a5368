#!/usr/bin/env python
"""Export a bundle as a self-contained MONAI bundle archive, runnable without this repository.

    python tools/export_bundle.py cfm --output_dir dist        # -> dist/cfm_v0.1.0.zip

The archive unpacks into ``cfm/`` and runs from there alone::

    cd cfm && python -m monai.bundle run --config_file configs/inference.json --input_path scan.nii.gz

What the export does (the repository itself keeps one copy of everything; the vendored copy exists only in the
archive):

- copies ``bundles/<name>`` (configs, docs, models, LICENSE, large_files.yml), without caches, and of its
  ``scripts/`` only the modules its configs call and what those import (:func:`used_scripts`; the studies live in
  the repository's ``tools/studies``, and the tests keep a bundle's ``scripts/`` to what its configs use);
- vendors the modules of the project's ``shared_transforms`` package that the bundle uses (:func:`used_modules`:
  those its configs and scripts name, and what those import in turn; with the shipped sample) into
  ``<name>/scripts/shared_transforms`` and points the bundle at it: config imports become
  ``$import scripts.shared_transforms as shared_transforms``, config ``_target_`` names and the scripts' imports of
  ``shared_transforms`` become ``scripts.shared_transforms`` (the bundle root is on ``sys.path`` for MONAI's runner,
  as ``scripts.network`` already requires), with their imports re-sorted by isort as the Zoo's style check wants;
- pins ``required_packages_version`` in ``configs/metadata.json`` to the versions installed where the export runs
  (every runtime dependency of this project except torch, MONAI and numpy, which the metadata names on their own);
- refuses an archive path that holds a file this tool did not write, and writes the zip atomically.

MONAI has no exporter of a bundle's Python dependencies (``monai.bundle`` packs configs and weights only), hence
this tool. It uses the standard library's ``zipfile`` and ``shutil``, and isort.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from importlib import metadata as importlib_metadata
from pathlib import Path

import fire

from shared_transforms.engine.bundle import REPO_ROOT
from shared_transforms.errors import InputError
from shared_transforms.io.files import atomic_path

PACKAGE = "shared_transforms"
#: the archive's own mark: a zip comment, so a later export may replace only an archive of this tool
ZIP_MARK = b"lfmri:export_bundle"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info")
#: packages the metadata names in their own fields (``monai_version``, ``pytorch_version``, ``numpy_version``)
_OWN_FIELDS = {"torch", "monai", "numpy"}


def _runtime_requirements() -> dict[str, str]:
    """``{distribution: installed version}`` for this project's runtime dependencies (pyproject ``dependencies``)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]

    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for dep in deps:
        name = re.split(r"[<>=!~ \[;]", dep, maxsplit=1)[0].strip()
        if name.lower() in _OWN_FIELDS:
            continue
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            raise SystemExit(f"{name} (a dependency in pyproject.toml) is not installed; install it before exporting")
    return dict(sorted(out.items()))


def rewrite_config_text(text: str) -> str:
    """Point a config at the vendored package: its import, and every ``_target_`` / expression that names it."""
    text = text.replace(f'"$import {PACKAGE}"', f'"$import scripts.{PACKAGE} as {PACKAGE}"')
    return re.sub(rf'("_target_"\s*:\s*")({PACKAGE}\.)', r"\1scripts.\2", text)


def rewrite_script_text(text: str) -> str:
    """A bundle script's ``from shared_transforms.x import y`` / ``import shared_transforms`` -> the vendored copy."""
    text = re.sub(rf"^(\s*)from {PACKAGE}(\.|\s)", rf"\1from .{PACKAGE}\2", text, flags=re.MULTILINE)
    return re.sub(rf"^(\s*)import {PACKAGE}\b(?! as)", rf"\1from . import {PACKAGE}", text, flags=re.MULTILINE)


def sort_imports(text: str) -> str:
    """Re-sort a rewritten script's imports as the Zoo's isort check wants them (pyproject.toml's isort settings:
    profile black, 120 columns).

    The rewrite turns ``from shared_transforms...`` (first party in the repository) into a relative import, which
    isort puts into the local block beside ``from .network ...``; isort itself does the re-sorting.
    """
    try:
        import isort
    except ModuleNotFoundError:
        raise SystemExit("export_bundle needs isort to sort the rewritten imports: pip install isort") from None
    return isort.code(text, config=isort.Config(settings_file=str(REPO_ROOT / "pyproject.toml")))


#: modules every archive carries: the package, its error type, and the shipped sample every inference defaults to
ALWAYS = ("__init__.py", "errors.py", "io/__init__.py", "io/sample.py")


def _module_path(dotted: str) -> str | None:
    """``"metrics.core"`` -> ``"metrics/core.py"`` (``"metrics"`` -> ``"metrics/__init__.py"``), relative to the
    package; None when the package has no such module (a function or class name)."""
    base = REPO_ROOT / PACKAGE / Path(*dotted.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py").relative_to(REPO_ROOT / PACKAGE).as_posix()
    if (base / "__init__.py").is_file():
        return (base / "__init__.py").relative_to(REPO_ROOT / PACKAGE).as_posix()
    return None


def _named_modules(dotted: str) -> set[str]:
    """The module files a dotted name under the package reaches: each prefix that is a module or package
    (``io.SaveVolumed`` -> ``io.py``; ``metrics.core.psnr`` -> ``metrics/__init__.py``, ``metrics/core.py``)."""
    parts, out = dotted.split("."), set()
    for i in range(1, len(parts) + 1):
        found = _module_path(".".join(parts[:i]))
        if found is None:
            break
        out.add(found)
    return out


def _imports_of(source: str, package_of_file: str | None) -> set[str]:
    """The package's modules a Python file imports (absolute ``shared_transforms.x`` or, inside the package,
    relative ``.x``), anywhere in the file (lazy imports in functions too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    out |= _named_modules(alias.name[len(PACKAGE) + 1 :])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and (node.module == PACKAGE or node.module.startswith(PACKAGE + ".")):
                base = node.module[len(PACKAGE) + 1 :]
            elif node.level > 0 and package_of_file is not None:
                parent = package_of_file.split(".") if package_of_file else []
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            else:
                continue
            if base:
                out |= _named_modules(base)
            for alias in node.names:  # from . import io / from shared_transforms.metrics import core
                out |= _named_modules(".".join([*([base] if base else []), alias.name]))
    return out


def used_scripts(bundle_dir: str | os.PathLike) -> list[str]:
    """The file names of the bundle's ``scripts/`` modules its configs call (``scripts.<module>`` in a ``_target_``
    or an expression), closed over their relative imports (``from .network import ...``), with ``__init__.py``."""
    folder = Path(bundle_dir) / "scripts"
    if not folder.is_dir():
        return []
    todo = {"__init__"}
    for cfg in (Path(bundle_dir) / "configs").glob("*.json"):
        todo |= set(re.findall(r"\bscripts\.([A-Za-z_]\w*)", cfg.read_text()))
    done: set[str] = set()
    while todo:
        name = todo.pop()
        if name in done or not (folder / f"{name}.py").is_file():
            continue
        done.add(name)
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                todo |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
    return sorted(f"{name}.py" for name in done)


def used_modules(bundle_dir: str | os.PathLike) -> list[str]:
    """The package's module files (relative paths) a bundle uses: named in its configs (``shared_transforms.x``) or
    imported by the scripts it carries (:func:`used_scripts`), plus :data:`ALWAYS`, closed over the modules' own
    imports."""
    bundle_dir = Path(bundle_dir)
    todo = set(ALWAYS)
    for cfg in (bundle_dir / "configs").glob("*.json"):
        for dotted in re.findall(rf"\b{PACKAGE}\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)", cfg.read_text()):
            todo |= _named_modules(dotted)
    for name in used_scripts(bundle_dir):
        todo |= _imports_of((bundle_dir / "scripts" / name).read_text(), None)
    done: set[str] = set()
    while todo:
        rel = todo.pop()
        if rel in done:
            continue
        done.add(rel)
        package = ".".join(rel.split("/")[:-1])  # what a relative import starts from ("metrics" for metrics/*.py)
        todo |= _imports_of((REPO_ROOT / PACKAGE / rel).read_text(), package) - done
    return sorted(done)  # a sub-package's __init__ is in: _named_modules adds every prefix of a dotted name


def stage_bundle(name: str, folder: str | os.PathLike) -> Path:
    """Write the exported ``<folder>/<name>/`` (see the module docstring); returns it."""
    src = REPO_ROOT / "bundles" / name
    if not (src / "configs" / "metadata.json").is_file():
        raise InputError(str(src), f"is not a bundle of this repository (no configs/metadata.json); bundles: "
                         f"{', '.join(sorted(p.name for p in (REPO_ROOT / 'bundles').iterdir() if p.is_dir()))}")
    dst = Path(folder) / name
    shutil.copytree(src, dst, ignore=_IGNORE)
    scripts = dst / "scripts"
    scripts.mkdir(exist_ok=True)
    carried = set(used_scripts(src))
    for py in scripts.glob("*.py"):  # a module no config calls stays in the repository
        if py.name not in carried and py.name != "__init__.py":
            py.unlink()
    if not (scripts / "__init__.py").exists():
        (scripts / "__init__.py").write_text('"""The bundle\'s code."""\n')
    for py in scripts.glob("*.py"):
        py.write_text(sort_imports(rewrite_script_text(py.read_text())))
    for rel in used_modules(src):
        (scripts / PACKAGE / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / PACKAGE / rel, scripts / PACKAGE / rel)
    shutil.copytree(REPO_ROOT / PACKAGE / "sample_data", scripts / PACKAGE / "sample_data", ignore=_IGNORE)
    for cfg in (dst / "configs").glob("*.json"):
        cfg.write_text(rewrite_config_text(cfg.read_text()))
    meta_path = dst / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["required_packages_version"] = _runtime_requirements()
    meta_path.write_text(json.dumps(meta, indent=4) + "\n")
    return dst


def _zip_is_ours(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return z.comment == ZIP_MARK
    except (OSError, zipfile.BadZipFile):
        return False


def export_bundle(name: str, output_dir: str = "dist") -> str:
    """Build ``<output_dir>/<name>_v<version>.zip`` (unpacks into ``<name>/``). Returns its path."""
    version = json.loads((REPO_ROOT / "bundles" / name / "configs" / "metadata.json").read_text())["version"]
    target = Path(output_dir).resolve() / f"{name}_v{version}.zip"
    if target.exists() and not _zip_is_ours(target):
        raise InputError(str(target), "exists and was not written by export_bundle; refusing to overwrite it")
    with tempfile.TemporaryDirectory() as tmp:
        staged = stage_bundle(name, tmp)
        with atomic_path(target) as out, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(staged.rglob("*")):
                if path.is_file():
                    z.write(path, path.relative_to(tmp).as_posix())
            z.comment = ZIP_MARK
    print(f"wrote {target}")
    return str(target)


if __name__ == "__main__":
    sys.exit(0 if fire.Fire(export_bundle) else 1)
