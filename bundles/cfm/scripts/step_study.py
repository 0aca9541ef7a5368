"""Step study: quality and time of the CFM sampler per number of steps and solver, and the CPU/GPU speed report.

    cd bundles/cfm && python -m scripts.step_study --datalist ../../demo_data/datalist.json \\
        --out_dir ../../outputs/cfm/step_study

``--precision`` as the bundle's ("auto": bfloat16 where native, else float32); ``--steps 1,2,4 --solvers euler``
for a subset; ``--slice_stride`` for fewer slices; ``--ckpt_path`` for other weights (default: models/model.pt).

Quality: every ``slice_stride``-th sagittal slice inside the brain of each test subject (the same slices, the same
source samples for every setting), PSNR and SSIM inside the mask per slice (``shared_transforms.metrics``, 2D),
averaged over slices and subjects, for ``steps`` x ``solvers``. Time: one whole test volume per step count with the
bundle's inferer (empty slices skipped, cropped to the head), so seconds per volume are measured, not extrapolated.
Speed: the network's FLOPs per slice per step (``count_flops``), the achieved GFLOP/s of those volume runs, and a
float32 matrix product timed in the same process for reference; peak resident memory.
Writes ``step_study.csv``, ``step_study.md`` (the tables) and prints them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import fire
import numpy as np
import torch
from monai.transforms import Compose
from tqdm.auto import tqdm

from shared_transforms.engine import loader
from shared_transforms.inference.inferers import autocast, resolve_precision
from shared_transforms.inference.ode import evaluations, solve
from shared_transforms.io.datalist import pair_items
from shared_transforms.io.files import write_text_atomic
from shared_transforms.metrics import psnr, ssim
from shared_transforms.transforms.pipelines import pair_transforms

from .flow import ConditionalVelocity, from_model_range, sample_source, to_model_range
from .inferer import FlowMatchingInferer
from .network import count_flops

ROOT = Path(__file__).resolve().parents[1]


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """Achieved GFLOP/s of an n x n matrix product in ``dtype`` on ``device`` (the reference rate)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def study_slices(image, label, mask, stride: int):
    """Every ``stride``-th sagittal slice with brain in it, cropped to the volume's head box, padded to /8."""
    from shared_transforms.inference.inferers import foreground_box

    present = torch.nonzero(mask[0].flatten(1).any(1)).flatten()
    idx = present[stride // 2 :: stride]
    y0, y1, z0, z1 = foreground_box((image[0] > 1e-3).any(0), 8, 8)
    crop = lambda v: v[0, idx, y0:y1, z0:z1][:, None]  # noqa: E731
    x, y, m = crop(image), crop(label), crop(mask)
    ph, pw = (y1 - y0) - x.shape[-2], (z1 - z0) - x.shape[-1]
    if ph or pw:
        pad = lambda v: torch.nn.functional.pad(v, (0, pw, 0, ph))  # noqa: E731
        x, y, m = pad(x), pad(y), pad(m)
    return x, y, m


def main(
    datalist: str,
    out_dir: str = "outputs/cfm/step_study",
    ckpt_path: str | None = None,
    steps: str | tuple = (1, 2, 4, 8, 16),
    solvers: str | tuple = ("euler", "midpoint", "heun"),
    split: str = "testing",
    slice_stride: int = 4,
    batch: int = 8,
    time_volumes: int = 1,
    precision: str = "auto",
    device: str | None = None,
    seed: int = 0,
):
    """Run the study; see the module docstring. ``steps`` / ``solvers`` accept comma-separated strings."""
    steps = [int(s) for s in (steps.split(",") if isinstance(steps, str) else steps)]
    solvers = list(solvers.split(",") if isinstance(solvers, str) else solvers)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    os.makedirs(out_dir, exist_ok=True)
    parser = loader.bundle_parser(ROOT, device="cpu")  # the network as inference.json defines it (its widths)
    net = loader.build_network(parser, loader.bundle_weights(parser, ckpt_path, "--ckpt_path"), "network_def")
    net = net.to(dev).to(memory_format=torch.channels_last)
    prep = Compose(pair_transforms())
    items = pair_items(datalist, split)
    data = [prep(it) for it in tqdm(items, desc="loading test pairs", unit="subject")]
    # quality on sub-sampled slices
    rows = []
    settings = [(n, s) for s in solvers for n in steps]
    with torch.inference_mode():
        for d in data:
            x, y, m = study_slices(d["image"], d["label"], d["mask"], slice_stride)
            x_low = to_model_range(x.to(dev)).contiguous(memory_format=torch.channels_last)
            gen = torch.Generator(device=dev).manual_seed(seed)
            x0_all = sample_source(x_low, "uniform", gen)  # one source sample per slice, shared by every setting
            for n, solver in tqdm(settings, desc=f"{d['subject']}: settings", unit="setting", leave=False):
                outs = []
                for b in range(0, x_low.shape[0], batch):
                    v = ConditionalVelocity(net, x_low[b : b + batch])
                    with autocast(dev, precision):
                        outs.append(from_model_range(solve(v, x0_all[b : b + batch], n, solver)).float().clamp(0, 1))
                pred = torch.cat(outs).cpu()
                ps = [psnr(pred[i, 0].numpy(), y[i, 0].numpy(), m[i, 0].numpy() > 0) for i in range(len(pred))]
                ss = [ssim(pred[i, 0].numpy(), y[i, 0].numpy(), m[i, 0].numpy() > 0) for i in range(len(pred))]
                rows.append(
                    {
                        "subject": d["subject"],
                        "solver": solver,
                        "steps": n,
                        "evaluations": evaluations(solver, n),
                        "psnr_mask": float(np.mean(ps)),
                        "ssim_mask": float(np.mean(ss)),
                        "slices": len(ps),
                    }
                )
    # time whole volumes with the bundle's inferer (Euler: time is linear in evaluations for the other solvers)
    flops = count_flops(net, 192, 168)
    timing = []
    for d in data[:time_volumes]:
        for n in steps:
            inferer = FlowMatchingInferer(
                num_steps=n, solver="euler", seed=seed, slice_batch_size=batch, precision=precision
            )
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            inferer(d["image"][None].to(dev), net)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            sec = time.perf_counter() - t0
            st = inferer.last_stats
            h, w = st["box_hw"]
            vol_flops = count_flops(net, h, w) * st["network_evaluations"]
            timing.append(
                {
                    "subject": d["subject"],
                    "steps": n,
                    "seconds": sec,
                    "slices": st["computed_units"],
                    "box": f"{h}x{w}",
                    "gflop": vol_flops / 1e9,
                    "gflops_per_s": vol_flops / sec / 1e9,
                }
            )
    ref = matmul_gflops(dev)
    ref_bf16 = matmul_gflops(dev, dtype=torch.bfloat16) if resolve_precision(dev, precision) == "bfloat16" else None
    precision = resolve_precision(dev, precision)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_report(rows, timing, out_dir, flops, ref, peak_mb, dev, precision, slice_stride, " ".join(sys.argv), ref_bf16)


def write_report(rows, timing, out_dir, flops, ref, peak_mb, dev, precision, stride, command, ref_bf16=None):
    """CSV of every row, a Markdown summary (mean over subjects) and the speed table."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(os.path.join(out_dir, "step_study.csv"), buf.getvalue(), newline="")
    timing_report = {
        "timing": timing,
        "matmul_gflops": ref,
        "matmul_gflops_bfloat16": ref_bf16,
        "flops_per_slice_192x168": flops,
        "peak_rss_mb": peak_mb,
    }
    write_text_atomic(os.path.join(out_dir, "timing.json"), json.dumps(timing_report, indent=2))
    per_nfe = {t["steps"]: t["seconds"] / t["steps"] for t in timing}
    lines = [
        f"Command: `{command}`",
        "",
        f"Device: {dev} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
        f"precision {precision}, torch {torch.__version__}; quality on every {stride}th brain slice of each test "
        "subject (PSNR/SSIM inside the mask, per 2D slice, mean over slices and subjects)",
        "",
        "| solver | steps | network evaluations | PSNR (dB) | SSIM | seconds / volume |",
        "|---|---|---|---|---|---|",
    ]
    solvers = list(dict.fromkeys(r["solver"] for r in rows))
    steps = list(dict.fromkeys(r["steps"] for r in rows))
    sec_per_eval = np.mean(list(per_nfe.values())) if per_nfe else float("nan")
    for s in solvers:
        for n in steps:
            sel = [r for r in rows if r["solver"] == s and r["steps"] == n]
            nfe = sel[0]["evaluations"]
            measured = [t["seconds"] for t in timing if t["steps"] == n and s == "euler"]
            sec = f"{np.mean(measured):.1f}" if measured else f"{nfe * sec_per_eval:.1f} (from s/evaluation)"
            lines.append(
                f"| {s} | {n} | {nfe} | {np.mean([r['psnr_mask'] for r in sel]):.2f} | "
                f"{np.mean([r['ssim_mask'] for r in sel]):.4f} | {sec} |"
            )
    lines += [
        "",
        f"Network: {flops / 1e9:.1f} GFLOP per 192x168 slice per step; float32 matrix product in this run: "
        f"{ref:.0f} GFLOP/s"
        + (f" (bfloat16: {ref_bf16:.0f} GFLOP/s)" if ref_bf16 else "")
        + f"; peak resident memory {peak_mb:.0f} MB.",
        "",
        "| steps | slices computed | crop | GFLOP / volume | seconds / volume | achieved GFLOP/s | of float32 matmul |"
        + (" of bfloat16 matmul |" if ref_bf16 else ""),
        "|---|---|---|---|---|---|---|" + ("---|" if ref_bf16 else ""),
    ]
    for t in timing:
        lines.append(
            f"| {t['steps']} | {t['slices']} | {t['box']} | {t['gflop']:.0f} | {t['seconds']:.1f} | "
            f"{t['gflops_per_s']:.0f} | {100 * t['gflops_per_s'] / ref:.0f}% |"
            + (f" {100 * t['gflops_per_s'] / ref_bf16:.0f}% |" if ref_bf16 else "")
        )
    text = "\n".join(lines) + "\n"
    write_text_atomic(os.path.join(out_dir, "step_study.md"), text)
    print(text)


if __name__ == "__main__":
    fire.Fire(main)
