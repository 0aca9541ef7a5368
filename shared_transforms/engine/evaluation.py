"""Scoring a bundle inside its own evaluator: every volume through :func:`shared_transforms.metrics.evaluate_volume`.

MONAI's ``MetricsSaver`` writes what MONAI metric handlers computed; the project's standard set (masked and whole
PSNR/SSIM/MS-SSIM/MAE/NMSE, per-slice statistics, the ULF-EnC score, tissue overlap, LPIPS or its skip reason) is a
dictionary per volume, so this handler computes it on each decollated item and writes ``metrics.csv`` (one row per
volume) and ``metrics_summary.json`` (mean and std per metric) when the run completes. A bundle's paper
protocol (``bundles/<name>/scripts/protocol.py``, e.g. the CFM paper's per-slice evaluation) can be added to each
row, so a bundle's table can be compared with its paper. Both files are written atomically
(:func:`shared_transforms.io.files.write_text_atomic`): a crash never leaves a half-written table.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ..errors import InputError, source_name
from ..io.files import write_text_atomic
from ..metrics import evaluate_volume

logger = logging.getLogger(__name__)


def _first_channel(x: Any) -> np.ndarray:
    arr = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    return arr[0] if arr.ndim == 4 else arr


def _subject(item: dict, index: int) -> str:
    for key in ("subject",):
        if item.get(key):
            return str(item[key])
    name = source_name(item.get("image"))
    return os.path.basename(name) if name else f"volume_{index}"


class VolumeMetricsSaver:
    """Ignite handler: score every evaluated volume and write ``metrics.csv`` + ``metrics_summary.json``.

    Args:
        output_dir: folder for the two files (created).
        pred_key, label_key, mask_key: keys in the decollated engine output / batch.
        lpips_net: ``alex`` or ``vgg``, computed only when its backbone weights are in the torch hub cache (also
            passed to the protocols); None: no LPIPS.
        summary_prefix: the means also go into ``engine.state.metrics`` under this prefix.
        extra_columns: constant columns added to every row (e.g. the method's name).
        protocols: name -> function ``fn(pred, ref, lpips_net=...)`` returning a flat dict (a bundle's paper
            protocol, in its ``scripts/protocol.py``; in a config ``{"_target_": "scripts.protocol.protocol_cfm",
            "_mode_": "callable"}``); each one's values for a volume are added to its row with the name as a prefix
            (``cfm`` adds ``cfm_psnr``, ``cfm_ssim``, ``cfm_slices_used``, ...), and so to the summary.
    """

    def __init__(
        self,
        output_dir: str,
        pred_key: str = "pred",
        label_key: str = "label",
        mask_key: str = "mask",
        lpips_net: str | None = "alex",
        summary_prefix: str = "test_",
        extra_columns: dict | None = None,
        protocols: Mapping[str, Callable[..., dict[str, Any]]] | None = None,
    ):
        protocols = dict(protocols or {})
        not_callable = sorted(name for name, fn in protocols.items() if not callable(fn))
        if not_callable:
            raise InputError("protocols", f"must map names to functions; not callable: {not_callable}")
        self.protocols = protocols
        self.output_dir = output_dir
        self.pred_key, self.label_key, self.mask_key = pred_key, label_key, mask_key
        self.lpips_net = lpips_net
        self.summary_prefix = summary_prefix
        self.extra_columns = dict(extra_columns or {})
        self.rows: list[dict] = []
        self._t0 = 0.0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _started(self, engine) -> None:
        self.rows = []
        self._t0 = time.perf_counter()

    def _iteration(self, engine) -> None:
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch]
        for i, out in enumerate(outputs):
            item = batch[i] if i < len(batch) else {}
            mask = item.get(self.mask_key, out.get(self.mask_key))
            pred, label = _first_channel(out[self.pred_key]), _first_channel(out[self.label_key])
            scores = evaluate_volume(
                pred, label, None if mask is None else _first_channel(mask) > 0.5, lpips_net=self.lpips_net
            )
            row = {"subject": _subject(item, len(self.rows)), **self.extra_columns, **scores}
            for name, protocol in self.protocols.items():
                values = protocol(pred, label, lpips_net=self.lpips_net)
                row.update({f"{name}_{key}": value for key, value in values.items()})
            self.rows.append(row)
            logger.info(
                "%s: PSNR %.2f dB, SSIM %.4f inside the mask",
                row["subject"],
                scores.get("psnr_mask", math.nan),
                scores.get("ssim_mask", math.nan),
            )

    def summary(self) -> dict[str, Any]:
        """Mean and std over volumes of every numeric column."""
        out: dict[str, Any] = {"volumes": len(self.rows), "seconds": round(time.perf_counter() - self._t0, 2)}
        keys = [k for k in (self.rows[0] if self.rows else {}) if k != "subject"]
        for k in keys:
            vals = [r[k] for r in self.rows if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
            if vals and len(vals) == len(self.rows):
                arr = np.asarray(vals, dtype=np.float64)
                out[k] = {"mean": float(np.mean(arr)), "std": float(np.std(arr))}
            elif self.rows and isinstance(self.rows[0].get(k), str):
                out[k] = self.rows[0][k]
        return out

    def _completed(self, engine) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        path = write_text_atomic(os.path.join(self.output_dir, "metrics.csv"), table.getvalue(), newline="")
        summary = self.summary()
        write_text_atomic(os.path.join(self.output_dir, "metrics_summary.json"), json.dumps(summary, indent=2))
        for k, v in summary.items():
            if isinstance(v, dict):
                engine.state.metrics[f"{self.summary_prefix}{k}"] = v["mean"]
        shown = ("psnr_mask", "ssim_mask", "msssim_mask", "mae_mask", "nmse_mask", "ulf_enc", "tissue_miou")
        table = ", ".join(f"{k} {summary[k]['mean']:.4g}" for k in shown if isinstance(summary.get(k), dict))
        print(f"evaluated {len(self.rows)} volume(s): {table}\nwrote {path}", flush=True)
