"""Tests of shared_transforms.engine.evaluation.VolumeMetricsSaver: one CSV row per volume, paper protocols, atomic
files."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
from conftest import load_bundle_scripts, phantom
from ignite.engine import Engine

from shared_transforms import metrics as M
from shared_transforms.engine.evaluation import VolumeMetricsSaver
from shared_transforms.errors import InputError

CFM = __import__(f"{load_bundle_scripts('cfm').__name__}.protocol", fromlist=['protocol'])  # cfm's paper protocol


def _run(saver: VolumeMetricsSaver, items: list[dict]) -> Engine:
    engine = Engine(lambda engine, batch: batch)  # the "evaluator" passes its decollated batch through as output
    saver.attach(engine)
    engine.run([items], max_epochs=1)
    return engine


def test_rows_protocol_columns_and_atomic_files(tmp_path):
    rng = np.random.default_rng(0)
    items = []
    for k in range(2):
        ref = phantom((24, 28, 20), seed=k)
        pred = np.clip(ref + 0.03 * rng.standard_normal(ref.shape).astype(np.float32), 0, 1)
        items.append(
            {
                "subject": f"s{k}",
                "pred": torch.from_numpy(pred)[None],
                "label": torch.from_numpy(ref)[None],
                "mask": torch.from_numpy(ref > 0.1)[None].float(),
            }
        )
    out_dir = tmp_path / "eval"
    saver = VolumeMetricsSaver(str(out_dir), lpips_net=None, extra_columns={"method": "test"}, protocols={"cfm": CFM.protocol_cfm})
    engine = _run(saver, items)

    assert sorted(os.listdir(out_dir)) == ["metrics.csv", "metrics_summary.json"]  # no temporary left behind
    with open(out_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["subject"] for r in rows] == ["s0", "s1"] and all(r["method"] == "test" for r in rows)
    for row, item in zip(rows, items):
        pred, ref = item["pred"][0].numpy(), item["label"][0].numpy()
        expected = M.evaluate_volume(pred, ref, item["mask"][0].numpy() > 0.5, lpips_net=None)
        assert float(row["psnr_mask"]) == pytest.approx(expected["psnr_mask"], rel=1e-12)
        cfm = CFM.protocol_cfm(pred, ref, lpips_net=None)
        assert {f"cfm_{k}" for k in cfm} <= set(row)
        assert float(row["cfm_psnr"]) == pytest.approx(cfm["psnr"], rel=1e-12)
        assert float(row["cfm_ssim"]) == pytest.approx(cfm["ssim"], rel=1e-12)
        assert int(row["cfm_slices_used"]) == cfm["slices_used"]
    summary = json.loads((out_dir / "metrics_summary.json").read_text())
    assert summary["volumes"] == 2
    assert summary["cfm_psnr"]["mean"] == pytest.approx(np.mean([float(r["cfm_psnr"]) for r in rows]))
    assert engine.state.metrics["test_cfm_ssim"] == summary["cfm_ssim"]["mean"]


def test_a_protocol_that_is_not_a_function_is_refused(tmp_path):
    with pytest.raises(InputError, match="not callable: \\['cfm'\\]"):
        VolumeMetricsSaver(str(tmp_path), protocols={"cfm": "scripts.protocol.protocol_cfm"})
