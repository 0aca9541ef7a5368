"""The benchmark's reports: ``results.csv``, the Markdown table with its header (date, device, versions, command),
the figure, and the names of saved predictions."""

from __future__ import annotations

import csv
import datetime
import io
import platform

import numpy as np
import torch

from shared_transforms.io.files import safe_name, write_text_atomic
from shared_transforms.io.preview import save_figure_atomic


#: the Markdown table: (CSV column, header, number format); mean ± std over subjects unless the format is "const".
TABLE_COLUMNS = (
    ("psnr_mask", "PSNR (mask, dB)", ".2f"),
    ("ssim_mask", "SSIM (mask)", ".4f"),
    ("msssim_mask", "MS-SSIM (mask)", ".4f"),
    ("mae_mask", "MAE (mask)", ".4f"),
    ("nmse_mask", "NMSE (mask)", ".4f"),
    ("psnr", "PSNR (whole, dB)", ".2f"),
    ("ssim", "SSIM (whole)", ".4f"),
    ("ulf_enc", "ULF-EnC", ".4f"),
    ("tissue_miou", "tissue mIoU", ".4f"),
    ("air_mean", "air (mean)", ".4f"),
    ("lpips", "LPIPS", ".4f"),
    ("parameters", "parameters", "const"),
    ("evaluations_per_unit", "NFE", "unit"),
    ("evaluations_per_volume", "NFE / volume", ".0f"),
    ("gflop_per_evaluation", "GFLOP / NFE", ".3g"),
    ("gflop_per_volume", "GFLOP / volume", ".4g"),
    ("striping_index", "striping index", ".3f"),
    ("seconds_per_volume", "s / volume", "warm"),
    ("seconds_per_volume", "s, first volume", "first"),  # the same column, its first row alone
    ("seconds_with_model_load", "s / volume + load", "warm"),
    ("peak_memory_mb", "peak memory (MB)", "const"),
)


def write_csv(rows: list[dict], path: str) -> str:
    """All rows, the union of their keys as columns (first-seen order), written atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue(), newline="")
    return path


def _cell(values: list, fmt: str) -> str:
    """``mean ± std`` of numbers (population std), one value for a constant column, ``n/a`` when not finite."""
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not nums or len(nums) != len(values):
        return "n/a"
    arr = np.asarray(nums)
    if fmt == "const":
        value = arr.max()  # per-bundle values (parameters, memory): identical on every row
        return f"{value:,.0f}" if float(value).is_integer() or value >= 100 else f"{value:.1f}"
    if fmt == "first":  # the first volume's time (warm-up included) alone
        return f"{arr[0]:.3g}"
    if fmt == "warm":  # wall times: the volumes after the first (its warm-up is reported apart), mean ± std (min-max)
        warm = arr[1:] if arr.size > 1 else arr
        return f"{warm.mean():.3g} ± {warm.std():.2g} ({warm.min():.3g}-{warm.max():.3g}, n={warm.size})"
    if not np.all(np.isfinite(arr)):
        return "n/a"
    return f"{arr.mean():{fmt}} ± {arr.std():{fmt}}"


def _lpips_cell(rows: list[dict]) -> str:
    """The mean LPIPS when every row has one, else the reason ``evaluate_volume`` gave (never a made-up number)."""
    bad = [r.get("lpips_status", "") for r in rows if r.get("lpips_status") != "ok"]
    return bad[0] if bad else _cell([r["lpips"] for r in rows], ".4f")


def markdown_table(rows: list[dict], methods: list[str]) -> str:
    """One Markdown row per method (mean ± std over its subjects) with the columns of :data:`TABLE_COLUMNS`."""
    lines = ["| method | subjects | " + " | ".join(h for _, h, _ in TABLE_COLUMNS) + " |",
             "| --- " * (len(TABLE_COLUMNS) + 2) + "|"]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        cells = [_lpips_cell(mine) if key == "lpips"
                 else f"{mine[0][key]} / {mine[0]['unit']}" if fmt == "unit"  # per bundle: the same on every row
                 else _cell([r.get(key) for r in mine], fmt)
                 for key, _, fmt in TABLE_COLUMNS]
        lines.append(f"| {method} | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def device_name(device: torch.device) -> str:
    """The device in words: the GPU's name, or the CPU's model and torch's thread count."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"cpu ({model}, {torch.get_num_threads()} threads)"


def report_header(device: torch.device, datalist: str, split: str, n_subjects: int, command: str,
                  rates: dict[str, float] | None = None) -> str:
    """The lines above the table: what was run, where, with what; ``rates``: the machine's matrix-product speed
    (:func:`benchmarking.measure.reference_rates`), so that seconds can be compared across machines."""
    import monai

    subjects = f"{n_subjects} subject" + ("" if n_subjects == 1 else "s")
    speed = ""
    if rates:
        speed = " Matrix product 2048 x 2048 here: " + ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in rates.items())
        speed += "."

    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return "\n".join([
        f"# Benchmark ({now})",
        "",
        f"Device {device_name(device)}; torch {torch.__version__}, monai {monai.__version__}, "
        f"python {platform.python_version()}.{speed} Datalist `{datalist}`, split `{split}` ({subjects}).",
        "",
        f"Command: `{command}`",
        "",
        "Mean ± std (population) over subjects; (mask) = inside the brain mask, (whole) = whole volume "
        "(shared_transforms.metrics.evaluate_volume); NFE = network evaluations; GFLOP = the network's matrix products, "
        "convolutions and attention (torch's FlopCounterMode, 2 per multiply-add; element-wise operations not counted); "
        "seconds = the inferer call only (data loading and scoring excluded), + load = plus the network build and "
        "weight load; peak memory = what the bundle's load keeps + its largest rise during one volume's inference "
        "(CPU: sampled RSS, CUDA: max allocated).",
    ])


def save_figure(panels: list[dict], methods: list[str], path: str, error_max: float = 0.3) -> str:
    """Rows = subjects, columns = low field, each method, high field, then each method's absolute error.

    ``panels``: ``[{"subject", "image", "label", "preds": {method: (Y, Z)}}]`` mid-sagittal slices (RAS ``V[x]``,
    shown anterior right, superior up). Grey scale [0, 1] shared; errors on [0, ``error_max``] with a colour bar.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = 2 + 2 * len(methods)
    aspect = panels[0]["label"].shape[1] / panels[0]["label"].shape[0]  # shown (Z rows, Y columns)
    fig, axes = plt.subplots(len(panels), ncols, figsize=(1.9 * ncols + 0.8, (1.9 * aspect + 0.2) * len(panels) + 0.3),
                             squeeze=False, layout="constrained")
    err_im = None
    for r, p in enumerate(panels):
        images = [("low field (aligned)", p["image"]), *[(m, p["preds"][m]) for m in methods],
                  ("high field", p["label"])]
        for c, (title, img) in enumerate(images):
            axes[r, c].imshow(img.T, cmap="gray", origin="lower", vmin=0.0, vmax=1.0)
            if r == 0:
                axes[r, c].set_title(title, fontsize=8)
        for k, m in enumerate(methods):
            err_im = axes[r, len(images) + k].imshow(np.abs(p["preds"][m] - p["label"]).T, cmap="inferno",
                                                     origin="lower", vmin=0.0, vmax=error_max)
            if r == 0:
                axes[r, len(images) + k].set_title(f"|{m} - high field|", fontsize=8)
        axes[r, 0].set_ylabel(p["subject"], fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    if err_im is not None:
        fig.colorbar(err_im, ax=list(axes[:, -len(methods):].flat), shrink=0.8, label="absolute error")
    return save_figure_atomic(fig, path, "benchmark", dpi=100)


def prediction_stem(subject: str, index: int) -> str:
    """A saved prediction's name stem: the subject id made safe for a file name, or ``item-<index>`` for an id with
    no usable character (``..``)."""
    try:
        return safe_name(subject)
    except ValueError:
        return f"item-{index:03d}"
