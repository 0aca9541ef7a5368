"""Every bad input of the bundle contract gets a clear error naming the file; outputs are atomic and safe."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import phantom, save
from monai.data import MetaTensor

from shared_transforms.transforms.checks import check_fov_overlap, fov_overlap_fraction
from shared_transforms.errors import InputError
from shared_transforms.io.volumes import LoadVolume, LoadVolumed, SaveVolumed, as_bool, write_nifti_atomic


def _raises(path, match):
    with pytest.raises(InputError, match=match) as info:
        LoadVolume()(path)
    assert str(path) in str(info.value), "the error must name the file"


def test_load_good_volume_is_channel_first_with_meta(tmp_path):
    p = save(tmp_path / "a.nii.gz", phantom(), np.diag([2.0, 2.0, 3.0, 1.0]))
    img = LoadVolume()(p)
    assert img.shape == (1, 24, 28, 20) and img.dtype == torch.float32
    assert np.allclose(np.asarray(img.affine)[:3, :3], np.diag([2, 2, 3]))
    assert img.meta["filename_or_obj"] == p


def test_4d_with_one_volume_is_accepted(tmp_path):
    p = save(tmp_path / "a4.nii.gz", phantom()[..., None])
    assert LoadVolume()(p).shape == (1, 24, 28, 20)


def test_missing_file(tmp_path):
    _raises(tmp_path / "nope.nii.gz", "not found")


def test_not_nifti(tmp_path):
    p = tmp_path / "fake.nii.gz"
    p.write_text("this is not an image")
    _raises(p, "not a readable NIfTI")
    q = tmp_path / "scan.png"
    q.write_bytes(b"\x89PNG....")
    _raises(q, "not a NIfTI file")


def test_not_3d(tmp_path):
    _raises(save(tmp_path / "two.nii.gz", np.stack([phantom(), phantom()], -1)), "not a 3D volume")
    _raises(save(tmp_path / "line.nii.gz", phantom()[:, :1, :1]), "not a 3D volume")


def test_a_single_slice_loads_for_2d_bundles_and_is_refused_by_3d_ones(tmp_path, capsys):
    """(H, W) and (H, W, 1) files load as (1, H, W, 1) with their affine; a 3D bundle refuses them, and a 4-slice
    slab, in one line naming the file; an identity affine (voxel size unknown) gets a one-line warning."""
    flat = save(tmp_path / "slice.nii.gz", phantom()[:, :, 10], np.diag([1.6, 1.6, 5.0, 1.0]))
    one = save(tmp_path / "slice1.nii.gz", phantom()[:, :, 10:11])
    for p in (flat, one):
        img = LoadVolume()(p)
        assert img.shape == (1, 24, 28, 1) and img.meta["filename_or_obj"] == p
    assert np.allclose(np.asarray(LoadVolume()(flat).affine)[:3, :3], np.diag([1.6, 1.6, 5.0]))
    assert f"warning: {one}: its affine is the identity" in capsys.readouterr().out
    slab = save(tmp_path / "slab.nii.gz", phantom((40, 40, 20))[:, :, 8:12])
    for p in (flat, one, slab):
        with pytest.raises(InputError, match="single slice or thin slab.*3D method") as info:
            LoadVolume(volume_only_for="diffusion_iqt")(p)
        assert str(p) in str(info.value) and "\n" not in str(info.value)


def test_nan_and_inf(tmp_path):
    vol = phantom()
    vol[1, 1, 1] = np.nan
    vol[2, 2, 2] = np.inf
    _raises(save(tmp_path / "nan.nii.gz", vol), "1 NaN and 1 Inf")


def test_constant_volume(tmp_path):
    _raises(save(tmp_path / "zero.nii.gz", np.zeros((8, 8, 8), np.float32)), "constant")


def test_nearly_empty_volume_is_refused_as_loaded(tmp_path):
    """A handful of non-zero voxels is refused before resampling, whose ringing would hide it."""
    vol = np.zeros((40, 40, 40), np.float32)
    vol[20, 20, 20:25] = 100.0  # 5 of 64,000 voxels
    _raises(save(tmp_path / "dots.nii.gz", vol), r"almost no signal: 5 of 64000 voxels")
    vol[10:30, 10:30, 10:30] = 50.0  # a real object: accepted
    from shared_transforms.io.volumes import LoadVolume

    assert LoadVolume()(save(tmp_path / "head.nii.gz", vol)).shape == (1, 40, 40, 40)


def test_singular_and_nonfinite_affine(tmp_path):
    bad = np.eye(4)
    bad[2, 2] = 0
    p = save(tmp_path / "sing.nii.gz", phantom())
    img = nib.load(p)
    # nibabel refuses to write some bad affines itself: write via the header fields directly
    hdr = img.header.copy()
    hdr.set_sform(bad, code=1)
    hdr.set_qform(None, code=0)
    nib.save(nib.Nifti1Image(phantom(), None, hdr), p)
    _raises(p, "singular")
    nan_aff = np.eye(4)
    nan_aff[0, 3] = np.nan
    hdr.set_sform(nan_aff, code=1)
    q = str(tmp_path / "nanaff.nii.gz")
    nib.save(nib.Nifti1Image(phantom(), None, hdr), q)
    _raises(q, "NaN or Inf")


def test_fov_overlap():
    a = np.eye(4)
    b = np.eye(4)
    b[:3, 3] = [100, 0, 0]
    assert fov_overlap_fraction(a, (20, 20, 20), a, (20, 20, 20)) == pytest.approx(1.0)
    assert fov_overlap_fraction(a, (20, 20, 20), b, (20, 20, 20)) == 0.0
    with pytest.raises(InputError, match="do not overlap"):
        check_fov_overlap(a, (20, 20, 20), b, (20, 20, 20), source="low.nii and high.nii")


def test_loadd_and_as_bool(tiny_pair):
    d = LoadVolumed(["low", "high"])(dict(tiny_pair))
    assert d["low"].shape == (1, 12, 14, 5) and d["high"].shape == (1, 24, 28, 20)
    assert as_bool("true") and as_bool("1") and not as_bool("false") and not as_bool(None) and as_bool(True)
    with pytest.raises(ValueError):
        as_bool("maybe")


def test_a_writer_replaces_only_its_own_files(tmp_path):
    """Issue 9.7: a file is replaced only by the writer that marked it - not a user's file, not the shipped sample
    or the demo data (another owner), not a file marked the older way, and for PNGs too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shared_transforms.io.ownership import written_by
    from shared_transforms.io.preview import save_figure_atomic
    from shared_transforms.io.sample import sample_paths

    user = save(tmp_path / "mine.nii.gz", phantom())
    before = Path(user).read_bytes()
    with pytest.raises(InputError, match="not written by cfm"):
        write_nifti_atomic(phantom(), np.eye(4), user, "cfm")
    assert Path(user).read_bytes() == before
    out = write_nifti_atomic(phantom(), np.eye(4), tmp_path / "out" / "x.nii.gz", "cfm", "test")
    assert written_by(out) == "cfm" and nib.load(out).header["descrip"].tobytes().startswith(b"lfmri:cfm test")
    write_nifti_atomic(phantom() * 0.5, np.eye(4), out, "cfm")  # its own output: a re-run may replace it
    assert np.allclose(nib.load(out).get_fdata(), phantom() * 0.5, atol=1e-6)
    assert not [f for f in os.listdir(tmp_path / "out") if f.startswith(".tmp_")]
    with pytest.raises(InputError, match="written by cfm, not by unet"):
        write_nifti_atomic(phantom(), np.eye(4), out, "unet")
    # the shipped sample (and the demo data) belong to another writer, or to none: a bundle never replaces them
    assert written_by(sample_paths()["low"]) != "cfm"
    old = nib.Nifti1Image(phantom(), np.eye(4))
    old.header["descrip"] = b"lfmri cfm intensity [0,1]"  # the mark before owners were named
    nib.save(old, tmp_path / "old.nii.gz")
    with pytest.raises(InputError, match="not written by cfm"):
        write_nifti_atomic(phantom(), np.eye(4), tmp_path / "old.nii.gz", "cfm")
    # PNG: a user's picture is refused, the writer's own is replaced
    fig = plt.figure()
    fig.savefig(tmp_path / "user.png")
    with pytest.raises(InputError, match="not written by cfm"):
        save_figure_atomic(fig, str(tmp_path / "user.png"), "cfm")
    png = save_figure_atomic(plt.figure(), str(tmp_path / "ours.png"), "cfm")
    assert written_by(png) == "cfm"
    save_figure_atomic(plt.figure(), png, "cfm")


def test_save_volumed_target_and_input_grid(tmp_path, tiny_pair):
    from monai.transforms import Spacing

    low = LoadVolume()(tiny_pair["low"])
    image = Spacing(pixdim=(1.0, 1.0, 1.0), mode=3)(low)
    pred = image.clone()
    saver = SaveVolumed("pred", output_dir=str(tmp_path / "o"), bundle_name="test")
    out = saver({"image": image, "pred": pred})
    path = out["pred_path"]
    assert os.path.basename(path) == "s1_low_test.nii.gz"
    img = nib.load(path)
    assert img.shape == tuple(image.shape[1:])
    assert np.allclose(img.affine, np.asarray(image.affine), atol=1e-5)
    assert img.get_fdata().max() <= 1.0 + 1e-6  # clipped to the normalised scale
    back = SaveVolumed("pred", output_dir=str(tmp_path / "o2"), bundle_name="test", resample_to_input="true")
    img2 = nib.load(back({"image": image, "pred": pred})["pred_path"])
    assert img2.shape == (12, 14, 5)
    assert np.allclose(img2.affine, nib.load(tiny_pair["low"]).affine, atol=1e-5)
    ref = np.clip(nib.load(tiny_pair["low"]).get_fdata(), 0, 1)
    assert np.abs(img2.get_fdata() - ref).mean() < 0.05  # resampled there and back: close to the input


def test_save_volumed_refuses_to_overwrite_input(tmp_path):
    src = save(tmp_path / "scan.nii.gz", phantom())
    decoy = save(tmp_path / "scan_test.nii.gz", phantom())  # a user file that has the output's name
    image = MetaTensor(torch.from_numpy(phantom())[None], affine=torch.eye(4, dtype=torch.float64),
                       meta={"filename_or_obj": src})
    with pytest.raises(InputError):
        SaveVolumed("pred", output_dir=str(tmp_path), bundle_name="test")({"image": image, "pred": image})
    assert nib.load(decoy).get_fdata().shape == (24, 28, 20)


def test_a_header_claiming_billions_of_voxels_is_refused_before_allocating(tmp_path, monkeypatch):
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    img.header.set_data_shape((2000, 2000, 1000))  # 4e9 voxels claimed, 256 bytes of data
    path = tmp_path / "huge.nii"
    with open(path, "wb") as f:
        f.write(img.header.binaryblock + b"\0" * 4 + np.zeros(64, np.float32).tobytes())
    _raises(str(path), r"claims 4,000,000,000 voxels .*LFMRI_MAX_VOXELS")
    small = save(tmp_path / "small.nii.gz", np.random.default_rng(0).random((8, 8, 8)).astype(np.float32))
    monkeypatch.setenv("LFMRI_MAX_VOXELS", "100")
    _raises(small, r"claims 512 voxels .*limit of 100")
    monkeypatch.setenv("LFMRI_MAX_VOXELS", "many")
    with pytest.raises(InputError, match="LFMRI_MAX_VOXELS: must be a positive integer"):
        LoadVolume()(small)


def test_a_truncated_gzip_names_the_file(tmp_path):
    good = save(tmp_path / "vol.nii.gz", np.random.default_rng(0).random((32, 32, 32)).astype(np.float32))
    data = open(good, "rb").read()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    _raises(str(cut), r"voxel data could not be read \(EOFError.*truncated or damaged")


def _unet(args, cwd):
    import subprocess
    import sys

    from conftest import REPO

    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(REPO / "bundles/unet/configs/inference.json"),
         *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )
    lines = [ln for ln in proc.stdout.replace("\r", "\n").splitlines() if ln.strip()]
    return proc.returncode, lines[-1] if lines else ""


@pytest.mark.slow
def test_an_output_of_another_input_with_the_same_name_is_not_replaced(tmp_path):
    """Issue 29.2: scan.nii.gz from s1/, then scan.nii.gz from s2/, into one --output_dir: the second is refused in
    one line naming the file, the first result stays; a rerun on the same input still replaces its own output."""
    for sub, seed in (("s1", 0), ("s2", 1)):
        (tmp_path / sub).mkdir()
        save(tmp_path / sub / "scan.nii.gz", phantom((40, 40, 24), seed=seed), np.diag([1.5, 1.5, 3.0, 1.0]))
    out = tmp_path / "out"
    out.mkdir()
    notes = out / ".tmp_999999_notes.txt"  # issue 29.4: a user's file that looks like a stale temporary
    notes.write_text("important")
    rc, last = _unet(["--input_path", str(tmp_path / "s1" / "scan.nii.gz"), "--output_dir", str(out)], tmp_path)
    assert notes.read_text() == "important"
    assert last.startswith("[unet] 1 of 1 inputs written; summary:"), last  # 29.7: a success ends with its summary
    first = (out / "scan_unet.nii.gz").read_bytes()
    assert rc == 0
    rc, last = _unet(["--input_path", str(tmp_path / "s2" / "scan.nii.gz"), "--output_dir", str(out)], tmp_path)
    assert rc != 0 and "output of another input" in last and "scan_unet.nii.gz" in last, last
    assert (out / "scan_unet.nii.gz").read_bytes() == first
    rc, _ = _unet(["--input_path", str(tmp_path / "s1" / "scan.nii.gz"), "--output_dir", str(out)], tmp_path)
    assert rc == 0


@pytest.mark.slow
def test_nan_weights_are_a_failure_not_a_written_output(tmp_path):
    """Issue 29.5: weights holding NaN (from outside the bundle) give no file and a non-zero exit naming the input."""
    from conftest import REPO

    state = torch.load(REPO / "bundles/unet/models/model.pt", weights_only=True)
    state = {k: v.clone().fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, tmp_path / "nan.pt")
    scan = save(tmp_path / "scan.nii.gz", phantom((40, 40, 24)), np.diag([1.5, 1.5, 3.0, 1.0]))
    rc, last = _unet(["--input_path", scan, "--output_dir", str(tmp_path / "o"), "--ckpt_path",
                      str(tmp_path / "nan.pt")], tmp_path)
    assert rc != 0 and "NaN or Inf" in last, last
    assert not (tmp_path / "o" / "scan_unet.nii.gz").exists()


@pytest.mark.slow
def test_a_missing_datalist_entry_is_one_failure_not_a_refused_run(tmp_path):
    """Issue 29.6: a datalist whose testing split lists one missing file: every other input is written, the
    summary names the missing one, and the run exits non-zero with the count as its last line."""
    import json

    good = [save(tmp_path / f"s{i}.nii.gz", phantom((40, 40, 24), seed=i), np.diag([1.5, 1.5, 3.0, 1.0]))
            for i in range(2)]
    items = [{"subject": f"s{i}", "low": p} for i, p in enumerate(good)] + [{"subject": "gone",
                                                                            "low": str(tmp_path / "gone.nii.gz")}]
    (tmp_path / "dl.json").write_text(json.dumps({"testing": items}))
    rc, last = _unet(["--input_path", str(tmp_path / "dl.json"), "--output_dir", str(tmp_path / "o")], tmp_path)
    assert rc != 0 and "1 of 3" in last, last
    summary = json.loads((tmp_path / "o" / "unet_summary.json").read_text())
    assert len([f for f in os.listdir(tmp_path / "o") if f.endswith("_unet.nii.gz")]) == 2
    assert "gone.nii.gz" in json.dumps(summary)


@pytest.mark.slow
def test_a_file_whose_grid_would_not_fit_is_one_failure_of_a_batch(tmp_path):
    """Issue 29.3: 32 x 32 x 16 voxels of 100 mm ask for billions of voxels on the 1 mm grid: that file is refused
    in one line before anything is allocated, the rest of the folder is written, the summary is there."""
    import json

    folder = tmp_path / "in"
    folder.mkdir()
    save(folder / "a_good.nii.gz", phantom((40, 40, 24)), np.diag([1.5, 1.5, 3.0, 1.0]))
    save(folder / "b_huge.nii.gz", phantom((32, 32, 16)), np.diag([100.0, 100.0, 100.0, 1.0]))
    rc, last = _unet(["--input_path", str(folder), "--output_dir", str(tmp_path / "o")], tmp_path)
    assert rc != 0 and "1 of 2" in last, last
    assert (tmp_path / "o" / "a_good_unet.nii.gz").exists()
    summary = json.dumps(json.loads((tmp_path / "o" / "unet_summary.json").read_text()))
    assert "b_huge.nii.gz" in summary and "more than the limit" in summary


@pytest.mark.parametrize(
    "setting, value, expected",
    [("resample_to_input", "maybe", "must be true or false"), ("slice_batch_size", 0, "positive integer"),
     ("target_spacing", [0, 1, 1], "three positive voxel sizes"), ("target_spacing", [-1, 1, 1], "positive"),
     ("device", "cuda:7" if torch.cuda.is_available() else "cuda", "GPU"), ("device", "nonsense", "not a device"),
     ("num_steps", 1.5, "positive integer")],
)
def test_bad_settings_are_refused_in_one_line_naming_them(setting, value, expected):
    """Issue 29.7: bad command-line values end with one line naming the setting (no silent default)."""
    from shared_transforms.engine.settings import check_settings

    with pytest.raises(InputError, match=expected) as info:
        check_settings(**{setting: value})
    assert str(info.value).startswith(f"--{setting}: ") and "\n" not in str(info.value)
    assert check_settings(device="cpu", target_spacing=[0.8, 0.8, 2], resample_to_input="true", slice_batch_size="4")


@pytest.mark.slow
def test_a_bad_setting_through_the_runner_ends_with_its_error_line(tmp_path):
    rc, last = _unet(["--slice_batch_size", "0", "--output_dir", str(tmp_path / "o")], tmp_path)
    assert rc != 0 and last == "error: --slice_batch_size: must be a positive integer, got 0", last


def test_an_input_folder_skips_the_bundles_own_outputs_and_h5_names_the_flag(tmp_path, capsys):
    """Issue 29.8: with the output folder as the input folder, a second run does not enhance its own outputs
    (``*_interpolation_interpolation``); an HDF5 file given to a NIfTI bundle names the flag it needs."""
    from shared_transforms.io.datalist import inference_items

    scan = save(tmp_path / "scan.nii.gz", phantom())
    write_nifti_atomic(phantom(), np.eye(4), tmp_path / "scan_interpolation.nii.gz", "interpolation")
    save(tmp_path / "user_interpolation.nii.gz", phantom())  # the name alone, without the mark: a user's input
    items = inference_items(tmp_path)
    assert sorted(os.path.basename(it["image"]) for it in items) == ["scan.nii.gz", "user_interpolation.nii.gz"]
    assert "1 file(s) skipped as outputs" in capsys.readouterr().out and scan
    h5 = tmp_path / "k.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n")
    _raises(h5, "--input_kind kspace_hdf5")


def test_a_qform_sform_disagreement_is_said_with_the_one_used(tmp_path, capsys):
    img = nib.Nifti1Image(phantom(), np.diag([1.0, 1.0, 1.0, 1.0]))
    img.set_qform(np.diag([2.0, 2.0, 2.0, 1.0]), code=1)
    img.set_sform(np.diag([1.0, 1.0, 3.0, 1.0]), code=2)
    nib.save(img, tmp_path / "q.nii.gz")
    loaded = np.asarray(LoadVolume()(str(tmp_path / "q.nii.gz")).affine)[:3, :3]
    said = capsys.readouterr().out
    assert "qform and sform disagree; using the " in said
    used = "qform" if np.allclose(loaded, np.diag([2.0, 2.0, 2.0])) else "sform"
    assert f"using the {used}" in said


def test_the_output_header_says_its_contrast():
    """Issue 28.4: the enhancement keeps the input's contrast; the header names it from a BIDS suffix."""
    from shared_transforms.io.volumes import contrast_of

    assert contrast_of("/d/sub-01_T2w.nii.gz") == "T2w" and contrast_of("x_flair.nii") == "FLAIR"
    assert contrast_of("scan.nii.gz") == "input-contrast"


def test_a_t1w_output_is_named_in_the_file_and_the_header(tmp_path):
    """Issue 28.4: a run asked for another contrast than the input's (``--output_contrast T1w``) loads that
    contrast's weights, says the contrast in the header and ends the file name with it; a bundle without such
    weights refuses in one line naming what it has."""
    from monai.data import MetaTensor

    from shared_transforms.engine.checkpoint import weights_for_contrast
    from shared_transforms.io.volumes import SaveVolumed

    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    (root / "models" / "model.pt").write_bytes(b"")
    (root / "models" / "model_baseline.pt").write_bytes(b"")  # flat's baseline: not a contrast
    assert weights_for_contrast(root) == str(root / "models" / "model.pt")
    with pytest.raises(InputError, match=r"--output_contrast: this bundle has no weights for 'T1w'; it has: input$"):
        weights_for_contrast(root, "T1w")
    (root / "models" / "model_t1w.pt").write_bytes(b"")
    assert weights_for_contrast(root, "t1w") == str(root / "models" / "model_t1w.pt")
    with pytest.raises(InputError, match="it has: input, T1w"):
        weights_for_contrast(root, "../model")

    source = tmp_path / "sub-01_T2w.nii.gz"
    ref = MetaTensor(torch.zeros(1, 4, 4, 4), affine=torch.eye(4), meta={"filename_or_obj": str(source)})
    pred = torch.full((1, 4, 4, 4), 0.5)
    for contrast, name, said in (("input", "sub-01_T2w_unet.nii.gz", "T2w"), ("T1w", "sub-01_T2w_unet_T1w.nii.gz", "T1w")):
        out = SaveVolumed("pred", str(tmp_path / contrast), "unet", output_contrast=contrast)({"image": ref, "pred": pred})
        assert Path(out["pred_path"]).name == name
        assert f" {said} target grid" in nib.load(out["pred_path"]).header["descrip"].tobytes().decode()
