"""tools/benchmark.py: every bundle in one process on tiny synthetic pairs, and its outputs.

One module-scoped run (interpolation, unet with a freshly built network's weights, cfm with random weights and one
ODE step) feeds most tests; the error tests stop before any inference.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import tiny_subjects

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import benchmark  # noqa: E402
from benchmarking import measure, report  # noqa: E402

from shared_transforms.errors import InputError  # noqa: E402
from shared_transforms.metrics import lpips_checkpoint_path, psnr  # noqa: E402

METHODS = ["interpolation", "unet", "cfm"]
CFM_FAST = {"num_steps": 1, "num_samples": 1, "slice_batch_size": 16}


def _random_weights(name: str, path: Path) -> tuple[str, int]:
    """Save the state dict of a freshly built ``network_def`` of bundle ``name`` (built from its own config, so it
    always matches); returns the path and the parameter count."""
    from monai.bundle import ConfigParser

    from shared_transforms.engine.bundle import activate_bundle

    root = REPO / "bundles" / name
    activate_bundle(root)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser["bundle_root"] = str(root)
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    torch.save(net.state_dict(), path)
    return str(path), sum(p.numel() for p in net.parameters())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Five subjects (1 training, 1 validation, 3 testing): high field 1 mm (16, 32, 24), low field 2 x 2 x 4 mm,
    brain masks; plus random weights for unet and cfm."""
    tiny = tiny_subjects(tmp_path_factory.mktemp("bench_data"), 5, (1, 1, 3))
    folder = tiny["dir"]
    unet, unet_params = _random_weights("unet", folder / "unet.pt")
    cfm, _ = _random_weights("cfm", folder / "cfm.pt")
    return {**tiny, "unet": unet, "unet_params": unet_params, "cfm": cfm}


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """One benchmark of the three bundles on the three testing subjects; returns the out_dir and the CSV rows."""
    out = tmp_path_factory.mktemp("bench_out")
    benchmark.main(bundles="interpolation,unet,cfm", datalist=data["datalist"], out_dir=str(out), device="cpu",
                   overrides=json.dumps({"cfm": CFM_FAST}),
                   weights=json.dumps({"unet": data["unet"], "cfm": data["cfm"]}), save_predictions="true")
    rows = list(csv.DictReader(open(out / "results.csv")))
    return {"out": out, "rows": rows}


def _aligned(item: dict):
    """The test item through the benchmark's own alignment (pair_transforms at 1 mm)."""
    from monai.transforms import Compose

    from shared_transforms.transforms.pipelines import pair_transforms

    align = Compose(pair_transforms([1.0, 1.0, 1.0]))
    return align({"image": item["low"], "label": item["high"], "mask": item["mask"]})


def test_one_row_per_method_and_subject_with_cost_columns(run, data):
    rows = run["rows"]
    assert sorted((r["method"], r["subject"]) for r in rows) == sorted(
        (m, s) for m in METHODS for s in ("t2", "t3", "t4"))
    for r in rows:
        assert np.isfinite(float(r["psnr_mask"])) and -1 <= float(r["ssim_mask"]) <= 1
        assert float(r["seconds_with_model_load"]) == pytest.approx(
            float(r["seconds_per_volume"]) + float(r["model_load_seconds"]), rel=1e-6)
        assert float(r["seconds_per_volume"]) > 0 and float(r["peak_memory_mb"]) >= 0
    by = {m: [r for r in rows if r["method"] == m] for m in METHODS}
    assert {(r["unit"], int(r["evaluations_per_unit"])) for r in by["interpolation"]} == {("volume", 0)}
    assert {int(r["evaluations_per_volume"]) for r in by["interpolation"]} == {0}
    assert {(r["unit"], int(r["evaluations_per_unit"])) for r in by["unet"]} == {("slice", 1)}
    assert {(r["unit"], int(r["evaluations_per_unit"])) for r in by["cfm"]} == {("slice", 1)}  # euler, 1 step, 1 sample
    assert {int(r["parameters"]) for r in by["interpolation"]} == {0}
    # FLOPs: no matrix product or convolution in cubic interpolation; per volume = per evaluation x evaluations
    assert {(float(r["gflop_per_evaluation"]), float(r["gflop_per_volume"])) for r in by["interpolation"]} == {(0, 0)}
    for r in by["unet"] + by["cfm"]:
        assert float(r["gflop_per_evaluation"]) > 0
        assert float(r["gflop_per_volume"]) == pytest.approx(
            float(r["gflop_per_evaluation"]) * int(r["evaluations_per_volume"]), rel=1e-9)
    assert {int(r["parameters"]) for r in by["unet"]} == {data["unet_params"]}
    # per volume: one evaluation per non-empty sagittal slice of the aligned low field (SliceInferer2D skips the rest)
    for r in by["unet"]:
        image = _aligned(next(it for it in data["items"] if it["subject"] == r["subject"]))["image"][0]
        assert int(r["evaluations_per_volume"]) == int((image.flatten(1).amax(1) > 1e-3).sum())


def test_flop_count_is_per_evaluation_of_the_first_call():
    """count_gflop_per_evaluation reruns the recorded call under FlopCounterMode and divides by its batch: a 3x3
    convolution, 2 x C_in x C_out x 9 FLOPs per output pixel."""
    conv = torch.nn.Conv2d(2, 4, 3, padding=1, bias=False)
    x = torch.zeros(5, 2, 8, 6)
    assert measure.count_gflop_per_evaluation(conv, ((x,), {})) == pytest.approx(2 * 2 * 4 * 9 * 8 * 6 / 1e9)
    assert measure.count_gflop_per_evaluation(conv, None) is None


def test_interpolation_scores_the_aligned_low_field(run, data):
    """The identity's prediction is the aligned low field: the same PSNR as scoring it directly, and the saved
    NIfTI is that volume on the high-field grid."""
    item = data["items"][2]
    d = _aligned(item)
    image, label, mask = d["image"][0].numpy(), d["label"][0].numpy(), d["mask"][0].numpy() > 0.5
    row = next(r for r in run["rows"] if r["method"] == "interpolation" and r["subject"] == "t2")
    assert float(row["psnr_mask"]) == pytest.approx(psnr(np.clip(image, 0, 1), label, mask), abs=1e-4)
    saved = nib.load(run["out"] / "predictions" / "t2_interpolation.nii.gz")
    assert np.allclose(saved.affine, np.asarray(d["label"].affine), atol=1e-5)
    assert np.allclose(saved.get_fdata(), np.clip(image, 0, 1), atol=1e-5)
    unet_row = next(r for r in run["rows"] if r["method"] == "unet" and r["subject"] == "t2")
    assert float(unet_row["psnr_mask"]) != pytest.approx(float(row["psnr_mask"]))  # a different method's output


def test_markdown_table_and_command(run):
    text = (run["out"] / "results.md").read_text()
    for method in METHODS:
        assert f"| {method} | 3 |" in text
    assert "| 0 / volume |" in text and "| 1 / slice |" in text  # network evaluations per unit, as declared
    assert "--bundles interpolation,unet,cfm" in text and "Command: `python tools/benchmark.py" in text
    assert "torch " + torch.__version__ in text and "split `testing`" in text
    table_rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith(("| method", "| ---"))]
    assert len(table_rows) == len(METHODS)
    if not lpips_checkpoint_path("alex").is_file():
        assert all("skipped: no backbone weights" in ln for ln in table_rows)  # the reason, never a number


def test_figure_is_a_png_with_a_row_per_subject(run):
    import matplotlib.image

    path = run["out"] / "figure.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(str(path))
    assert img.shape[1] > img.shape[0]  # 3 rows x 8 columns (low, 3 methods, high, 3 error maps)
    assert img[..., :3].std() > 0.05  # not blank


def test_overrides_reach_the_bundle_config(data, tmp_path):
    out = tmp_path / "steps2"
    benchmark.main(bundles="cfm", datalist=data["datalist"], out_dir=str(out), device="cpu", max_subjects=1,
                   overrides={"cfm": {**CFM_FAST, "num_steps": 2}}, weights={"cfm": data["cfm"]}, lpips_net="none")
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 1 and int(rows[0]["evaluations_per_unit"]) == 2
    image = _aligned(data["items"][2])["image"][0]
    assert int(rows[0]["evaluations_per_volume"]) == 2 * int((image.flatten(1).amax(1) > 1e-3).sum())


def test_clear_errors(data, tmp_path):
    kw = {"datalist": data["datalist"], "out_dir": str(tmp_path / "x"), "device": "cpu"}
    with pytest.raises(InputError, match=r"unknown bundle.*'nope'.*available: .*interpolation"):
        benchmark.main(bundles="interpolation,nope", **kw)
    with pytest.raises(InputError, match="--overrides.*not valid JSON"):
        benchmark.main(bundles="cfm", overrides='{"cfm": {num_steps: 2}', **kw)
    with pytest.raises(InputError, match="no config id 'num_stepz'"):
        benchmark.main(bundles="cfm", overrides={"cfm": {"num_stepz": 2}}, **kw)
    missing = str(tmp_path / "missing.pt")
    with pytest.raises(InputError, match=f"{missing}: checkpoint not found"):
        benchmark.main(bundles="interpolation,unet", weights={"unet": missing}, **kw)
    with pytest.raises(InputError, match="has no weights"):
        benchmark.main(bundles="interpolation", weights={"interpolation": missing}, **kw)
    assert not (tmp_path / "x" / "results.csv").exists()  # nothing ran


def test_stress_table_has_a_column_per_condition_and_the_conditions_take_effect(data, tmp_path):
    """``--stress``: the split's high fields degraded one factor at a time; one table, rows bundles, columns
    conditions."""
    out = tmp_path / "stress"
    benchmark.main(bundles="interpolation,unet", datalist=data["datalist"], out_dir=str(out), device="cpu",
                   weights={"unet": data["unet"]}, lpips_net="none", max_subjects=2, stress=True,
                   stress_conditions="snr 4,snr 16,sagittal")
    text = (out / "stress.md").read_text()
    assert "| bundle | snr 4 | snr 16 | sagittal |" in text and "--stress" in text
    rows = list(csv.DictReader(open(out / "stress.csv")))
    assert {(r["bundle"], r["condition"]) for r in rows} == {
        (b, c) for b in ("interpolation", "unet") for c in ("snr 4", "snr 16", "sagittal")}
    assert all(np.isfinite(float(r["psnr_mask"])) and -1 <= float(r["ssim_mask"]) <= 1 for r in rows)
    # the same subject and seed in every condition: at WM SNR 4 the background (Rayleigh, mean sigma sqrt(pi/2))
    # is 4 times as bright as at SNR 16
    corner = {c: nib.load(next((out / "stress_data" / c).glob("*_low.nii.gz"))).get_fdata()[:2, :2, :].mean()
              for c in ("snr_4", "snr_16")}
    assert 3.0 < corner["snr_4"] / corner["snr_16"] < 5.0
    low = nib.load(next((out / "stress_data" / "sagittal").glob("*_low.nii.gz")))
    assert np.allclose(low.header.get_zooms(), (5.0, 1.5, 1.5), atol=1e-3)  # thick along x: a sagittal acquisition
    axial = nib.load(next((out / "stress_data" / "snr_4").glob("*_low.nii.gz")))
    assert np.allclose(axial.header.get_zooms(), (1.5, 1.5, 5.0), atol=1e-3)
    with pytest.raises(InputError, match="unknown condition"):
        benchmark.main(bundles="interpolation", datalist=data["datalist"], out_dir=str(tmp_path / "x"), stress=True,
                       stress_conditions="snr 1000")


def test_sweep_runs_every_setting_and_tabulates_it(data, tmp_path):
    import sweep

    out = tmp_path / "sweep"
    sweep.main(bundle="cfm", grid='{"solver": ["euler", "heun"], "num_steps": [1]}', datalist=data["datalist"],
               out_dir=str(out), device="cpu", weights=data["cfm"], max_subjects=1)
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [(r["solver"], r["num_steps"]) for r in rows] == [("euler", "1"), ("heun", "1")]
    # the setting reached the bundle: Heun takes two network evaluations a step, Euler one
    evaluations = [float(r["evaluations_per_volume"]) for r in rows]
    assert evaluations[1] == 2 * evaluations[0] > 0
    assert all(np.isfinite(float(r["psnr_mask_mean"])) for r in rows)
    assert (out / "solver-heun_num_steps-1" / "results.csv").is_file()
    # the step study's speed columns: the network's GFLOP per volume (Heun twice Euler's) and the rate achieved
    gflop = [float(r["gflop_per_volume"]) for r in rows]
    assert gflop[1] == pytest.approx(2 * gflop[0]) and gflop[0] > 0
    assert all(float(r["achieved_gflops"]) > 0 for r in rows)
    md = (out / "sweep.md").read_text()
    assert "| solver | num_steps | PSNR mask (dB) |" in md and "tools/sweep.py" in md and "achieved GFLOP/s" in md
    assert re.search(r"Matrix product 2048 x 2048 here: float32 [\d,]+ GFLOP/s, bfloat16 [\d,]+ GFLOP/s", md)
    with pytest.raises(InputError, match="--grid"):
        sweep.main(bundle="cfm", grid='{"num_steps": []}', datalist=data["datalist"], out_dir=str(out))


def test_a_saved_prediction_of_a_subject_id_without_a_usable_name_gets_its_index():
    """Issue 29 (noticed then): ``--save_predictions`` named files by ``safe_name(subject)``, which raises for
    ``..``."""
    assert report.prediction_stem("sub-01", 0) == "sub-01"
    assert report.prediction_stem("..", 4) == "item-004"
