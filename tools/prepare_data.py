#!/usr/bin/env python
"""Turn a user's scans into the contract's training pairs.

Commands (``python tools/prepare_data.py <command> --help`` for every option):

``stack_slices``
    Per-slice NIfTI files -> one volume per subject (seed 002, section 2.3.1): group files by the subject id in their
    name, sort by slice index, drop singleton depth, stack along the depth axis; optionally resample to a fixed
    shape and spacing (seed 002's ``--preset low`` = (112, 138, 40) at (1.6, 1.6, 5.0) mm, ``--preset high`` =
    (179, 221, 200) at 1 mm).
``make_datalist``
    Pairs low- and high-field volumes (and masks) by subject id and writes the datalist with a seeded subject-level
    split; checks every file and that each pair's fields of view overlap.
``simulate``
    A folder of high-field volumes -> synthetic low-field pairs (the tissue-contrast simulator of Lin et al. /
    Figini et al., or seed 002's blur + gamma + noise recipe) and their datalist.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict

import fire
import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from shared_transforms.transforms.checks import check_fov_overlap, check_nifti_file, check_values, is_nifti_path
from shared_transforms.io.datalist import write_datalist
from shared_transforms.errors import InputError
from shared_transforms.transforms.geometry import SEED002_HIGH_FIELD, SEED002_LOW_FIELD
from shared_transforms.io.volumes import nifti_stem, write_nifti_atomic

#: ``sub-01_slice-012.nii.gz``, ``sub01_12.nii``, ``patient7-slice_3.nii.gz``: subject, then the slice index last.
DEFAULT_SLICE_PATTERN = r"^(?P<subject>.+?)[_-](?:slice[_-]?)?(?P<slice>\d+)$"
#: the role suffix stripped from a file name to get its subject id (``sub-01_low.nii.gz`` -> ``sub-01``).
ROLE_SUFFIX = r"[_-](low|high|lf|hf|lr|hr|lq|hq|mask|brainmask|brain_mask|t1w?)$"
PRESETS = {"low": SEED002_LOW_FIELD, "high": SEED002_HIGH_FIELD}


def _nifti_files(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise InputError(folder, "folder not found")
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if is_nifti_path(f) and not f.startswith("."))
    if not files:
        raise InputError(folder, "folder holds no NIfTI files (.nii or .nii.gz)")
    return files


def group_slices(files: list[str], pattern: str = DEFAULT_SLICE_PATTERN) -> dict[str, list[tuple[int, str]]]:
    """``{subject: [(slice index, path), ...]}`` sorted by slice index; raises on a name the pattern does not
    match or on a repeated index."""
    regex = re.compile(pattern)
    groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for f in files:
        m = regex.match(nifti_stem(f))
        if m is None:
            raise InputError(f, f"file name does not match the slice pattern {pattern!r} (needs groups subject, slice)")
        groups[m.group("subject")].append((int(m.group("slice")), f))
    for subject, items in groups.items():
        items.sort()
        idx = [i for i, _ in items]
        if len(set(idx)) != len(idx):
            dup = sorted({i for i in idx if idx.count(i) > 1})
            raise InputError(subject, f"slice index repeated: {dup}")
    return dict(groups)


def stack_subject(slice_files: list[str], slice_spacing_mm: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Stack sorted per-slice files into ``(X, Y, n_slices)`` and its affine.

    The in-plane part of the affine is the first slice's; the slice axis is the step between consecutive slice
    origins when the files carry positions (3D files with one slice), else ``slice_spacing_mm`` along the first
    slice's third axis direction (2D files have none: then +z).
    """
    planes, affines = [], []
    for f in slice_files:
        try:  # slices are 2D, so check_nifti_file's 3D check does not apply here
            img = nib.load(f)
        except Exception as err:
            raise InputError(f, f"is not a readable NIfTI file ({type(err).__name__}: {err})") from None
        data = np.asarray(img.dataobj, dtype=np.float32)
        data = data.reshape(data.shape[:2]) if data.ndim > 2 and int(np.prod(data.shape[2:])) == 1 else data
        if data.ndim != 2:
            raise InputError(f, f"is not a single slice: shape {img.shape}")
        if not np.all(np.isfinite(data)):
            raise InputError(f, "contains NaN or Inf values")
        if planes and data.shape != planes[0].shape:
            raise InputError(f, f"slice shape {data.shape} differs from the first slice's {planes[0].shape}")
        planes.append(data)
        affines.append(np.asarray(img.affine, dtype=np.float64))
    volume = np.stack(planes, axis=2)
    affine = affines[0].copy()
    if len(affines) > 1 and np.linalg.norm(affines[1][:3, 3] - affines[0][:3, 3]) > 1e-6:
        steps = np.diff(np.stack([a[:3, 3] for a in affines]), axis=0)
        affine[:3, 2] = steps.mean(axis=0)
    else:
        direction = affine[:3, 2] / (np.linalg.norm(affine[:3, 2]) or 1.0)
        if not np.any(direction):
            direction = np.array([0.0, 0.0, 1.0])
        affine[:3, 2] = direction * slice_spacing_mm
    return volume, affine


def stack_slices(
    in_dir: str,
    out_dir: str,
    pattern: str = DEFAULT_SLICE_PATTERN,
    suffix: str = "",
    slice_spacing_mm: float = 1.0,
    preset: str | None = None,
    spatial_shape: tuple | None = None,
    spacing_mm: tuple | None = None,
):
    """Rebuild one volume per subject from per-slice NIfTI files in ``in_dir``; writes
    ``<out_dir>/<subject><suffix>.nii.gz``.

    Args:
        pattern: regular expression on the file name without extension, with groups ``subject`` and ``slice``.
        suffix: appended to the subject id in the output name (e.g. ``_low``).
        preset: ``low`` or ``high``: seed 002's fixed shape and spacing after stacking (cubic); or give
            ``spatial_shape`` and ``spacing_mm`` yourself.
    """
    groups = group_slices(_nifti_files(in_dir), pattern)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"--preset must be one of {sorted(PRESETS)}")
        spatial_shape, spacing_mm = PRESETS[preset]["spatial_shape"], PRESETS[preset]["spacing_mm"]
    written = []
    for subject, items in tqdm(sorted(groups.items()), desc="subjects", unit="subject"):
        volume, affine = stack_subject([f for _, f in items], slice_spacing_mm)
        check_values(volume, f"{subject} (stacked from {len(items)} slices)")
        if spatial_shape is not None:
            import torch
            from monai.data import MetaTensor

            from shared_transforms.transforms.geometry import ResampleToShapeSpacing

            out = ResampleToShapeSpacing(spatial_shape, spacing_mm)(MetaTensor(torch.from_numpy(volume)[None], affine=affine))
            volume, affine = out[0].numpy(), out.affine.numpy()
        path = os.path.join(out_dir, f"{subject}{suffix}.nii.gz")
        written.append(write_nifti_atomic(volume, affine, path, "prepare_data", f"stacked {len(items)} slices"))
    print(f"wrote {len(written)} volumes to {out_dir}")
    return written


def subject_of(path: str, regex: str | None = None) -> str:
    """Subject id of a file: the ``subject`` group of ``regex`` if given, else the name without its role suffix."""
    stem = nifti_stem(path)
    if regex:
        m = re.search(regex, stem)
        if m is None:
            raise InputError(path, f"file name does not match --subject_regex {regex!r}")
        return m.group("subject") if "subject" in m.groupdict() else m.group(0)
    return re.sub(ROLE_SUFFIX, "", stem, flags=re.IGNORECASE)


def _by_subject(folder: str, regex: str | None, contains: str | None) -> dict[str, str]:
    files = [f for f in _nifti_files(folder) if contains is None or contains in os.path.basename(f)]
    out: dict[str, str] = {}
    for f in files:
        s = subject_of(f, regex)
        if s in out:
            raise InputError(f, f"subject id '{s}' also given by {out[s]}; use --subject_regex to tell them apart")
        out[s] = f
    return out


def make_datalist(
    low_dir: str,
    high_dir: str,
    out: str,
    mask_dir: str | None = None,
    subject_regex: str | None = None,
    low_contains: str | None = None,
    high_contains: str | None = None,
    mask_contains: str | None = None,
    n_val: float = 0.15,
    n_test: float = 0.15,
    seed: int = 0,
):
    """Pair low- and high-field volumes (and masks) by subject id and write the datalist JSON ``out``.

    The subject id is the file name without extension and without a role suffix (``_low``, ``_high``, ``_LF``,
    ``_mask``, ...), or the ``subject`` group of ``--subject_regex``. Low and high may share one folder: then tell
    them apart with ``--low_contains _low --high_contains _high``.

    Args:
        n_val, n_test: number (>= 1) or fraction (< 1) of subjects for validation / testing (seeded by ``seed``).
    """
    lows = _by_subject(low_dir, subject_regex, low_contains)
    highs = _by_subject(high_dir, subject_regex, high_contains)
    masks = _by_subject(mask_dir, subject_regex, mask_contains) if mask_dir else {}
    paired = sorted(set(lows) & set(highs))
    unpaired = sorted(set(lows) ^ set(highs))
    if not paired:
        raise InputError(out, f"no subject has both a low- and a high-field file (low ids e.g. {sorted(lows)[:3]}, "
                         f"high ids e.g. {sorted(highs)[:3]})")
    items = []
    for s in tqdm(paired, desc="checking pairs", unit="subject"):
        low, high = check_nifti_file(lows[s]), check_nifti_file(highs[s])
        check_fov_overlap(low.affine, low.shape, high.affine, high.shape, source=f"{lows[s]} and {highs[s]}")
        item = {"subject": s, "low": os.path.abspath(lows[s]), "high": os.path.abspath(highs[s])}
        if s in masks:
            check_nifti_file(masks[s])
            item["mask"] = os.path.abspath(masks[s])
        items.append(item)
    splits = write_datalist(items, out, n_val=n_val, n_test=n_test, seed=seed)
    if unpaired:
        print(f"skipped {len(unpaired)} unpaired subject(s): {', '.join(unpaired[:10])}")
    print(f"wrote {out}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return out


def simulate(
    high_dir: str,
    out_dir: str,
    simulator: str = "tissue",
    seed: int = 300,
    mask_dir: str | None = None,
    gm_dir: str | None = None,
    wm_dir: str | None = None,
    csf_dir: str | None = None,
    subject_regex: str | None = None,
    n_val: float = 0.15,
    n_test: float = 0.15,
):
    """Simulate a low-field partner for every high-field volume in ``high_dir``; writes
    ``<out_dir>/<subject>_low.nii.gz`` and ``<out_dir>/datalist.json`` (pointing at the original high-field files).

    Args:
        simulator: ``tissue`` (Lin et al. / Figini et al.: tissue contrast from GM/WM/CSF maps, SNR drawn per
            subject, x8 slice thickness + gap; without map folders a 3-class intensity segmentation stands in) or
            ``blurgamma`` (seed 002: 1.6 x 1.6 x 5 mm, blur, gamma darkening, background-weighted noise).
        seed: per-subject seeds are ``seed + index`` in sorted subject order (300 is the reference code's).
    """
    import torch

    from shared_transforms.transforms.intensity import PercentileNormalize
    from shared_transforms.io.volumes import LoadVolume
    from shared_transforms.simulation.dictionary import SimulateLowFieldBlurGammad, SimulateLowFieldTissueContrastd

    highs = _by_subject(high_dir, subject_regex, None)
    extra = {k: _by_subject(d, subject_regex, None) for k, d in (("mask", mask_dir), ("gm", gm_dir), ("wm", wm_dir),
                                                                   ("csf", csf_dir)) if d}
    if simulator == "tissue":
        sim = SimulateLowFieldTissueContrastd(keys="image", allow_missing_keys=True)
    elif simulator == "blurgamma":
        sim = SimulateLowFieldBlurGammad(keys="image")
    else:
        raise ValueError("--simulator must be 'tissue' or 'blurgamma'")
    load = LoadVolume()
    items = []
    for i, (s, path) in enumerate(tqdm(sorted(highs.items()), desc="simulating", unit="subject")):
        data = {"image": load(path)}
        for key, files in extra.items():
            if s in files:
                data[key] = load(files[s])
        if simulator == "blurgamma":
            data["image"] = PercentileNormalize()(data["image"], data.get("mask"))
        sim.set_random_state(seed + i)
        out = sim(data)
        low = out["image"]
        low_path = write_nifti_atomic(low[0], low.affine, os.path.join(out_dir, f"{s}_low.nii.gz"),
                                      "prepare_data", f"simulated low field ({simulator})", inputs=[path])
        item = {"subject": s, "low": os.path.abspath(low_path), "high": os.path.abspath(path)}
        if "mask" in extra and s in extra["mask"]:
            item["mask"] = os.path.abspath(extra["mask"][s])
        for k in ("lowfield_snr_wm", "lowfield_snr_gm"):
            if k in getattr(low, "meta", {}):
                item[k.replace("lowfield_", "")] = round(float(torch.as_tensor(low.meta[k])), 3)
        items.append(item)
    path = os.path.join(out_dir, "datalist.json")
    write_datalist(items, path, n_val=n_val, n_test=n_test, seed=seed)
    print(f"wrote {len(items)} simulated low-field volumes and {path}")
    return path


if __name__ == "__main__":
    fire.Fire({"stack_slices": stack_slices, "make_datalist": make_datalist, "simulate": simulate})
