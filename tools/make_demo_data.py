#!/usr/bin/env python
"""Build the demo data set: synthetic subjects from the MNI152 2009 template that nilearn ships.

There is no HCP, IXI or fastMRI here, so the shipped bundles are trained and tested on this: each subject is the
template (T1w, skull-stripped, 1 mm) under a random smooth deformation (MONAI ``Rand3DElasticd``: a random affine
plus a smoothed displacement field, a few mm) and a random intensity variation (tissue contrast through the GM/WM
maps, a bias field, a gamma), cropped to the brain. Its low-field partner comes from one of two degradations
(``--degradation``):

- ``randomised`` (the default): :class:`shared_transforms.simulation.dictionary.RandomLowFieldDegradationd`, one draw
  per subject of the acquisition axis (axial, coronal or sagittal), slice thickness 2-7 mm and gap, in-plane spacing
  1-2.5 mm, a truncated-k-space or Gaussian PSF, Rician noise at a WM SNR of 4-60, a grey/white contrast scale of
  0.3-1.2, a bias field and a gamma: the spread of scans a 64 mT user meets (domain randomisation, as SynthSR).
  24 subjects (16 / 4 / 4); the draws are recorded in each datalist item under ``degradation``.
- ``tissue_contrast``: the first demo set, reproduced exactly: the stochastic tissue-contrast simulator of Lin et al.
  2023 (Medical Image Analysis 87:102807) / Figini et al. 2020 (arXiv 2003.07216) on a 1.6 x 1.6 x 5 mm grid
  (slice thickness 4 mm + 1 mm gap, the geometry of a 64 mT portable T1w scan as in seed 002), with (SNR_WM, SNR_GM)
  drawn per subject from the T1w bivariate Gaussian of the reference code. 16 subjects (10 / 3 / 3). The shipped
  unet and cfm weights were trained on it, and their docs' tables are measured on it.
- ``synth`` and ``synth_t1w`` (label-to-image, :mod:`shared_transforms.simulation.synthesis`): head shells around the
  brain and random per-tissue intensities (T1-, T2-, FLAIR-, PD-like, arbitrary), the low field through the randomised
  degradation. ``synth``: the high field in the drawn contrast, the low field in the same contrast jittered
  (enhancement that keeps the contrast). ``synth_t1w``: the high field T1-weighted, the low field in any contrast
  (SynthSR's task: a T1-weighted image from any scan).

    python tools/make_demo_data.py --out_dir demo_data_random                       # randomised, 24 subjects
    python tools/make_demo_data.py --out_dir demo_data --degradation tissue_contrast  # the first demo set
    python tools/make_demo_data.py --out_dir demo_data --degradation tissue_contrast --write_sample true

Writes ``<out_dir>/sub-XXX/sub-XXX_{high,low,mask}.nii.gz``, ``<out_dir>/datalist.json`` and a preview PNG.
Deterministic under ``--seed``. ``sub-XXX`` is the same anatomy in every set, and every set splits it the same way
(:func:`nested_splits`), so ``tools/merge_datalists.py`` can join the sets for training without a test anatomy of
one being trained on in the other. The template's licence (MNI ICBM 2009, free use with attribution) is in the
bundles' docs.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import fire
import numpy as np
import torch
from tqdm.auto import tqdm

from shared_transforms.io.datalist import split_subjects, write_datalist
from shared_transforms.io.files import atomic_path, write_text_atomic
from shared_transforms.io.preview import save_figure_atomic
from shared_transforms.io.sample import SAMPLE_DIR, SAMPLE_FILES
from shared_transforms.io.volumes import write_nifti_atomic

#: brain bounding box of the 1 mm template (x 26-170, y 27-207, z 0-154) with a margin, each side a multiple of 8.
CROP = (slice(18, 178), slice(22, 214), slice(0, 168))  # -> (160, 192, 168) voxels
#: low-field geometry: slice thickness 4 mm + gap 1 mm along z, 1.6 mm in plane (total factors x1.6, x1.6, x5).
THICKNESS_FACTOR = (1.6, 1.6, 4.0)
GAP_FACTOR = (0.0, 0.0, 1.0)
#: on-disk types: the template itself is 8-bit, so 8 bits (nibabel scales with scl_slope) lose nothing that matters
#: for the high field; the noisy low field keeps 16 bits.
DTYPES = {"high": np.uint8, "low": np.int16, "mask": np.uint8}
DESCRIPTIONS = {"high": "demo high field (synthetic)", "low": "demo low field (simulated)", "mask": "demo brain mask"}


def load_template() -> dict[str, torch.Tensor]:
    """The MNI152 2009 template (T1, GM, WM, brain mask) from nilearn, cropped: ``(1, 160, 192, 168)`` each,
    plus the cropped affine."""
    try:
        from nilearn import datasets
    except ImportError as err:
        raise SystemExit("the demo data needs nilearn: pip install -e '.[demo]'") from err
    t1 = datasets.load_mni152_template(resolution=1)
    maps = {
        "image": t1,
        "gm": datasets.load_mni152_gm_template(resolution=1),
        "wm": datasets.load_mni152_wm_template(resolution=1),
        "mask": datasets.load_mni152_brain_mask(resolution=1),
    }
    out = {k: torch.from_numpy(np.asarray(v.dataobj, dtype=np.float32)[CROP].copy())[None] for k, v in maps.items()}
    affine = t1.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ np.array([c.start for c in CROP])
    out["affine"] = torch.from_numpy(affine)
    return out


def make_subject(template: dict, seed: int, degradation: str = "randomised") -> dict:
    """One synthetic subject: deformed, intensity-varied high field (+ maps, mask) and its simulated low field
    (``degradation``: "randomised" or "tissue_contrast", see the module docstring)."""
    from monai.data import MetaTensor
    from monai.transforms import Rand3DElasticd, RandAdjustContrast, RandBiasField

    from shared_transforms.simulation.dictionary import RandomLowFieldDegradationd, SimulateLowFieldTissueContrastd

    rng = np.random.default_rng(seed)
    affine = template["affine"]
    data = {k: MetaTensor(template[k].clone(), affine=affine) for k in ("image", "gm", "wm", "mask")}
    deform = Rand3DElasticd(
        keys=["image", "gm", "wm", "mask"],
        sigma_range=(8, 10),
        magnitude_range=(300, 500),  # about 2-3 mm mean displacement (measured on a coordinate grid)
        prob=1.0,
        rotate_range=(0.08, 0.08, 0.08),  # radians, about 4.6 degrees
        scale_range=(0.06, 0.06, 0.06),
        mode=["bilinear", "bilinear", "bilinear", "nearest"],
        padding_mode="zeros",
    )
    deform.set_random_state(seed)
    data = deform(data)
    gm, wm, mask = (data[k].clamp(0, 1) for k in ("gm", "wm", "mask"))
    # subject-level contrast: WM and GM brightness vary by a few percent through their maps
    a_wm, a_gm = rng.uniform(-0.08, 0.08, size=2)
    image = data["image"].clamp(min=0) * (1 + a_wm * wm + a_gm * gm)
    bias = RandBiasField(degree=3, coeff_range=(0.0, 0.08), prob=1.0)
    bias.set_random_state(seed + 1)
    gamma = RandAdjustContrast(prob=1.0, gamma=(0.85, 1.15))
    gamma.set_random_state(seed + 2)
    image = gamma(bias(image)) * mask
    image = MetaTensor(image.as_tensor().float(), affine=affine)
    csf = (mask - gm - wm).clamp(0, 1)
    if degradation in SYNTH_TARGETS:
        return _synth_subject(image, gm, wm, csf, mask, seed, high_family=SYNTH_TARGETS[degradation])
    if degradation == "tissue_contrast":
        sim = SimulateLowFieldTissueContrastd(keys="image", slice_thickness_factor=THICKNESS_FACTOR,
                                              gap_factor=GAP_FACTOR)
        sim.set_random_state(seed + 3)
        low = sim({"image": image, "gm": gm, "wm": wm, "csf": csf})["image"]
    else:
        # the degradation works on [0, 1]: the template's intensities divided by their maximum inside the brain
        scale = float(image.as_tensor()[mask > 0.5].max())
        sim = RandomLowFieldDegradationd(keys="image")
        sim.set_random_state(seed + 3)
        low = sim({"image": (image / scale).clamp(0, 1), "gm": gm, "wm": wm})["image"]
    return {"high": image, "low": low, "mask": (mask > 0.5).float(), "contrast": (float(a_wm), float(a_gm))}


#: voxels of air added around the cropped template for the synth set's extra-cerebral shells (at most 19 mm thick)
SYNTH_PAD = 20


#: the label-to-image sets and the contrast family of their high field: "synth" keeps the input's contrast (the high
#: field in a random contrast, the low field in the same one jittered), "synth_t1w" is SynthSR's task (a T1-weighted
#: high field, the low field in any contrast)
SYNTH_TARGETS = {"synth": None, "synth_t1w": "t1"}


def _synth_subject(image, gm, wm, csf, mask, seed: int, high_family: str | None = None) -> dict:
    """A label-to-image set's subject: head maps and random contrasts from the deformed template
    (:func:`shared_transforms.simulation.synthesis.synth_pair`, the template's own texture); the high field in the drawn
    contrast (or in ``high_family``), the low field from the same maps in its contrast through the randomised
    degradation."""
    from monai.data import MetaTensor
    from monai.transforms import BorderPad

    from shared_transforms.simulation.dictionary import RandomLowFieldDegradationd
    from shared_transforms.simulation.synthesis import as_metatensor, synth_pair

    pad = BorderPad(SYNTH_PAD)  # MONAI moves the MetaTensor's affine with the padding
    image, gm, wm, csf, mask = (pad(MetaTensor(v).float()) for v in (image, gm, wm, csf, mask))
    affine = image.affine
    arrs = [np.asarray(v[0], np.float32) for v in (image, gm, wm, csf, mask)]
    pair = synth_pair(arrs[1], arrs[2], arrs[3], arrs[4], arrs[0], seed=seed, high_family=high_family)
    sim = RandomLowFieldDegradationd(keys="image")
    sim.set_random_state(seed + 3)
    low = sim({"image": as_metatensor(pair["low_contrast"], affine), "gm": gm, "wm": wm})["image"]
    return {"high": as_metatensor(pair["high"], affine), "low": low, "mask": (mask > 0.5).float(),
            "contrast": (0.0, 0.0), "synth": pair["draws"]}


def save_preview(rows: list[dict], path: str) -> str:
    """PNG: per subject, the mid-sagittal and an axial slice of the low field (cubic onto the high-field grid)
    beside the high field."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from monai.transforms import ResampleToMatch

    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 3 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        low_on_high = ResampleToMatch(mode=3, padding_mode="zeros")(row["low"], img_dst=row["high"])
        x = row["high"].shape[1] // 2
        z = int(row["high"].shape[3] * 0.55)
        views = [
            (low_on_high[0, x].T, "low field, sagittal"), (row["high"][0, x].T, "high field, sagittal"),
            (low_on_high[0, :, :, z].T, "low field, axial"), (row["high"][0, :, :, z].T, "high field, axial"),
        ]
        for c, (img, title) in enumerate(views):
            ax = axes[r, c]
            ax.imshow(np.asarray(img), cmap="gray", origin="lower", vmin=0, vmax=float(np.percentile(np.asarray(img), 99.5)))
            ax.set_title(f"{row['subject']}: {title}", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return save_figure_atomic(fig, path, "make_demo_data", dpi=80)


#: subjects (all, validation, testing) of each degradation's demo set
DEFAULT_COUNTS = {"randomised": (24, 4, 4), "tissue_contrast": (16, 3, 3), "synth": (24, 4, 4), "synth_t1w": (24, 4, 4)}


def nested_splits(subjects: list[str], n_val: int, n_test: int, seed: int) -> dict[str, list[str]]:
    """The subject split, the same for an anatomy in every demo set.

    Subject ``sub-XXX`` is the same anatomy (the same deformation seed) in every set, whatever its degradation. So
    that no set's test anatomy is another set's training anatomy (and sets can be trained on together, see
    ``tools/merge_datalists.py``), the first 16 subjects keep the first demo set's split (:func:`split_subjects` of 16
    with 3 / 3 and the same seed) and only the subjects beyond are split, seeded, into the remaining validation and test
    places.
    """
    first_n, first_val, first_test = DEFAULT_COUNTS["tissue_contrast"]
    if len(subjects) <= first_n or n_val < first_val or n_test < first_test:
        return split_subjects(subjects, n_val, n_test, seed)
    rest_val, rest_test = n_val - first_val, n_test - first_test
    if rest_val + rest_test >= len(subjects) - first_n:
        raise SystemExit(f"{len(subjects)} subjects cannot give {n_val} validation + {n_test} testing subjects "
                         "with the first 16's split kept")
    first = split_subjects(subjects[:first_n], first_val, first_test, seed)
    rest = split_subjects(subjects[first_n:], rest_val, rest_test, seed)
    return {k: sorted(first[k] + rest[k]) for k in first}


def _draws(meta: dict) -> dict:
    """The randomised degradation's draws from the low field's meta (``lowfield_*``), JSON-ready."""
    out = {}
    for key, value in meta.items():
        if str(key).startswith("lowfield_"):
            value = value.tolist() if hasattr(value, "tolist") else value
            out[str(key)[len("lowfield_"):]] = [round(float(v), 4) for v in value] if isinstance(value, list) else (
                round(float(value), 4) if isinstance(value, float) else value)
    return out


def main(
    out_dir: str = "demo_data",
    degradation: str = "randomised",
    n_subjects: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    write_sample: bool = False,
    preview: bool = True,
):
    """Write ``n_subjects`` synthetic subjects, their datalist (seeded subject split) and a preview PNG.

    Args:
        degradation: "randomised" (default), "tissue_contrast" (the first demo set, reproduced exactly), "synth" or
            "synth_t1w" (label-to-image; see the module docstring).
        n_subjects, n_val, n_test: default 24 / 4 / 4 (randomised) or 16 / 3 / 3 (tissue_contrast).
        write_sample: copy the first test subject into ``shared_transforms/sample_data`` (the shipped sample).
    """
    if degradation not in DEFAULT_COUNTS:
        raise SystemExit(f"--degradation must be one of {', '.join(DEFAULT_COUNTS)}, got {degradation!r}")
    counts = DEFAULT_COUNTS[degradation]
    n_subjects, n_val, n_test = (counts[i] if v is None else int(v) for i, v in enumerate((n_subjects, n_val, n_test)))
    t0 = time.time()
    template = load_template()
    os.makedirs(out_dir, exist_ok=True)
    items, previews = [], []
    for i in tqdm(range(n_subjects), desc="subjects", unit="subject"):
        subject = f"sub-{i:03d}"
        sub = make_subject(template, seed=seed * 10007 + 17 * i, degradation=degradation)
        folder = os.path.join(out_dir, subject)
        paths = {}
        for key in ("high", "low", "mask"):
            vol = sub[key]
            arr = vol[0].numpy().astype(np.uint8) if key == "mask" else vol[0].numpy()
            paths[key] = write_nifti_atomic(arr, vol.affine, os.path.join(folder, f"{subject}_{key}.nii.gz"),
                                            "make_demo_data", DESCRIPTIONS[key], dtype=DTYPES[key])
        meta = sub["low"].meta
        if degradation == "tissue_contrast":  # the first demo set's items, unchanged
            item = {"subject": subject, **paths,
                    "snr_wm": round(float(meta.get("lowfield_snr_wm", float("nan"))), 3),
                    "snr_gm": round(float(meta.get("lowfield_snr_gm", float("nan"))), 3),
                    "contrast_wm_gm": [round(c, 4) for c in sub["contrast"]]}
        elif degradation in SYNTH_TARGETS:
            item = {"subject": subject, **paths, "degradation": _draws(meta), "synth": sub["synth"]}
        else:
            item = {"subject": subject, **paths, "degradation": _draws(meta),
                    "contrast_wm_gm": [round(c, 4) for c in sub["contrast"]]}
        items.append(item)
        if preview and len(previews) < 3:
            previews.append({"subject": subject, "low": sub["low"], "high": sub["high"]})
    splits = write_datalist(items, os.path.join(out_dir, "datalist.json"),
                            splits=nested_splits([it["subject"] for it in items], n_val, n_test, seed))
    if preview:
        print("preview:", save_preview(previews, os.path.join(out_dir, "preview.png")))
    if write_sample:
        first = splits["testing"][0] if splits["testing"] else splits["training"][0]
        SAMPLE_DIR.mkdir(exist_ok=True)
        for key, name in SAMPLE_FILES.items():
            with atomic_path(SAMPLE_DIR / name) as tmp:
                shutil.copyfile(os.path.join(out_dir, first[key]), tmp)
        info = {"subject": first["subject"], "snr_wm": first.get("snr_wm"), "snr_gm": first.get("snr_gm"),
                "degradation": first.get("degradation", degradation),
                "made_by": f"python tools/make_demo_data.py --out_dir {out_dir} --degradation {degradation} "
                           f"--n_subjects {n_subjects} --seed {seed} --write_sample true",
                "source": "MNI ICBM152 2009c nonlinear symmetric template (nilearn), synthetic deformation and "
                          "low-field simulation; not a real scan"}
        write_text_atomic(SAMPLE_DIR / "sample.json", json.dumps(info, indent=2) + "\n")
        print(f"sample ({first['subject']}) written to {SAMPLE_DIR}")
    print(f"wrote {n_subjects} subjects to {out_dir} in {time.time() - t0:.0f} s: "
          + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return os.path.join(out_dir, "datalist.json")


if __name__ == "__main__":
    fire.Fire(main)
