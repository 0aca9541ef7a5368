"""Tests of the flat bundle's measurement commands: the results table (``tools/studies/flat_results.py``) and the
speed benchmark (``tools/studies/flat_speed.py``). The table is checked on summaries written here (no evaluation
runs); the speed command runs once on a tiny slice."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, load_bundle_scripts

load_bundle_scripts("flat")
sys.path.insert(0, str(REPO / "tools"))
from flat_bundle_scripts.network import unpack_inputs  # noqa: E402
from studies import flat_results as results  # noqa: E402
from studies import flat_speed as speed  # noqa: E402


def _summary(psnr, ssim, nmse):
    return {"volumes": 2, "psnr_mask": {"mean": psnr, "std": 0.5}, "ssim_mask": {"mean": ssim, "std": 0.01},
            "fastmri_psnr": {"mean": psnr + 1, "std": 0.4}, "fastmri_ssim": {"mean": ssim - 0.1, "std": 0.01},
            "fastmri_nmse": {"mean": nmse, "std": 0.001}}


def test_results_table_reads_existing_cells_and_marks_the_rest_not_run(tmp_path):
    models = {"zero-filled": "zero_filled", "FLAT": ["bundles/flat/models/model.pt", "flow"]}
    cell = tmp_path / "work" / "FLAT_8x_random"
    cell.mkdir(parents=True)
    (cell / "metrics_summary.json").write_text(json.dumps(_summary(20.871, 0.60937, 0.01834)))
    table = results.main(models, str(tmp_path / "datalist.json"), work_dir=str(tmp_path / "work"),
                        out_dir=str(tmp_path / "docs"), only="")  # no model chosen: nothing is evaluated
    in_mask, fastmri = ({line.split("|")[1].strip(): line for line in part.splitlines() if line.startswith("| ")}
                        for part in table.split("fastMRI's metrics"))
    assert "20.87 ± 0.50 / 0.6094 |" in in_mask["FLAT"] and "21.87 ± 0.40 / 0.5094 / 0.0183 |" in fastmri["FLAT"]
    for rows in (in_mask, fastmri):
        assert rows["FLAT"].count("not run") == 3 and rows["zero-filled"].count("not run") == 4
    written = json.loads((tmp_path / "docs" / "results.json").read_text())
    assert set(written["cells"]) == {"FLAT_8x_random"}
    assert (tmp_path / "docs" / "results.md").read_text() == table
    # every cell keeps the exact evaluation command that produced it
    cmd = written["commands"]["zero-filled_4x_equispaced"]
    assert "--acceleration 4 --center_fraction 0.08 --mask_pattern equispaced" in cmd and "ZeroFilled" in cmd


def test_eval_command_names_checkpoint_mode_and_setting():
    cmd = results.eval_command(["~/w/model.pt", "learned_steps"], "/d/datalist.json", 64, (8.0, 0.04, "random"), "/o")
    joined = " ".join(cmd)
    assert "--mode learned_steps" in joined and "--eval_num_slices 64" in joined and "--output_dir /o" in joined
    assert "~" not in cmd[cmd.index("--ckpt_path") + 1]
    cmd = results.eval_command(["m.pt", "flow", {"share_weights": False}], "d.json", -1, (4.0, 0.08, "random"), "/o")
    assert cmd[cmd.index("--share_weights") + 1] == "False"


def test_speed_input_is_a_packed_slice_at_the_stated_acceleration():
    x = speed.packed_slice(64, acceleration=8.0, center_fraction=0.04)
    assert x.shape == (1, 3, 64, 64)
    kspace, mask = unpack_inputs(x)
    assert int(mask[0, 0, 0, :, 0].sum()) == 8  # round(64 / 8) columns
    assert torch.all(kspace[..., ~mask[0, 0, 0, :, 0], :] == 0)


@pytest.mark.slow
def test_speed_command_prints_one_json_line():
    done = subprocess.run([sys.executable, "tools/study.py", "flat_speed", "--size", "32", "--num_slices", "2",
                           "--repeats", "1", "--warmup", "0", "--device", "cpu"], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["num_cascades"] == 12 and result["slice"] == [32, 32] and result["seconds_per_slice"] > 0
    assert result["peak_memory_mb"] > 0 and result["seconds_per_volume"] > 0
