#!/usr/bin/env python
"""The real-data evaluation: every enhancement bundle on real 0.055 T scans, scored against the same patients at 3 T.

    python tools/realdata_eval.py --bundles interpolation,unet,cfm,amir --out_dir eval/realdata

Data: the four patients of Liu et al., "A low-cost and shielding-free ultra-low-field brain MRI scanner", Nat Commun
12:7238 (2021) (CC0; the authors' repository bispmri/Ultra-low-field-MRI-Scanner), T1w (GRE), T2w (FSE) and FLAIR,
four axial slices each at 0.055 T (256 x 256, affine unknown) and the same four positions at 3 T (resized for the
paper's figures). Looked for in ``--realdata_dir`` (default: ``../shared/realdata/ulf_0p055T_hku`` beside the
repository); when it is absent the tool says so and stops.

What it does:

1. Each 0.055 T file (a 4-slice slab) goes through each bundle's bundle runner as a user would run it
   (``python -m monai.bundle run --config_file bundles/<b>/configs/inference.json --input_path <folder>
   --resample_to_input true``); 2D bundles enhance a slab in its own plane, 3D bundles refuse it (their row says so).
2. Each 3 T slice is registered onto its 0.055 T slice in 2D
   (:func:`shared_transforms.metrics.registration.register_affine_2d`: Mattes mutual information, similarity then
   affine, SimpleITK); ``registration.png`` shows every pair for a reader to check.
3. Scores per slice, inside a brain mask: the head (half Otsu's threshold of the smoothed slice, holes filled; the
   union of the 0.055 T slice's and the registered 3 T slice's) eroded by ``--scalp_mm`` (12 mm, taking the
   unknown pixel as 1 mm: the scalp and skull of these slices) and restricted to the 3 T field of view. Each image
   is normalised by its own 1st-99th percentiles inside that mask (clipped to
   [0, 1]); then PSNR and SSIM (scikit-image's map, Gaussian window, mean over the mask), PSNR after the best
   affine intensity fit of the image to the 3 T one (least squares in the mask: what remains when a global contrast
   and brightness change is forgiven), and the correlation of gradient magnitudes (Sobel) inside the mask (structure
   alone, blind to the intensity scale).
4. Two ceiling rows, made with the 3 T slice itself (so not methods): the 0.055 T slice, and the slice smoothed by a
   1-pixel Gaussian, each given the 3 T slice's intensities in its own rank order inside the mask (histogram
   matching): what the input reaches when its intensity curve is exactly the 3 T one, the reference point for a
   method that changes only the intensity curve of its input (a contrast map, a monotone lookup table); the second
   adds light denoising. A clear gain beyond them needs new structure: tissue contrast the low-field image does not
   show.

5. ``--output_contrast T1w`` scores SynthSR's task instead: every 0.055 T file (T1w, T2w, FLAIR) against the same
   patient's 3 T **T1w** slice at the same position (registered onto it by the same mutual information, which does
   not need the contrasts to agree), each bundle run with ``--output_contrast T1w`` (its weights for a T1-weighted
   output from any input; a bundle without them refuses in one line and its row says so). The ``input`` row is then
   the low-field file itself in its own contrast: what a reader has without the tool. No ceiling rows (a rank-order
   map cannot turn a T2w image into a T1w one).

Writes ``<out_dir>/realdata.csv`` (one row per bundle, patient, contrast and slice), ``realdata.md`` (mean per
bundle and contrast over the 16 slices), ``realdata.json`` and ``registration.png``; prints the table.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fire
import nibabel as nib
import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO.parent / "shared" / "realdata" / "ulf_0p055T_hku"
PATIENTS = ("F6A", "F6B", "F7A", "F7B")
CONTRASTS = ("T1w", "T2w", "FLAIR")
METRICS = (("psnr", "PSNR (dB)", ".2f"), ("ssim", "SSIM", ".4f"), ("psnr_fit", "PSNR fit (dB)", ".2f"),
           ("grad_corr", "edge corr.", ".3f"))


def find_pairs(realdata_dir: str | os.PathLike, reference_contrast: str | None = None) -> list[dict]:
    """``[{patient, contrast, low, high}]`` for every pair present (``high`` the 3 T scan of the same contrast, or of
    ``reference_contrast`` when given); SystemExit when the folder is absent."""
    root = Path(realdata_dir)
    if not root.is_dir():
        raise SystemExit(
            f"error: {root}: the real 0.055 T / 3 T scans are not here; this evaluation needs them "
            "(pass --realdata_dir, the folder holding F6A, F6B, F7A, F7B)"
        )
    pairs = []
    for p in PATIENTS:
        for c in CONTRASTS:
            low, high = root / p / f"0.055T_{c}.nii.gz", root / p / f"3T_{reference_contrast or c}.nii.gz"
            if low.exists() and high.exists():
                pairs.append({"patient": p, "contrast": c, "low": str(low), "high": str(high)})
    if not pairs:
        raise SystemExit(f"error: {root}: no 0.055T_<contrast>.nii.gz / 3T_<contrast>.nii.gz pairs found")
    return pairs


def brain_mask(low: np.ndarray, ref: np.ndarray, inside: np.ndarray, scalp_mm: float) -> np.ndarray:
    """The head (of the low-field slice or of the registered 3 T slice, :func:`head_mask_2d` of each) eroded by
    ``scalp_mm`` (pixels taken as 1 mm), within the 3 T field of view."""
    from shared_transforms.metrics.registration import head_mask_2d

    head = (head_mask_2d(low) | head_mask_2d(ref)) & inside
    depth = ndimage.distance_transform_edt(head)
    return depth > scalp_mm


def normalise(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """1st-99th percentiles inside ``mask`` -> [0, 1], clipped."""
    lo, hi = np.percentile(img[mask], [1, 99])
    return np.clip((img - lo) / max(hi - lo, 1e-8), 0, 1)


def with_reference_histogram(img: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``img`` with its voxels inside ``mask`` given the reference's intensities in the same rank order (histogram
    matching; outside the mask unchanged): the image's own order of intensities with the 3 T intensity curve, as a
    reference point. Uses the reference, so it is a ceiling row, not a method."""
    out = np.asarray(img, np.float64).copy()
    order = np.argsort(out[mask], kind="stable")
    values = np.empty(order.size)
    values[order] = np.sort(np.asarray(ref, np.float64)[mask])
    out[mask] = values
    return out


#: the ceiling rows (name -> the low-field slice made into that image; see :func:`with_reference_histogram`)
CEILINGS = {
    "ceiling: input, 3T histogram": lambda low, ref, mask: with_reference_histogram(low, ref, mask),
    "ceiling: input smoothed (1 px), 3T histogram": lambda low, ref, mask: with_reference_histogram(
        ndimage.gaussian_filter(low, 1.0), ref, mask),
}


def gradient_magnitude(img: np.ndarray) -> np.ndarray:
    return np.hypot(ndimage.sobel(img, 0), ndimage.sobel(img, 1))


def score_slice(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> dict:
    """The four scores of one slice ``(H, W)`` against the registered reference, inside ``mask``."""
    from shared_transforms.metrics import psnr
    from shared_transforms.metrics.structural import ssim

    p, r = normalise(pred, mask), normalise(ref, mask)
    design = np.stack([p[mask], np.ones(int(mask.sum()))], 1)
    coef, *_ = np.linalg.lstsq(design, r[mask], rcond=None)
    fitted = p * coef[0] + coef[1]
    gp, gr = gradient_magnitude(p)[mask], gradient_magnitude(r)[mask]
    return {
        "psnr": psnr(p, r, mask),
        "ssim": ssim(p, r, mask),
        "psnr_fit": psnr(fitted, r, mask),
        "grad_corr": float(np.corrcoef(gp, gr)[0, 1]),
    }


def run_bundle(
    bundle: str, input_dir: Path, out_dir: Path, device: str, rerun: bool = True, ckpt_path: str | None = None,
    output_contrast: str = "input",
    overrides: dict | None = None,
) -> tuple[Path, str]:
    """Run ``bundle`` through MONAI's bundle runner on every file of ``input_dir`` (with ``ckpt_path`` instead of
    its shipped weights when given, with ``--output_contrast`` when it is not ``"input"``, and ``overrides``, more
    of the runner's options by name, e.g. ``{"scalp_mm": 0}``, last); returns its output folder
    and the last line it printed (``rerun`` False: keep the outputs of an earlier run when its summary is there)."""
    out = out_dir / bundle
    from shared_transforms.io.volumes import as_bool

    if not as_bool(rerun) and (out / f"{bundle}_summary.json").exists():
        return out, "outputs of an earlier run kept (--rerun false)"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
           str(REPO / "bundles" / bundle / "configs" / "inference.json"), "--input_path", str(input_dir),
           "--output_dir", str(out), "--resample_to_input", "true", "--device", device,
           *(["--ckpt_path", str(Path(ckpt_path).expanduser().resolve())] if ckpt_path else []),
           *(["--output_contrast", output_contrast] if output_contrast != "input" else []),
           *[str(a) for key, value in (overrides or {}).items() for a in (f"--{key}", value)]]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    said = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines()
            if ln.strip().startswith((f"[{bundle}]", "error:"))]  # the runner's summary and refusals
    return out, (said[-1] if said else f"exit {proc.returncode}")


def load_slab(path: str | os.PathLike) -> np.ndarray:
    """``(H, W, S)`` float64 voxels of a NIfTI slab (a 2D file as one slice)."""
    data = np.asarray(nib.load(str(path)).get_fdata(), np.float64)
    return data[..., None] if data.ndim == 2 else data


def save_registration_figure(cases: list[dict], path: Path) -> None:
    """One row per pair (its second slice): 0.055 T, registered 3 T, both overlaid (magenta / green), the mask."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shared_transforms.io.preview import save_figure_atomic

    fig, axes = plt.subplots(len(cases), 3, figsize=(9, 3 * len(cases)))
    axes = np.atleast_2d(axes)
    for ax, case in zip(axes, cases, strict=True):
        low, ref, mask = case["low"], case["ref"], case["mask"]
        ln, rn = normalise(low, mask), normalise(ref, mask)
        ax[0].imshow(ln.T, cmap="gray", origin="lower")
        ax[1].imshow(rn.T, cmap="gray", origin="lower")
        ax[2].imshow(np.stack([ln, rn, ln], -1).transpose(1, 0, 2), origin="lower")
        for a in ax[1:]:
            a.contour(mask.T, levels=[0.5], colors="yellow", linewidths=0.6, origin="lower")
        ax[0].set_ylabel(f"{case['patient']} {case['contrast']} z={case['slice']}", fontsize=8)
        for a, title in zip(ax, ("0.055 T", "3 T registered (mask)", "overlay: 0.055 T magenta, 3 T green"),
                            strict=True):
            a.set_title(title, fontsize=8)
            a.set_xticks([])
            a.set_yticks([])
    fig.tight_layout()
    save_figure_atomic(fig, str(path), "lfmri:realdata_eval", dpi=60)


def write_rows_csv(rows: list[dict], path: Path) -> None:
    """Rows of one set of keys as a CSV file, written atomically."""
    from shared_transforms.io.files import write_text_atomic

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(str(path), buf.getvalue(), newline="")


def markdown(rows: list[dict], methods: list[str], refusals: dict[str, str]) -> str:
    head = "| method | " + " | ".join(f"{c} {h}" for c in CONTRASTS for _, h, _ in METRICS[:2]) + \
        " | " + " | ".join(f"{c} {h}" for c in CONTRASTS for _, h, _ in METRICS[2:]) + " |"
    lines = [head, "| --- " * (1 + 4 * len(CONTRASTS)) + "|"]
    for m in methods:
        if m in refusals:
            lines.append(f"| {m} | refused: {refusals[m]} " + "| " * (4 * len(CONTRASTS) - 1) + "|")
            continue
        cells = []
        for keys in (METRICS[:2], METRICS[2:]):
            for c in CONTRASTS:
                for key, _, fmt in keys:
                    vals = [r[key] for r in rows if r["method"] == m and r["contrast"] == c]
                    cells.append(f"{np.mean(vals):{fmt}}" if vals else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(
    bundles: str = "interpolation,unet,cfm,amir",
    out_dir: str = "eval/realdata",
    realdata_dir: str = str(DEFAULT_DIR),
    scalp_mm: float = 12.0,
    device: str = "cpu",
    seed: int = 0,
    rerun: bool = True,
    ckpt_paths: dict | None = None,
    ceilings: bool = True,
    output_contrast: str = "input",
    overrides: dict | None = None,
) -> None:
    """Run the evaluation (see the module docstring) and print the Markdown table. ``ckpt_paths``: bundle -> a
    checkpoint to score instead of its shipped weights (e.g. ``"{'unet': '~/runs/unet/model.pt'}"``);
    ``ceilings``: add the two ceiling rows (:data:`CEILINGS`); ``output_contrast``: ``"input"`` (each scan against
    3 T in its own contrast) or ``"T1w"`` (every scan against 3 T T1w, the bundles asked for a T1w output);
    ``overrides``: more options for every bundle's runner (e.g. ``"{'scalp_mm': 0}"``: another setting scored)."""
    from shared_transforms.io.files import write_text_atomic
    from shared_transforms.io.volumes import as_bool
    from shared_transforms.metrics.registration import register_affine_2d

    output_contrast = str(output_contrast)
    if output_contrast != "input" and output_contrast not in CONTRASTS:
        raise SystemExit(f"error: --output_contrast must be input or one of {', '.join(CONTRASTS)}, got {output_contrast!r}")
    cross = output_contrast != "input"
    ceilings = as_bool(ceilings) and not cross  # a rank-order map cannot change the contrast
    pairs = find_pairs(realdata_dir, output_contrast if cross else None)
    out = Path(out_dir).resolve()
    input_dir = out / "inputs"
    input_dir.mkdir(parents=True, exist_ok=True)
    for pair in pairs:  # one folder of uniquely named copies: each bundle runs once over all of them
        dst = input_dir / f"{pair['patient']}_{pair['contrast']}.nii.gz"
        if not dst.exists():
            shutil.copyfile(pair["low"], dst)
        pair["input"] = dst
    names = list(bundles) if isinstance(bundles, (list, tuple)) else str(bundles).split(",")  # fire gives a tuple
    methods = ["input"] + [str(b).strip() for b in names if str(b).strip()]
    outputs, refusals = {}, {}
    for bundle in methods[1:]:
        folder, last = run_bundle(
            bundle, input_dir, out, device, rerun, (ckpt_paths or {}).get(bundle), output_contrast, overrides
        )
        print(f"[realdata] {bundle}: {last}", flush=True)
        outputs[bundle] = folder
    rows, cases = [], []
    for pair in pairs:
        low, high = load_slab(pair["low"]), load_slab(pair["high"])
        stem = f"{pair['patient']}_{pair['contrast']}"
        preds = {"input": low}
        for bundle, folder in outputs.items():
            f = folder / f"{stem}_{bundle}{'_' + output_contrast if cross else ''}.nii.gz"
            if f.exists():
                preds[bundle] = load_slab(f)
            else:
                refusals[bundle] = (f"no {output_contrast} output (see its summary)" if cross
                                    else "no output for the 4-slice slab (see its summary)")
        for z in range(low.shape[-1]):
            reg = register_affine_2d(low[..., z], high[..., z], seed=seed)
            mask = brain_mask(low[..., z], reg.moved, reg.inside, scalp_mm)
            if z == 1:
                cases.append({**pair, "slice": z, "low": low[..., z], "ref": reg.moved, "mask": mask})
            slices = {method: vol[..., z] for method, vol in preds.items()}
            if ceilings:
                slices.update({name: make(low[..., z], reg.moved, mask) for name, make in CEILINGS.items()})
            for method, img in slices.items():
                rows.append({"method": method, "patient": pair["patient"], "contrast": pair["contrast"],
                             "slice": z, "mask_px": int(mask.sum()), "registration_mi": reg.metric,
                             **score_slice(img, reg.moved, mask)})
    write_rows_csv(rows, out / "realdata.csv")
    table = markdown(rows, methods + (list(CEILINGS) if ceilings else []), refusals)
    if cross:
        table = f"Every 0.055 T scan (columns: its contrast) against 3 T {output_contrast}.\n\n" + table
    write_text_atomic(str(out / "realdata.md"), table + "\n")
    write_text_atomic(str(out / "realdata.json"), json.dumps({"rows": rows, "refusals": refusals}, indent=1))
    save_registration_figure(cases, out / "registration.png")
    print(table)


if __name__ == "__main__":
    fire.Fire(main)
