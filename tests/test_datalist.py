"""The contract's datalist: resolution of relative paths, and each bad datalist's error."""

from __future__ import annotations

import json
import os

import pytest

from shared_transforms.io.datalist import inference_items, load_datalist, load_split, split_subjects, write_datalist
from shared_transforms.errors import InputError


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_relative_paths_resolve_against_the_datalist(tmp_path, tiny_pair):
    (tmp_path / "lists").mkdir()
    p = _write(tmp_path / "lists" / "d.json", {"training": [{"subject": "s1", "low": "../s1_low.nii.gz",
                                                             "high": "../s1_high.nii.gz"}]})
    d = load_datalist(p)
    assert d["training"][0]["low"] == tiny_pair["low"] and d["validation"] == [] and d["testing"] == []
    with pytest.raises(InputError, match="'testing' split is empty"):
        load_split(p, "testing")


def test_missing_key_names_the_item(tmp_path, tiny_pair):
    p = _write(tmp_path / "d.json", {"training": [{"subject": "s1", "low": tiny_pair["low"]}]})
    with pytest.raises(InputError, match=r"\['training'\]\[0\].*lacks the key\(s\) \['high'\]"):
        load_datalist(p)


def test_subject_in_two_splits(tmp_path, tiny_pair):
    item = {"subject": "s1", "low": tiny_pair["low"], "high": tiny_pair["high"]}
    p = _write(tmp_path / "d.json", {"training": [item], "testing": [item]})
    with pytest.raises(InputError, match="subject 's1' is in both 'training' and 'testing'"):
        load_datalist(p)


def test_missing_file_and_bad_json(tmp_path, tiny_pair):
    p = _write(tmp_path / "d.json", {"training": [{"subject": "s1", "low": "gone.nii.gz", "high": tiny_pair["high"]}]})
    with pytest.raises(InputError, match="gone.nii.gz: file not found"):
        load_datalist(p)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_datalist(bad)
    with pytest.raises(InputError, match="datalist file not found"):
        load_datalist(tmp_path / "none.json")


def test_seeded_subject_split_is_disjoint_and_reproducible():
    subjects = [f"s{i}" for i in range(20)]
    a = split_subjects(subjects, n_val=3, n_test=0.2, seed=1)
    b = split_subjects(reversed(subjects), n_val=3, n_test=0.2, seed=1)
    assert a == b and len(a["validation"]) == 3 and len(a["testing"]) == 4 and len(a["training"]) == 13
    assert not (set(a["training"]) & set(a["testing"])) and not (set(a["validation"]) & set(a["testing"]))
    assert split_subjects(subjects, 3, 4, seed=2) != a
    with pytest.raises(ValueError):
        split_subjects(["a", "b"], 1, 1)


def test_write_then_load_round_trip(tmp_path, tiny_pair):
    items = [{"subject": f"s{i}", "low": tiny_pair["low"], "high": tiny_pair["high"]} for i in range(5)]
    write_datalist(items, tmp_path / "out" / "d.json", n_val=1, n_test=1, seed=0)
    raw = json.loads((tmp_path / "out" / "d.json").read_text())
    assert not os.path.isabs(raw["training"][0]["low"])  # relative: the folder can move
    d = load_datalist(tmp_path / "out" / "d.json")
    assert [len(d[s]) for s in ("training", "validation", "testing")] == [3, 1, 1]


def test_inference_items(tmp_path, tiny_pair):
    assert inference_items(tiny_pair["low"]) == [{"image": tiny_pair["low"], "output_stem": "s1_low"}]
    assert [os.path.basename(i["image"]) for i in inference_items(str(tmp_path))] == [
        "s1_high.nii.gz", "s1_low.nii.gz", "s1_mask.nii.gz"]
    p = _write(tmp_path / "d.json", {"testing": [{"subject": "s1", "low": tiny_pair["low"], "high": tiny_pair["high"]}]})
    assert inference_items(p) == [{"image": tiny_pair["low"], "output_stem": "s1_low"}]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no input files \(\.nii or \.nii\.gz\)"):
        inference_items(tmp_path / "empty")
    with pytest.raises(InputError, match="not found"):
        inference_items(tmp_path / "missing.nii.gz")


def test_input_kinds_decide_the_keys(tmp_path, tiny_pair):
    """The datalist loader follows the bundle's declared input kind, not a fixed low/high layout."""
    from shared_transforms.io.datalist import pair_items
    from shared_transforms.io.input_kinds import INPUT_KINDS, input_kind

    item = {"subject": "s1", "low": tiny_pair["low"], "high": tiny_pair["high"], "mask": tiny_pair["mask"]}
    p = _write(tmp_path / "d.json", {"testing": [item]})
    assert pair_items(p, "testing") == [{"image": tiny_pair["low"], "label": tiny_pair["high"],
                                         "mask": tiny_pair["mask"], "subject": "s1"}]
    # an image-to-under-sample bundle (flat) trains on a paired datalist as it is: the high field is its reference
    assert pair_items(p, "testing", "image_to_undersample") == [{"label": tiny_pair["high"], "mask": tiny_pair["mask"],
                                                                 "subject": "s1"}]
    low_only = _write(tmp_path / "l.json", {"testing": [{"subject": "s1", "low": tiny_pair["low"]}]})
    with pytest.raises(InputError, match=r"lacks the key\(s\) \['high'\]"):
        pair_items(low_only, "testing", "image_to_undersample")
    img = _write(tmp_path / "i.json", {"testing": [{"subject": "s1", "high": tiny_pair["high"]}]})
    assert inference_items(img, kind="image_to_undersample") == [{"image": tiny_pair["high"], "output_stem": "s1_high"}]
    (tmp_path / "h5").mkdir()
    (tmp_path / "h5" / "file1.h5").write_bytes(b"")
    (tmp_path / "h5" / "notes.nii.gz").write_bytes(b"")
    assert [os.path.basename(i["image"]) for i in inference_items(tmp_path / "h5", kind="kspace_hdf5")] == ["file1.h5"]
    with pytest.raises(InputError, match="unknown input kind 'dicom'"):
        input_kind("dicom")
    assert set(INPUT_KINDS) == {"lowfield_nifti", "kspace_hdf5", "image_to_undersample"}


def test_given_splits_and_merged_datalists(tmp_path):
    from conftest import tiny_subjects

    from shared_transforms.io.datalist import merge_datalists

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a, b = tiny_subjects(tmp_path / "a", 3, (1, 1, 1)), tiny_subjects(tmp_path / "b", 2, (1, 0, 1))
    # a given split decides, and must name every subject
    written = write_datalist(a["items"], tmp_path / "a" / "given.json", splits={
        "training": ["t2"], "validation": ["t0"], "testing": ["t1"]})
    assert [it["subject"] for it in written["training"]] == ["t2"]
    with pytest.raises(ValueError, match="t2"):
        write_datalist(a["items"], tmp_path / "x.json", splits={"training": ["t0"], "testing": ["t1"]})
    (tmp_path / "mix").mkdir()
    out = tmp_path / "mix" / "datalist.json"
    merge_datalists({"scanner_a": a["datalist"], "scanner_b": b["datalist"]}, out)
    merged = load_datalist(out)  # the rewritten relative paths resolve to the same files
    assert [it["subject"] for it in merged["training"]] == ["scanner_a_t0", "scanner_b_t0"]
    assert [it["subject"] for it in merged["testing"]] == ["scanner_a_t2", "scanner_b_t1"]
    assert merged["training"][1]["high"] == b["items"][0]["high"] and merged["training"][1]["source"] == "scanner_b"
    assert not os.path.isabs(json.loads(out.read_text())["training"][0]["low"])
    with pytest.raises(InputError, match="source name"):
        merge_datalists({"a/b": a["datalist"]}, tmp_path / "y.json")


def test_output_names_are_unique_within_a_run(tmp_path, tiny_pair):
    """Two inputs never write one output: BIDS-style T1w.nii.gz files get their subject (datalist) or their relative
    path (folders), and a.nii beside a.nii.gz is refused before anything is computed, naming both files."""
    import shutil

    from shared_transforms.io.datalist import output_stems

    bids = [tmp_path / f"sub-0{i}" / "anat" / "T1w.nii.gz" for i in (1, 2)]
    for p in bids:
        p.parent.mkdir(parents=True)
        shutil.copyfile(tiny_pair["low"], p)
    p = _write(tmp_path / "bids.json", {"testing": [{"subject": f"sub-0{i}", "low": str(b), "high": str(b)}
                                                    for i, b in zip((1, 2), bids)]})
    items = inference_items(p)
    assert [it["output_stem"] for it in items] == ["sub-01_T1w", "sub-02_T1w"]
    assert output_stems([str(b) for b in bids]) == ["sub-01_anat_T1w", "sub-02_anat_T1w"]  # no subjects: paths
    assert output_stems(["x/a.nii.gz", "x/b.nii.gz"]) == ["a", "b"]  # unique stems stay as they are
    # a subject id never takes an output outside the output folder (issue 9.10)
    assert output_stems([str(b) for b in bids], ["../../etc", "a/b"]) == ["etc_T1w", "a_b_T1w"]
    # an inference datalist needs only the files inference reads: no subject, no high field (issue 9.10)
    p = _write(tmp_path / "low_only.json", {"testing": [{"low": str(bids[0])}, {"low": str(bids[1]),
                                                        "high": str(tmp_path / "not_here.nii.gz")}]})
    assert [it["output_stem"] for it in inference_items(p)] == ["sub-01_anat_T1w", "sub-02_anat_T1w"]
    (tmp_path / "both").mkdir()
    shutil.copyfile(tiny_pair["low"], tmp_path / "both" / "a.nii.gz")
    nib_copy = tmp_path / "both" / "a.nii"
    import nibabel as nib

    nib.save(nib.load(tiny_pair["low"]), str(nib_copy))
    with pytest.raises(InputError, match=r"same output name \(a_<bundle>.nii.gz\)") as info:
        inference_items(str(tmp_path / "both"))
    assert "a.nii.gz" in str(info.value) and "a.nii" in str(info.value)
