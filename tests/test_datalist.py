"""The contract's datalist: resolution of relative paths, and each bad datalist's error."""

from __future__ import annotations

import json
import os

import pytest

from shared_transforms.datalist import inference_items, load_datalist, load_split, split_subjects, write_datalist
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
    assert inference_items(tiny_pair["low"]) == [{"image": tiny_pair["low"]}]
    assert [os.path.basename(i["image"]) for i in inference_items(str(tmp_path))] == [
        "s1_high.nii.gz", "s1_low.nii.gz", "s1_mask.nii.gz"]
    p = _write(tmp_path / "d.json", {"testing": [{"subject": "s1", "low": tiny_pair["low"], "high": tiny_pair["high"]}]})
    assert inference_items(p) == [{"image": tiny_pair["low"]}]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no input files \(\.nii or \.nii\.gz\)"):
        inference_items(tmp_path / "empty")
    with pytest.raises(InputError, match="not found"):
        inference_items(tmp_path / "missing.nii.gz")


def test_input_kinds_decide_the_keys(tmp_path, tiny_pair):
    """The datalist loader follows the bundle's declared input kind, not a fixed low/high layout."""
    from shared_transforms.datalist import pair_items
    from shared_transforms.input_kinds import INPUT_KINDS, input_kind

    item = {"subject": "s1", "low": tiny_pair["low"], "high": tiny_pair["high"], "mask": tiny_pair["mask"]}
    p = _write(tmp_path / "d.json", {"testing": [item]})
    assert pair_items(p, "testing") == [{"image": tiny_pair["low"], "label": tiny_pair["high"],
                                         "mask": tiny_pair["mask"], "subject": "s1"}]
    # an image-to-under-sample bundle (flat) reads the image as its reference, and a low/high datalist lacks its key
    with pytest.raises(InputError, match=r"lacks the key\(s\) \['image'\]"):
        pair_items(p, "testing", "image_to_undersample")
    img = _write(tmp_path / "i.json", {"testing": [{"subject": "s1", "image": tiny_pair["high"]}]})
    assert pair_items(img, "testing", "image_to_undersample") == [{"label": tiny_pair["high"], "subject": "s1"}]
    assert inference_items(img, kind="image_to_undersample") == [{"image": tiny_pair["high"]}]
    (tmp_path / "h5").mkdir()
    (tmp_path / "h5" / "file1.h5").write_bytes(b"")
    (tmp_path / "h5" / "notes.nii.gz").write_bytes(b"")
    assert [os.path.basename(i["image"]) for i in inference_items(tmp_path / "h5", kind="kspace_hdf5")] == ["file1.h5"]
    with pytest.raises(InputError, match="unknown input kind 'dicom'"):
        input_kind("dicom")
    assert set(INPUT_KINDS) == {"lowfield_nifti", "kspace_hdf5", "image_to_undersample"}
