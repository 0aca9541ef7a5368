#!/usr/bin/env python
"""flat on real k-space: the fully sampled 0.055 T k-space of Liu et al. 2021, under-sampled and reconstructed.

    python tools/realdata_kspace.py --out_dir eval/realdata_kspace

Data: the raw single-channel k-space (after the authors' interference removal) of the four 0.055 T patients of
``../shared/realdata/ulf_0p055T_hku`` (Liu et al., Nat Commun 12:7238, 2021; CC0): T1w 128 x 196 x 4 slices, T2w and
FLAIR 128 x 126 x 4. When the folder is absent the tool says so and stops.

1. Each file becomes a fastMRI-layout single-coil HDF5
   (:func:`shared_transforms.kspace.fastmri_writer.write_singlecoil_h5`): ``kspace`` ``(4, H, W)`` with the 128-sample
   axis as the phase-encoding columns ``W`` (the axis the masks under-sample; the other axis is taken as the readout),
   the magnitude of its inverse FFT as ``reconstruction_esc`` (the fully sampled reference).
2. flat's bundle runner reads them (``--input_kind kspace_hdf5``) at 2x and 4x, equispaced and random masks with a
   fixed centre (``--center_fraction 0.08``: 10 of the 128 lines), once with the shipped FLAT weights and once with
   the unrolled baseline (``--mode learned_steps --ckpt_path models/model_unrolled.pt``), each with
   ``--save_trajectory true``; the trajectory's first volume is the zero-filled image of the same mask.
3. Scores per slice against the fully sampled magnitude: each image scaled by its own 1st-99th percentiles inside
   the head (half Otsu's threshold of the smoothed reference, holes filled), PSNR and SSIM inside the head and over
   the whole slice. Writes ``kspace.csv`` and ``kspace.md`` (means over the 48 slices per row); prints the table.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import fire
import nibabel as nib
import numpy as np

from realdata_eval import CONTRASTS, DEFAULT_DIR, PATIENTS, REPO, normalise, write_rows_csv  # its data and scale

SETTINGS = ((2, "equispaced"), (2, "random"), (4, "equispaced"), (4, "random"))
MODELS = {"flat": [], "unrolled": ["--mode", "learned_steps", "--ckpt_path", "models/model_unrolled.pt"]}


def image_of(kspace: np.ndarray) -> np.ndarray:
    """Magnitude of the centred inverse 2D FFT over the first two axes, as the data's README reconstructs it."""
    k = np.fft.ifftshift(kspace, axes=(0, 1))
    return np.abs(np.fft.fftshift(np.fft.ifft2(k, axes=(0, 1)), axes=(0, 1)))


def write_inputs(realdata_dir: Path, folder: Path) -> list[dict]:
    """One fastMRI-layout HDF5 per patient and contrast; returns ``[{name, path, reference (S, H, W)}]``."""
    from shared_transforms.kspace.fastmri_writer import write_singlecoil_h5

    if not realdata_dir.is_dir():
        raise SystemExit(
            f"error: {realdata_dir}: the real 0.055 T k-space is not here; this evaluation needs it "
            "(pass --realdata_dir, the folder holding F6A, F6B, F7A, F7B)"
        )
    cases = []
    for p in PATIENTS:
        for c in CONTRASTS:
            src = realdata_dir / p / f"0.055T_{c}_kspace.npy"
            if not src.exists():
                continue
            k = np.load(src)  # (128, W0, 4) complex64: the 128-line axis becomes the columns
            k = np.transpose(k, (2, 1, 0))  # (S, readout, 128)
            ref = image_of(np.transpose(k, (1, 2, 0))).transpose(2, 0, 1).astype(np.float32)
            path = folder / f"{p}_{c}.h5"
            if not path.exists():
                write_singlecoil_h5(path, k.astype(np.complex64), ref, owner="realdata_kspace")
            cases.append({"name": f"{p}_{c}", "path": path, "reference": ref})
    if not cases:
        raise SystemExit(f"error: {realdata_dir}: no 0.055T_<contrast>_kspace.npy files found")
    return cases


def run_flat(inputs: Path, out: Path, acceleration: int, pattern: str, extra: list[str]) -> str:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
           str(REPO / "bundles" / "flat" / "configs" / "inference.json"), "--input_kind", "kspace_hdf5",
           "--input_path", str(inputs), "--output_dir", str(out), "--acceleration", str(acceleration),
           "--center_fraction", "0.08", "--mask_pattern", pattern, "--save_trajectory", "true", "--device", "cpu",
           *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO / "bundles" / "flat")
    said = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip().startswith(("[flat]", "error:"))]
    return said[-1] if said else f"exit {proc.returncode}"


def scores(pred: np.ndarray, ref: np.ndarray) -> dict:
    """PSNR / SSIM inside the head and over the whole slice ``(H, W)``, each image on its own head percentiles."""
    from shared_transforms.metrics import psnr
    from shared_transforms.metrics.structural import ssim
    from shared_transforms.metrics.registration import head_mask_2d

    head = head_mask_2d(ref)
    p, r = normalise(pred, head), normalise(ref, head)
    return {"psnr_head": psnr(p, r, head), "ssim_head": ssim(p, r, head), "psnr": psnr(p, r), "ssim": ssim(p, r)}


def main(out_dir: str = "eval/realdata_kspace", realdata_dir: str = str(DEFAULT_DIR)) -> None:
    """Run the study (see the module docstring) and print the table."""
    from shared_transforms.io.files import write_text_atomic

    out = Path(out_dir).resolve()
    inputs = out / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    cases = write_inputs(Path(realdata_dir), inputs)
    rows = []
    for acceleration, pattern in SETTINGS:
        for model, extra in MODELS.items():
            folder = out / f"{model}_{acceleration}x_{pattern}"
            print(f"[realdata_kspace] {model} {acceleration}x {pattern}: "
                  f"{run_flat(inputs, folder, acceleration, pattern, extra)}", flush=True)
            for case in cases:
                traj = folder / f"{case['name']}_flat_trajectory.nii.gz"
                if not traj.exists():
                    continue
                vol = np.asarray(nib.load(str(traj)).get_fdata(), np.float64)  # (X, Y, S, N + 1)
                methods = {model: vol[..., -1]}
                if model == "flat":
                    methods["zero-filled"] = vol[..., 0]
                for method, recon in methods.items():
                    for s in range(case["reference"].shape[0]):
                        ref = case["reference"][s]
                        pred = recon[..., s]
                        if pred.shape != ref.shape:
                            raise SystemExit(f"error: {traj}: slice shape {pred.shape} is not the reference's "
                                             f"{ref.shape}")
                        rows.append({"method": method, "acceleration": acceleration, "mask": pattern,
                                     "case": case["name"], "slice": s, **scores(pred, ref)})
    if not rows:
        raise SystemExit("error: no reconstruction was scored (see the lines above)")
    write_rows_csv(rows, out / "kspace.csv")
    head = "| method | " + " | ".join(f"{a}x {m}" for a, m in SETTINGS) + " |"
    lines = [head, "| --- " * (len(SETTINGS) + 1) + "|"]
    for method in ("zero-filled", "unrolled", "flat"):
        cells = []
        for a, m in SETTINGS:
            sel = [r for r in rows if r["method"] == method and r["acceleration"] == a and r["mask"] == m]
            cells.append(f"{np.mean([r['psnr_head'] for r in sel]):.2f} / {np.mean([r['ssim_head'] for r in sel]):.4f}"
                         f" ({np.mean([r['psnr'] for r in sel]):.2f} / {np.mean([r['ssim'] for r in sel]):.4f})"
                         if sel else "–")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    write_text_atomic(out / "kspace.md", table + "\n")
    print(table)


if __name__ == "__main__":
    fire.Fire(main)
