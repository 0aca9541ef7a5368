#!/usr/bin/env python
"""Compare bundles side by side on one split of a datalist: image quality, speed and cost, in one process.

    python tools/benchmark.py --bundles interpolation,unet,cfm --datalist demo_data/datalist.json
    python tools/benchmark.py --bundles unet,cfm --datalist D/datalist.json --split testing --out_dir bench \\
        --device cuda --overrides '{"cfm": {"num_steps": 8, "solver": "heun"}}' --weights '{"unet": "path/model.pt"}' \\
        --max_subjects 10 --save_predictions true --lpips_net alex

Every bundle is built from its own ``configs/inference.json`` by MONAI's ``ConfigParser`` (after
:func:`shared_transforms.engine.bundle.activate_bundle`, since every bundle's code package is called ``scripts``), with
``--overrides`` applied to its config ids (e.g. ``num_steps``), its ``network_def`` built and its weights loaded
(``ckpt_path`` of the config, or ``--weights``; a bundle without a ``ckpt_path`` id, e.g. ``interpolation``, has none),
then its ``inferer`` runs ``inferer(image, network)`` on every item of the split. All bundles see the same input: the
pair aligned once per subject by :func:`shared_transforms.transforms.pipelines.pair_transforms` (low field onto the
high-field grid, both normalised to [0, 1]) and kept in memory (about 50 MB per 1 mm subject: use ``--max_subjects`` for
large splits). Each prediction (the mean when a sampler returns mean and std,
:mod:`shared_transforms.inference.uncertainty`), clamped to [0, 1], is scored with
:func:`shared_transforms.metrics.evaluate_volume`.

Writes to ``--out_dir``:

- ``results.csv``: one row per (method, subject): every key of ``evaluate_volume``, the striping index
  (:func:`shared_transforms.metrics.striping_index` across ``striping_axis``: the axis the bundle sliced along, or
  for a 3D bundle the one the 2D bundles slice along, against ``striping_within_axis``, the slice's axis that is
  not the acquisition's thick one; 1 = as consistent across slices as the high field), plus
  ``seconds_per_volume`` (the inferer call only, CUDA synchronised; the table gives the first volume's time apart,
  warm-up included, and the mean ± std, min-max of the others), ``seconds_with_model_load`` (plus the bundle's
  network build and weight load), ``unit``, ``evaluations_per_unit`` / ``evaluations_per_volume`` (network evaluations,
  as the bundle's :class:`~shared_transforms.inference.inferers.VolumeInferer` declares them),
  ``gflop_per_evaluation`` / ``gflop_per_volume`` (the network's floating-point operations, counted by
  :func:`count_gflop_per_evaluation`), ``parameters`` and ``peak_memory_mb`` (what the bundle's load keeps plus its
  largest rise during one inference; see :class:`PeakMemory`).
- ``results.md``: one row per method, mean ± std over subjects (population std), with a header naming the date,
  device, versions, datalist, split and the command line; printed at the end.
- ``figure.png``: per subject (up to ``--max_figure_subjects``) the mid-sagittal slice of the aligned low field, each
  method and the high field on one grey scale [0, 1], then each method's absolute error on [0, ``--error_max``].
- ``predictions/<subject>_<method>.nii.gz`` with ``--save_predictions true`` (on the high-field grid, its affine).

What is MONAI's / a library's: the config parsing and instantiation (``ConfigParser``), the transforms and the
inferers (the bundles'), the metrics (``evaluate_volume``), the weight loading and its errors (``load_weights``),
NIfTI writing (``write_nifti_atomic``), the figure (matplotlib), the FLOP count (torch's ``FlopCounterMode``, through
``shared_transforms.engine.flops``). Written here: the loop, the timing, the peak-memory sampler (psutil is not a
dependency; it reads the same ``/proc/self/status`` on Linux) and the table.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import datetime
import gc
import inspect
import io
import json
import os
import platform
import shlex
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fire
import numpy as np
import torch
from tqdm.auto import tqdm

from shared_transforms.engine.bundle import REPO_ROOT, activate_bundle
from shared_transforms.engine.flops import flop_counter
from shared_transforms.engine.loader import build_network, bundle_parser, bundle_weights
from shared_transforms.errors import InputError
from shared_transforms.inference.inferers import VolumeInferer, acquisition_plan
from shared_transforms.inference.uncertainty import split_mean_std
from shared_transforms.io.datalist import pair_items
from shared_transforms.io.files import safe_name, write_text_atomic
from shared_transforms.io.preview import save_figure_atomic
from shared_transforms.io.volumes import NORMALISED_NOTE, as_bool, write_nifti_atomic
from shared_transforms.metrics import LPIPS_BACKBONE_FILES, evaluate_volume, striping_index
from shared_transforms.transforms.pipelines import pair_transforms

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

#: the CLI's own command (used in the report when ``main`` is called from Python).
SCRIPT = "tools/benchmark.py"
_CLI_ARGV: list[str] | None = None


# ---------------------------------------------------------------------------------------------------------------------
# timing and memory


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work (timings and memory peaks are otherwise those of the launch, not the work)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_bytes() -> int:
    """Resident set size of this process in bytes, from ``/proc/self/status`` (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # the value is in kB
    except OSError:
        pass
    return 0


def release_free_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the OS (glibc ``malloc_trim``), so that memory kept
    by earlier work (e.g. scoring) does not hide in, or inflate, the next RSS measurement."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS is then a rougher measure
        pass


class PeakMemory:
    """A bundle's peak memory: what its load keeps plus the largest rise during one inference, in MiB.

    Each ``with meter.window():`` measures the rise of the peak above the level at its start: CUDA
    ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors, not the caching allocator's
    reserve); CPU the process RSS sampled every ``interval_s`` by a background thread (torch releases the GIL in its
    kernels, so it samples during them). The load window (``load=True``) also records what stays allocated after it.
    Result: ``max(load rise, load kept + largest inference rise)``.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.02):
        self.device, self.interval_s = device, interval_s
        self.cuda = device.type == "cuda"
        self.load_rise = self.load_kept = self.inference_rise = 0
        self._peak = 0

    def _level(self) -> int:
        synchronize(self.device)
        if self.cuda:
            return torch.cuda.memory_allocated(self.device)
        release_free_memory()
        return rss_bytes()

    def _sample(self, stop: threading.Event) -> None:
        while True:
            self._peak = max(self._peak, rss_bytes())
            if stop.wait(self.interval_s):
                return

    @contextlib.contextmanager
    def window(self, load: bool = False):
        """Measure the block's peak rise (``load``: the network build and weight load)."""
        start = self._level()
        self._peak = start
        stop, thread = threading.Event(), None
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            thread = threading.Thread(target=self._sample, args=(stop,), daemon=True)
            thread.start()
        try:
            yield self
        finally:
            synchronize(self.device)
            if self.cuda:
                self._peak = max(self._peak, torch.cuda.max_memory_allocated(self.device))
            else:
                stop.set()
                thread.join()
                self._peak = max(self._peak, rss_bytes())
            rise = self._peak - start
            if load:
                self.load_rise, self.load_kept = rise, max(0, self._level() - start)
            else:
                self.inference_rise = max(self.inference_rise, rise)

    @property
    def megabytes(self) -> float:
        """The bundle's peak above the level before its load, in MiB."""
        return max(self.load_rise, self.load_kept + self.inference_rise) / 2**20


# ---------------------------------------------------------------------------------------------------------------------
# arguments


def available_bundles() -> dict[str, Path]:
    """``{name: folder}`` of every bundle in the checkout with a ``configs/inference.json``."""
    root = REPO_ROOT / "bundles"
    return {p.name: p for p in sorted(root.iterdir()) if (p / "configs" / "inference.json").is_file()}


def parse_bundles(value: Any) -> list[str]:
    """``"a,b"`` (or the tuple fire makes of it) -> ``["a", "b"]``; raises for a name that is not a bundle."""
    names = value.split(",") if isinstance(value, str) else list(value or [])
    names = [str(n).strip() for n in names if str(n).strip()]
    known = available_bundles()
    if not names:
        raise InputError("--bundles", f"no bundle given; available: {', '.join(known)}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError("--bundles", f"unknown bundle(s) {unknown}; available: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise InputError("--bundles", f"a bundle is named twice in {names}")
    return names


def parse_json_arg(value: Any, option: str, bundles: list[str]) -> dict[str, Any]:
    """A ``{"bundle": ...}`` option given as JSON text (or the dict fire already made of it); keys must be bundles
    of this run."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise InputError(option, f"is not valid JSON ({err}): {value!r}") from None
    if not isinstance(value, dict):
        raise InputError(option, f"must be a JSON object keyed by bundle name, got {value!r}")
    stray = [k for k in value if k not in bundles]
    if stray:
        raise InputError(option, f"names bundle(s) {stray} that are not in --bundles {bundles}")
    return value


def resolve_device(device: str | None) -> torch.device:
    """``--device``: "cpu", "cuda" (or "cuda:N"); None = CUDA when available."""
    if device is None or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(str(device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", f"is {device!r} but CUDA is not available here; use --device cpu")
    return dev


# ---------------------------------------------------------------------------------------------------------------------
# bundles


@dataclass
class Bundle:
    """One method ready to run: its parsed config, and after :func:`load_bundle` its network and inferer."""

    name: str
    root: Path
    parser: Any  # monai.bundle.ConfigParser
    weights: str | None
    network: torch.nn.Module | None = None
    inferer: Any = None
    load_seconds: float = 0.0
    parameters: int = 0
    evaluations_per_unit: int = 0
    unit: str = "volume"
    memory: PeakMemory | None = None


def configure_bundle(name: str, root: Path, overrides: dict, weights: str | None, device: torch.device) -> Bundle:
    """Parse ``<root>/configs/inference.json`` with ``overrides`` (config id -> value) and the device, and find the
    weights file (``weights``, else the config's ``ckpt_path``; None when the config has no ``ckpt_path``): the
    engine's :func:`~shared_transforms.engine.loader.bundle_parser` and
    :func:`~shared_transforms.engine.loader.bundle_weights`, which refuse an unknown config id and a missing weights
    file in one line (before anything runs)."""
    parser = bundle_parser(root, "inference.json", overrides, device)
    return Bundle(name=name, root=root, parser=parser, weights=bundle_weights(parser, weights))


def load_bundle(bundle: Bundle, device: torch.device) -> None:
    """Build ``network`` (``network_def`` moved to the device), load the weights, build ``inferer``; the network
    build and weight load are timed (``load_seconds``) and inside the bundle's memory meter."""
    activate_bundle(bundle.root)
    bundle.memory = PeakMemory(device)
    with bundle.memory.window(load=True):
        start = time.perf_counter()
        network = build_network(bundle.parser, bundle.weights, "network")
        synchronize(device)
        bundle.load_seconds = time.perf_counter() - start
    inferer = bundle.parser.get_parsed_content("inferer")
    bundle.network, bundle.inferer = network, inferer
    bundle.parameters = int(sum(p.numel() for p in network.parameters()))
    if isinstance(inferer, VolumeInferer):
        inferer.progress = False  # the benchmark shows its own bar
        bundle.unit, bundle.evaluations_per_unit = inferer.unit, int(inferer.evaluations_per_unit())
    else:  # a plain MONAI inferer: one network call per volume (none for a network without parameters)
        bundle.unit, bundle.evaluations_per_unit = "volume", 1 if bundle.parameters > 0 else 0


def count_gflop_per_evaluation(network: torch.nn.Module, call: tuple[tuple, dict] | None) -> float | None:
    """GFLOP of one network evaluation: ``network(*args, **kwargs)`` of ``call`` run again under torch's
    ``FlopCounterMode`` (:func:`shared_transforms.engine.flops.flop_counter`), divided by the batch size (the first
    dimension of its first tensor argument: slices, patches or volumes): matrix products, convolutions and attention (2
    FLOPs per multiply-add), not element-wise operations. None without a call (a bundle without a network)."""
    if call is None:
        return None
    args, kwargs = call
    batch = next((int(a.shape[0]) for a in args if torch.is_tensor(a) and a.ndim > 0), 1)
    with flop_counter() as counter, torch.inference_mode():
        network(*args, **kwargs)
    return counter.get_total_flops() / max(batch, 1) / 1e9


def predict(bundle: Bundle, image: torch.Tensor, device: torch.device) -> tuple[np.ndarray, float, int, float | None]:
    """Run the bundle on one ``(1, X, Y, Z)`` image: ``(pred (X, Y, Z) in [0, 1], seconds, network evaluations,
    GFLOP per evaluation)``.

    The seconds cover the inferer call only (input already on the device, CUDA synchronised); the memory window
    also covers the input's copy to the device. The evaluations are what a :class:`VolumeInferer` counted
    (``last_stats["network_evaluations"]``), else one call per volume. The GFLOP are counted after the timed call, on
    the arguments of the network's first call in it (:func:`count_gflop_per_evaluation`; None when the inferer never
    called the network).
    """
    metered = isinstance(bundle.inferer, VolumeInferer)
    if metered:
        bundle.inferer.reset_stats()
    first_call: dict[str, tuple] = {}

    def keep_first_call(module, args, kwargs):
        first_call.setdefault("call", (args, kwargs))

    hook = bundle.network.register_forward_pre_hook(keep_first_call, with_kwargs=True)
    try:
        with bundle.memory.window(), torch.inference_mode():
            x = image[None].to(device)
            synchronize(device)
            start = time.perf_counter()
            out = bundle.inferer(x, bundle.network)
            synchronize(device)
            seconds = time.perf_counter() - start
    finally:
        hook.remove()
    gflop = count_gflop_per_evaluation(bundle.network, first_call.get("call"))
    mean, _ = split_mean_std(torch.as_tensor(out)[0])  # a sampler's (mean, std): score the mean
    pred = mean[0].float().clamp(0.0, 1.0).cpu().numpy()
    evaluations = bundle.inferer.last_stats["network_evaluations"] if metered else bundle.evaluations_per_unit
    return pred, seconds, int(evaluations), gflop


def striping_axes(bundle: Bundle, image: torch.Tensor) -> tuple[int, int]:
    """``(across, within)`` for the striping index: the axis a slice-wise inferer sliced along in its last call,
    else (3D bundles) the one the 2D bundles' ``"auto"`` slicing takes for this image (:func:`acquisition_plan`), so
    that every row of a table looks across the same axis; and the slice's axis that is not the acquisition's thick
    one (the plan puts the thick axis along the slice's width, or its height when it transposes)."""
    stats = getattr(bundle.inferer, "last_stats", None) or {}
    if "spatial_dim" in stats:
        across, transposed = int(stats["spatial_dim"]), bool(stats.get("transposed", False))
    else:
        across, transposed = acquisition_plan(image[None], 0)
    height, width = (a for a in range(3) if a != across)
    return across, (width if transposed else height)


# ---------------------------------------------------------------------------------------------------------------------
# outputs


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


def report_header(device: torch.device, datalist: str, split: str, n_subjects: int, command: str) -> str:
    """The lines above the table: what was run, where, with what."""
    import monai

    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return "\n".join([
        f"# Benchmark ({now})",
        "",
        f"Device {device_name(device)}; torch {torch.__version__}, monai {monai.__version__}, "
        f"python {platform.python_version()}. Datalist `{datalist}`, split `{split}` ({n_subjects} subjects).",
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


def command_line(arguments: dict[str, Any]) -> str:
    """The command that produced the run: ``sys.argv`` when run as a script, else the call's non-default arguments
    written as the equivalent command."""
    if _CLI_ARGV is not None:
        return "python " + shlex.join(_CLI_ARGV)
    defaults = {k: p.default for k, p in inspect.signature(main).parameters.items()}
    parts = ["python", SCRIPT]
    for key, value in arguments.items():
        if key in defaults and value == defaults[key] and key not in ("bundles", "datalist"):
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        elif isinstance(value, dict):
            value = json.dumps(value)
        parts += [f"--{key}", shlex.quote(str(value))]
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------------------------------
# the run


def align_pairs(items: list[dict], target_spacing) -> list[dict]:
    """Each item through ``Compose(pair_transforms(target_spacing))``, kept as tensors/arrays:
    ``{"subject", "image" (1, X, Y, Z), "label" (X, Y, Z), "mask" (X, Y, Z) bool, "affine" 4x4, "files"}``.

    The image stays a MetaTensor with only its affine and ``original_affine`` (the low field as acquired), so that
    an inferer that slices along the acquisition (``spatial_dim: "auto"``) sees what the bundle's own inference sees.
    """
    from monai.data import MetaTensor
    from monai.transforms import Compose

    align = Compose(pair_transforms(target_spacing))
    out = []
    for item in tqdm(items, desc="aligning pairs", unit="subject", leave=False):
        d = align(dict(item))
        out.append({
            "subject": str(item["subject"]),
            "image": MetaTensor(d["image"].as_tensor().contiguous(), affine=d["image"].affine,
                                meta={"original_affine": d["image"].meta["original_affine"]}),
            "label": d["label"][0].numpy().astype(np.float32),
            "mask": d["mask"][0].numpy() > 0.5,
            "affine": np.asarray(d["label"].affine, dtype=np.float64),
            "files": [item[k] for k in ("image", "label", "mask") if item.get(k)],
        })
    return out


def common_spacing(bundles: list[Bundle]) -> list[float]:
    """The ``target_spacing`` all bundles share (the evaluation grid); raises when they differ."""
    spacings = {b.name: [float(s) for s in b.parser.get_parsed_content("target_spacing")] for b in bundles}
    first = next(iter(spacings.values()))
    if any(not np.allclose(s, first) for s in spacings.values()):
        raise InputError("--overrides", f"the bundles have different target_spacing {spacings}; give them one "
                         "(e.g. --overrides '{\"unet\": {\"target_spacing\": [1, 1, 1]}}')")
    return first


def common_input_kind(bundles: list[Bundle]) -> str:
    """The input kind all bundles declare (``input_kind`` in their inference.json); raises when they differ, since
    one datalist then cannot feed them all (the pairing follows the declaration)."""
    kinds = {b.name: str(b.parser.get_parsed_content("input_kind")) for b in bundles}
    first = next(iter(kinds.values()))
    if any(k != first for k in kinds.values()):
        raise InputError("--bundles", f"the bundles take different input kinds {kinds}; benchmark them separately")
    if first != "lowfield_nifti":
        raise InputError("--bundles", f"the benchmark pairs low/high NIfTI volumes; input kind {first!r} has its own "
                         "evaluation (see the bundle's docs)")
    return first


def prediction_stem(subject: str, index: int) -> str:
    """A saved prediction's name stem: the subject id made safe for a file name, or ``item-<index>`` for an id with
    no usable character (``..``)."""
    try:
        return safe_name(subject)
    except ValueError:
        return f"item-{index:03d}"


def benchmark(
    bundles: list[str],
    datalist: str,
    split: str = "testing",
    out_dir: str = "bench",
    device: str | None = None,
    overrides: dict | None = None,
    weights: dict | None = None,
    max_subjects: int | None = None,
    save_predictions: bool = False,
    lpips_net: str | None = "alex",
    max_figure_subjects: int = 3,
    error_max: float = 0.3,
    command: str = "",
) -> dict[str, Any]:
    """Run every bundle on every item of ``split`` and write the outputs (see the module docstring).

    Returns ``{"rows": [...], "csv": path, "markdown": path, "figure": path, "table": text}``.
    """
    dev = resolve_device(device)
    known = available_bundles()
    prepared = [configure_bundle(n, known[n], (overrides or {}).get(n, {}), (weights or {}).get(n), dev)
                for n in bundles]
    items = pair_items(datalist, split, common_input_kind(prepared))
    if max_subjects is not None:
        items = items[: max(1, int(max_subjects))]
    subjects = align_pairs(items, common_spacing(prepared))
    os.makedirs(out_dir, exist_ok=True)
    rows: list[dict] = []
    panels = [{"subject": s["subject"], "image": s["image"][0, s["image"].shape[1] // 2].numpy(),
               "label": s["label"][s["label"].shape[0] // 2], "preds": {}} for s in subjects[:max_figure_subjects]]
    progress = tqdm(total=len(prepared) * len(subjects), desc="benchmark", unit="volume")
    for bundle in prepared:
        progress.set_postfix_str(f"{bundle.name}: loading")
        load_bundle(bundle, dev)
        mine = []
        for i, s in enumerate(subjects):
            progress.set_postfix_str(f"{bundle.name}: {s['subject']}")
            pred, seconds, evaluations, gflop = predict(bundle, s["image"], dev)
            scores = evaluate_volume(pred, s["label"], s["mask"], lpips_net=lpips_net)
            across, within = striping_axes(bundle, s["image"])
            scores.update(striping_axis=across, striping_within_axis=within,
                          striping_index=striping_index(pred, s["label"], across, s["mask"], within))
            mine.append({
                "method": bundle.name, "subject": s["subject"], "device": str(dev),
                "seconds_per_volume": seconds,
                "seconds_with_model_load": seconds + bundle.load_seconds,
                "model_load_seconds": bundle.load_seconds, "unit": bundle.unit,
                "evaluations_per_unit": bundle.evaluations_per_unit,
                "evaluations_per_volume": evaluations, "parameters": bundle.parameters,
                "gflop_per_evaluation": gflop, "gflop_per_volume": None if gflop is None else gflop * evaluations,
                **scores,
            })
            if i < len(panels):
                panels[i]["preds"][bundle.name] = pred[pred.shape[0] // 2]
            if save_predictions:
                path = os.path.join(out_dir, "predictions", f"{prediction_stem(s['subject'], i)}_{bundle.name}.nii.gz")
                write_nifti_atomic(pred, s["affine"], path, "benchmark", f"{bundle.name} {NORMALISED_NOTE}",
                                   inputs=s["files"])
            progress.update(1)
        for row in mine:
            row["peak_memory_mb"] = round(bundle.memory.megabytes, 1)
        rows += mine
        bundle.network = bundle.inferer = bundle.parser = None  # free the model (the parser holds it too)
    progress.close()

    csv_path = write_csv(rows, os.path.join(out_dir, "results.csv"))
    table = markdown_table(rows, bundles)
    md_path = os.path.join(out_dir, "results.md")
    write_text_atomic(md_path, report_header(dev, datalist, split, len(subjects), command) + "\n\n" + table + "\n")
    figure = save_figure(panels, bundles, os.path.join(out_dir, "figure.png"), error_max) if panels else None
    return {"rows": rows, "csv": csv_path, "markdown": md_path, "figure": figure, "table": table}


def main(
    bundles: str = "interpolation,unet,cfm",
    datalist: str = "demo_data/datalist.json",
    split: str = "testing",
    out_dir: str = "bench",
    device: str | None = None,
    overrides: str | dict | None = None,
    weights: str | dict | None = None,
    max_subjects: int | None = None,
    save_predictions: bool | str = False,
    lpips_net: str | None = "alex",
    max_figure_subjects: int = 3,
    error_max: float = 0.3,
    stress: bool | str = False,
    stress_conditions: str | None = None,
) -> None:
    """Benchmark bundles on one datalist split and write results.csv, results.md and figure.png to ``out_dir``.

    Args:
        bundles: comma-separated bundle names (folders of ``bundles/``).
        datalist: the project's datalist JSON; split: which of its splits.
        device: "cpu" or "cuda" (default: CUDA when available).
        overrides: JSON ``{"bundle": {"config id": value}}``, e.g. ``{"cfm": {"num_steps": 8, "solver": "heun"}}``.
        weights: JSON ``{"bundle": "path/model.pt"}`` instead of the config's ``ckpt_path``.
        max_subjects: only the first N items of the split.
        save_predictions: also write each prediction as NIfTI under ``out_dir/predictions``.
        lpips_net: LPIPS backbone ("alex", "vgg", "squeeze"; "none" to skip); computed only when its ImageNet weights
            are in the torch hub cache, else the table says why.
        max_figure_subjects: rows of figure.png; error_max: top of the error maps' colour scale.
        stress: instead, the stress test (``tools/stress.py``): the split's high fields degraded one factor at a time
            (``stress_conditions``: comma-separated names of ``stress.CONDITIONS``, default all), every bundle on each
            condition, one table in ``out_dir/stress.md`` (rows bundles, columns conditions, PSNR / SSIM in the mask).
    """
    arguments = dict(locals())
    names = parse_bundles(bundles)
    if isinstance(lpips_net, str) and lpips_net.strip().lower() in ("", "none"):
        lpips_net = None
    if lpips_net is not None and lpips_net not in LPIPS_BACKBONE_FILES:
        raise InputError("--lpips_net", f"is {lpips_net!r}; use one of {sorted(LPIPS_BACKBONE_FILES)} or none")
    common = dict(
        device=device,
        overrides=parse_json_arg(overrides, "--overrides", names),
        weights=parse_json_arg(weights, "--weights", names),
        save_predictions=as_bool(save_predictions),
        lpips_net=lpips_net,
        max_figure_subjects=int(max_figure_subjects),
        error_max=float(error_max),
    )
    max_subjects = None if max_subjects in (None, "") else int(max_subjects)
    if as_bool(stress):
        import stress as stress_test  # tools/stress.py, beside this file

        result = stress_test.run_stress(benchmark, names, str(datalist), split, str(out_dir),
                                        stress_test.parse_conditions(stress_conditions), max_subjects,
                                        command_line(arguments), **common)
        print(result["table"])
        print(f"wrote {result['csv']}, {result['markdown']}")
        return
    result = benchmark(names, str(datalist), split=split, out_dir=str(out_dir), max_subjects=max_subjects,
                       command=command_line(arguments), **common)
    print(result["table"])
    print(f"wrote {result['csv']}, {result['markdown']}" + (f", {result['figure']}" if result["figure"] else ""))


def run_command_line(main_function, prog: str, namespace: dict) -> None:
    """Run ``main_function`` under fire as the script ``prog`` (the benchmark's and the sweep's ``__main__``): the
    command line is kept in ``namespace["_CLI_ARGV"]`` for the reports' command, and bad input ends in one line
    (``prog: <file>: <problem>``) with exit status 1."""
    namespace["_CLI_ARGV"] = list(sys.argv)
    try:
        fire.Fire(main_function)
    except InputError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_command_line(main, "benchmark", globals())
