"""The data tools: stacking slices, pairing a datalist, simulating pairs, and the demo data set."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import phantom, save

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import prepare_data  # noqa: E402

from shared_transforms.io.datalist import load_datalist  # noqa: E402
from shared_transforms.errors import InputError  # noqa: E402


def _rotated_affine():
    theta = 0.3
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([1.2, 1.1, 3.0])
    aff[:3, 3] = [-40, 12.5, 7]
    return aff


def test_stack_slices_rebuilds_a_volume_exactly(tmp_path):
    vol = np.random.default_rng(0).random((10, 12, 8)).astype(np.float32)
    other = np.random.default_rng(1).random((10, 12, 5)).astype(np.float32)
    aff = _rotated_affine()
    slices = tmp_path / "slices"
    slices.mkdir()
    for name, v in (("subA", vol), ("subB", other)):
        for k in np.random.default_rng(2).permutation(v.shape[2]):  # written in shuffled order
            a = aff.copy()
            a[:3, 3] = aff[:3, :3] @ [0, 0, k] + aff[:3, 3]  # each slice file carries its own position
            save(slices / f"{name}_slice-{k}.nii.gz", v[:, :, k : k + 1], a)
    written = prepare_data.stack_slices(str(slices), str(tmp_path / "vols"), suffix="_high")
    assert sorted(os.path.basename(w) for w in written) == ["subA_high.nii.gz", "subB_high.nii.gz"]
    img = nib.load(tmp_path / "vols" / "subA_high.nii.gz")
    assert np.array_equal(img.get_fdata(dtype=np.float32), vol)
    assert np.allclose(img.affine, aff, atol=1e-5)


def test_stack_slices_2d_files_and_seed002_preset(tmp_path):
    vol = phantom((20, 24, 6))
    for k in range(6):
        save(tmp_path / f"p7_{k}.nii.gz", vol[:, :, k], np.diag([1.6, 1.6, 1.0, 1.0]))
    out = prepare_data.stack_slices(str(tmp_path), str(tmp_path / "o"), slice_spacing_mm=5.0)
    img = nib.load(out[0])
    assert np.array_equal(img.get_fdata(dtype=np.float32), vol)
    assert np.allclose(np.diag(img.affine)[:3], [1.6, 1.6, 5.0])
    pre = nib.load(prepare_data.stack_slices(str(tmp_path), str(tmp_path / "p"), preset="low")[0])
    assert pre.shape == (112, 138, 40) and np.allclose(pre.header.get_zooms(), (1.6, 1.6, 5.0))


def test_stack_slices_errors(tmp_path):
    save(tmp_path / "subA_1.nii.gz", phantom((8, 8, 2))[:, :, :1])
    save(tmp_path / "subA_01.nii.gz", phantom((8, 8, 2))[:, :, :1])
    with pytest.raises(InputError, match="slice index repeated"):
        prepare_data.stack_slices(str(tmp_path), str(tmp_path / "o"))
    with pytest.raises(InputError, match="does not match the slice pattern"):
        prepare_data.group_slices([str(tmp_path / "noindex.nii.gz")])


def test_make_datalist_pairs_by_subject(tmp_path, capsys):
    for s in ("sub-1", "sub-2", "sub-3", "sub-4"):
        save(tmp_path / f"{s}_high.nii.gz", phantom())
        save(tmp_path / f"{s}_low.nii.gz", phantom()[::2, ::2, ::2], np.diag([2.0, 2.0, 2.0, 1.0]))
        save(tmp_path / f"{s}_mask.nii.gz", (phantom() > 0.1).astype(np.uint8))
    save(tmp_path / "sub-9_low.nii.gz", phantom())  # no partner
    out = prepare_data.make_datalist(str(tmp_path), str(tmp_path), str(tmp_path / "dl.json"), mask_dir=str(tmp_path),
                                     low_contains="_low", high_contains="_high", mask_contains="_mask",
                                     n_val=1, n_test=1, seed=3)
    d = load_datalist(out)
    subjects = [it["subject"] for split in d.values() for it in split]
    assert sorted(subjects) == ["sub-1", "sub-2", "sub-3", "sub-4"]
    assert all(it["mask"].endswith("_mask.nii.gz") for split in d.values() for it in split)
    assert "sub-9" in capsys.readouterr().out
    far = np.eye(4)
    far[:3, 3] = 1000
    save(tmp_path / "sub-1_low.nii.gz", phantom(), far)
    with pytest.raises(InputError, match="do not overlap"):
        prepare_data.make_datalist(str(tmp_path), str(tmp_path), str(tmp_path / "dl2.json"), low_contains="_low",
                                   high_contains="_high")


@pytest.mark.parametrize("simulator", ["tissue", "blurgamma"])
def test_simulate_writes_pairs_and_datalist(tmp_path, simulator):
    highs = tmp_path / "high"
    highs.mkdir()
    for i in range(3):
        save(highs / f"s{i}.nii.gz", phantom((32, 36, 48), seed=i))
    path = prepare_data.simulate(str(highs), str(tmp_path / "sim"), simulator=simulator, seed=5, n_val=1, n_test=1)
    d = load_datalist(path)
    items = d["training"] + d["validation"] + d["testing"]
    assert len(items) == 3 and all(os.path.isfile(it["low"]) for it in items)
    low = nib.load(items[0]["low"])
    zooms = (1.0, 1.0, 8.0) if simulator == "tissue" else (1.6, 1.6, 5.0)
    assert np.allclose(low.header.get_zooms(), zooms, atol=1e-4)
    if simulator == "tissue":
        assert all(it["snr_wm"] > 0 for it in items)  # the drawn SNRs are recorded per subject


@pytest.mark.slow
def test_demo_data_is_deterministic_and_well_formed(tmp_path):
    """The first demo set (``--degradation tissue_contrast``), reproducible: 1.6 x 1.6 x 5 mm, the T1w SNR draw."""
    pytest.importorskip("nilearn")
    import make_demo_data

    path = make_demo_data.main(out_dir=str(tmp_path / "demo"), degradation="tissue_contrast", n_subjects=3, n_val=1,
                               n_test=1, seed=4, preview=False)
    d = load_datalist(path)
    assert [len(d[s]) for s in ("training", "validation", "testing")] == [1, 1, 1]
    item = d["training"][0]
    high, low, mask = (nib.load(item[k]) for k in ("high", "low", "mask"))
    assert high.shape == (160, 192, 168) and np.allclose(high.header.get_zooms(), (1, 1, 1))
    assert np.allclose(low.header.get_zooms(), (1.6, 1.6, 5.0), atol=1e-4) and low.shape == (100, 120, 33)
    assert set(np.unique(mask.get_fdata())) <= {0.0, 1.0}
    raw = json.loads(open(path).read())["training"][0]
    assert 30 < raw["snr_wm"] < 100 and 25 < raw["snr_gm"] < 90  # the T1w SNR Gaussian of Lin et al. 2023's code
    # the same seed rebuilds the same subject (up to the on-disk quantisation)
    i = int(item["subject"].split("-")[1])
    again = make_demo_data.make_subject(make_demo_data.load_template(), seed=4 * 10007 + 17 * i,
                                        degradation="tissue_contrast")
    step = float(np.abs(high.get_fdata()).max()) / 255
    assert np.abs(again["high"][0].numpy() - high.get_fdata()).max() <= step
    assert np.abs(again["low"][0].numpy() - low.get_fdata()).max() <= float(np.abs(low.get_fdata()).max()) / 32767 * 1.01


@pytest.mark.slow
def test_randomised_demo_data_records_its_draws_and_varies_the_acquisition(tmp_path):
    """The default demo set: each subject's low field has its own drawn geometry, recorded in the datalist."""
    pytest.importorskip("nilearn")
    import make_demo_data

    path = make_demo_data.main(out_dir=str(tmp_path / "demo"), n_subjects=3, n_val=1, n_test=1, seed=1, preview=False)
    raw = json.loads(open(path).read())
    items = [it for split in ("training", "validation", "testing") for it in raw[split]]
    d = load_datalist(path)
    for it, loaded in zip(items, [x for s in ("training", "validation", "testing") for x in d[s]]):
        draws = it["degradation"]
        low = nib.load(loaded["low"])
        zooms = np.asarray(low.header.get_zooms())
        thick = draws["slice_thickness_mm"] + draws["slice_gap_mm"]
        assert zooms[draws["axis"]] == pytest.approx(thick, abs=1e-3)  # the drawn slice spacing on the drawn axis
        assert 2 <= draws["slice_thickness_mm"] <= 7 and 4 <= draws["snr_wm"] <= 60 and draws["psf"] in ("kspace",
                                                                                                         "gaussian")
        assert np.isfinite(low.get_fdata()).all()
    assert len({it["degradation"]["slice_thickness_mm"] for it in items}) == 3  # a new draw per subject


def test_demo_sets_split_each_anatomy_the_same_way():
    """sub-XXX is one anatomy in every demo set: the 24-subject randomised set keeps the 16-subject set's split for
    its first 16 (so no test anatomy of one set is trained on in the other), and the default counts still hold."""
    import make_demo_data

    from shared_transforms.io.datalist import split_subjects

    names = [f"sub-{i:03d}" for i in range(24)]
    first = split_subjects(names[:16], 3, 3, seed=0)
    nested = make_demo_data.nested_splits(names, 4, 4, seed=0)
    assert [len(nested[s]) for s in ("training", "validation", "testing")] == [16, 4, 4]
    for split in first:
        assert set(first[split]) <= set(nested[split])
    assert make_demo_data.nested_splits(names[:16], 3, 3, seed=0) == first  # the first set's split, unchanged
    assert sorted(s for subs in nested.values() for s in subs) == names


def test_merge_datalists_cli(tmp_path, capsys):
    import merge_datalists
    from conftest import tiny_subjects

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a, b = tiny_subjects(tmp_path / "a", 2, (1, 1, 0)), tiny_subjects(tmp_path / "b", 2, (1, 1, 0))
    out = merge_datalists.main(str(tmp_path / "m" / "datalist.json"), random=a["datalist"], demo=b["datalist"])
    assert [it["subject"] for it in load_datalist(out)["training"]] == ["random_t0", "demo_t0"]
    with pytest.raises(SystemExit, match="two sources"):
        merge_datalists.main(str(tmp_path / "n.json"), random=a["datalist"])
    # a weight on one source lists its training items that many times, and nothing else
    out = merge_datalists.main(str(tmp_path / "w.json"), training_repeats={"demo": 2}, random=a["datalist"],
                               demo=b["datalist"])
    merged = load_datalist(out)
    assert [it["subject"] for it in merged["training"]] == ["random_t0", "demo_t0", "demo_t0"]
    assert [it["subject"] for it in merged["validation"]] == ["random_t1", "demo_t1"]
    with pytest.raises(InputError, match="not a source"):
        merge_datalists.main(str(tmp_path / "x.json"), training_repeats={"scanner": 2}, random=a["datalist"],
                             demo=b["datalist"])
    with pytest.raises(InputError, match=">= 1"):
        merge_datalists.main(str(tmp_path / "x.json"), training_repeats={"demo": 0}, random=a["datalist"],
                             demo=b["datalist"])
