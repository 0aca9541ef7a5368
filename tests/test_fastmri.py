"""Tests for shared_transforms.kspace.fastmri: fastMRI single-coil HDF5 reading, writing, centre crop and
LoadFastMRId."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from monai.apps.reconstruction.complex_utils import complex_abs
from monai.data import list_data_collate
from monai.transforms import Compose

from shared_transforms.errors import InputError, find_input_error
from shared_transforms.io.ownership import written_by
from shared_transforms.kspace.fastmri import (
    FASTMRI_CROP,
    OWNER_ATTR,
    LoadFastMRId,
    center_crop,
    count_slices,
    read_singlecoil_h5,
)
from shared_transforms.kspace.fastmri_writer import write_singlecoil_h5
from shared_transforms.kspace.fourier import ifft2c, kspace_from_magnitude
from shared_transforms.kspace.sampling import CartesianUndersampled

CROP = (16, 16)  # a small stand-in for fastMRI's 320 x 320 in the tiny files


def _phantom(s: int = 3, h: int = 24, w: int = 20, seed: int = 0) -> torch.Tensor:
    """Nonnegative magnitude slices (S, H, W): an ellipse with texture, different per slice."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    ellipse = ((yy / 0.8) ** 2 + (xx / 0.6) ** 2 < 1).float()
    return ellipse * (0.5 + 0.5 * torch.rand(s, h, w, generator=g))


def _reference(kspace: torch.Tensor) -> torch.Tensor:
    """fastMRI's reconstruction_esc: |centre crop of F^H k| (here cropped to CROP)."""
    return complex_abs(center_crop(ifft2c(kspace), CROP, is_complex=True))


@pytest.fixture
def tiny_file(tmp_path):
    mag = _phantom()
    kspace = kspace_from_magnitude(mag)  # (S, H, W, 2)
    path = write_singlecoil_h5(tmp_path / "file1000001.h5", kspace, _reference(kspace),
                               {"acquisition": "CORPD_FBK", "patient_id": "p1"})
    return {"path": path, "magnitude": mag, "kspace": kspace}


def _raw_h5(path, **datasets) -> str:
    """An HDF5 file written directly with h5py (not by write_singlecoil_h5): for the bad-input cases."""
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            if value is None:
                f.create_group(name)
            else:
                f.create_dataset(name, data=value)
    return str(path)


def _complex(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


# ------------------------------------------------------------------------------------------------- round trip


def test_round_trip_inverse_fft_gives_phantom(tiny_file):
    sample = read_singlecoil_h5(tiny_file["path"])
    assert sample.kspace.shape == (3, 24, 20, 2) and sample.kspace.dtype == np.float32
    assert sample.num_slices == 3
    np.testing.assert_allclose(sample.kspace, tiny_file["kspace"].numpy(), atol=1e-6, rtol=0)
    image = complex_abs(ifft2c(torch.as_tensor(sample.kspace)))  # (S, H, W)
    torch.testing.assert_close(image, tiny_file["magnitude"], atol=1e-5, rtol=0)
    assert sample.reconstruction.shape == (3, *CROP) and sample.reconstruction.dtype == np.float32
    torch.testing.assert_close(torch.as_tensor(sample.reconstruction), center_crop(tiny_file["magnitude"], CROP),
                               atol=1e-5, rtol=0)
    assert sample.attrs["acquisition"] == "CORPD_FBK" and sample.attrs["patient_id"] == "p1"
    assert sample.attrs["max"] == pytest.approx(float(sample.reconstruction.max()))
    assert sample.attrs["norm"] == pytest.approx(float(np.linalg.norm(sample.reconstruction)), rel=1e-5)
    assert "ismrmrdHeader" in sample.header and "<x>24</x><y>20</y>" in sample.header


def test_read_one_slice(tiny_file):
    whole = read_singlecoil_h5(tiny_file["path"])
    for index in (1, -1):
        one = read_singlecoil_h5(tiny_file["path"], slice_index=index)
        assert one.kspace.shape == (1, 24, 20, 2) and one.reconstruction.shape == (1, *CROP)
        np.testing.assert_array_equal(one.kspace[0], whole.kspace[index])
        np.testing.assert_array_equal(one.reconstruction[0], whole.reconstruction[index])
    assert count_slices(tiny_file["path"]) == 3


def test_file_layout_is_fastmri(tiny_file):
    with h5py.File(tiny_file["path"], "r") as f:
        assert f["kspace"].dtype == np.complex64 and f["kspace"].shape == (3, 24, 20)
        assert f["reconstruction_esc"].dtype == np.float32 and f["reconstruction_esc"].shape == (3, *CROP)
        assert f["ismrmrd_header"].shape == ()
        assert isinstance(f["ismrmrd_header"][()], bytes)
        assert f.attrs[OWNER_ATTR] == "lfmri:write_singlecoil_h5"
    assert written_by(tiny_file["path"]) == "write_singlecoil_h5"


def test_writer_without_reference_and_complex_input(tmp_path):
    path = write_singlecoil_h5(tmp_path / "test.h5", _complex((2, 8, 6)))
    sample = read_singlecoil_h5(path)
    assert sample.reconstruction is None and "max" not in sample.attrs
    assert sample.kspace.shape == (2, 8, 6, 2)


# ------------------------------------------------------------------------------------------------- ownership


def test_writer_replaces_its_own_file_only(tmp_path, tiny_file):
    path = tiny_file["path"]
    write_singlecoil_h5(path, _complex((1, 8, 6)))  # its own file: replaced
    assert read_singlecoil_h5(path).num_slices == 1
    with pytest.raises(InputError, match="was written by write_singlecoil_h5, not by demo") as err:
        write_singlecoil_h5(path, _complex((1, 8, 6)), owner="demo")
    assert err.value.source == path
    foreign = _raw_h5(tmp_path / "user.h5", kspace=_complex((1, 8, 6)))
    with pytest.raises(InputError, match="not written by"):
        write_singlecoil_h5(foreign, _complex((1, 8, 6)))
    text = tmp_path / "notes.h5"
    text.write_text("mine")
    with pytest.raises(InputError, match="refusing to overwrite"):
        write_singlecoil_h5(text, _complex((1, 8, 6)))
    assert text.read_text() == "mine"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp_")]  # nothing half-written left behind


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        write_singlecoil_h5(tmp_path / "bad.h5", np.full((1, 4, 4), np.nan, dtype=np.complex64))
    with pytest.raises(ValueError, match="slices, H, W, 2"):
        write_singlecoil_h5(tmp_path / "bad.h5", np.zeros((4, 4, 2), dtype=np.float32))
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------- centre crop


@pytest.mark.parametrize("hw", [(330, 341), (640, 368), (321, 320)])
def test_center_crop_matches_fastmri(hw):
    h, w = hw
    x = np.random.default_rng(0).standard_normal((2, h, w)).astype(np.float32)
    top, left = (h - 320) // 2, (w - 320) // 2  # fastMRI data/transforms.py center_crop
    expected = x[:, top:top + 320, left:left + 320]
    out = center_crop(x)
    assert isinstance(out, np.ndarray) and out.shape == (2, *FASTMRI_CROP)
    np.testing.assert_array_equal(out, expected)
    xc = torch.as_tensor(np.stack([x, -x], axis=-1))  # (2, H, W, 2)
    outc = center_crop(xc, is_complex=True)
    assert isinstance(outc, torch.Tensor) and outc.shape == (2, 320, 320, 2)
    torch.testing.assert_close(outc[..., 0], torch.as_tensor(expected))


def test_center_crop_refuses_small_images():
    with pytest.raises(ValueError, match="smaller than the crop"):
        center_crop(np.zeros((1, 300, 400)))
    with pytest.raises(ValueError, match="channel-first"):
        center_crop(np.zeros((320, 320)))


# ------------------------------------------------------------------------------------------------- bad inputs


def _bad_files(tmp_path) -> dict[str, tuple[str, str]]:
    """name -> (path, expected message fragment)."""
    (tmp_path / "text.h5").write_text("not hdf5 at all")
    good = write_singlecoil_h5(tmp_path / "good.h5", _complex((2, 8, 6)))
    data = Path(good).read_bytes()
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 3])
    nan = _complex((2, 8, 6))
    nan[1, 2, 3] = np.nan
    inf = _complex((2, 8, 6))
    inf[0, 0, 0] = np.inf
    return {
        "missing": (str(tmp_path / "absent.h5"), "file not found"),
        "folder": (str(tmp_path), "is a folder"),
        "not_hdf5": (str(tmp_path / "text.h5"), "is not an HDF5 file"),
        "truncated": (str(tmp_path / "truncated.h5"), "readable|cannot be read"),
        "no_kspace": (_raw_h5(tmp_path / "nok.h5", reconstruction_esc=np.zeros((2, 4, 4), np.float32)),
                      "has no 'kspace' dataset"),
        "kspace_group": (_raw_h5(tmp_path / "group.h5", kspace=None), "is a group"),
        "real_kspace": (_raw_h5(tmp_path / "real.h5", kspace=np.zeros((2, 8, 6), np.float32)), "must be complex"),
        "2d_kspace": (_raw_h5(tmp_path / "2d.h5", kspace=_complex((8, 6))), "must be 3D"),
        "5d_kspace": (_raw_h5(tmp_path / "5d.h5", kspace=_complex((1, 2, 2, 8, 6))), "must be 3D"),
        "multicoil": (_raw_h5(tmp_path / "multi.h5", kspace=_complex((2, 4, 8, 6))), "only single-coil"),
        "nan": (_raw_h5(tmp_path / "nan.h5", kspace=nan), "1 NaN and 0 Inf"),
        "inf": (_raw_h5(tmp_path / "inf.h5", kspace=inf), "0 NaN and 1 Inf"),
        "ref_slices": (_raw_h5(tmp_path / "ref.h5", kspace=_complex((2, 8, 6)),
                               reconstruction_esc=np.zeros((3, 4, 4), np.float32)), "has 3 slices"),
        "ref_nan": (_raw_h5(tmp_path / "refnan.h5", kspace=_complex((2, 8, 6)),
                            reconstruction_esc=np.full((2, 4, 4), np.nan, np.float32)), "reconstruction_esc"),
    }


def test_every_bad_file_raises_input_error_naming_it(tmp_path):
    for name, (path, message) in _bad_files(tmp_path).items():
        with pytest.raises(InputError, match=message) as err:
            read_singlecoil_h5(path)
        assert err.value.source == path, name
        assert str(err.value).startswith(path), name


def test_nan_only_in_the_slices_read(tmp_path):
    nan = _complex((2, 8, 6))
    nan[1, 2, 3] = np.nan
    path = _raw_h5(tmp_path / "nan.h5", kspace=nan)
    assert read_singlecoil_h5(path, slice_index=0).kspace.shape == (1, 8, 6, 2)
    with pytest.raises(InputError, match="slice 1 contains 1 NaN"):
        read_singlecoil_h5(path, slice_index=1)


def test_slice_out_of_range(tiny_file):
    with pytest.raises(InputError, match="out of range: the file holds 3 slices") as err:
        read_singlecoil_h5(tiny_file["path"], slice_index=3)
    assert err.value.source == tiny_file["path"]


# ------------------------------------------------------------------------------------------------- transform


def test_load_transform_in_compose(tiny_file):
    pipeline = Compose([
        LoadFastMRId("kspace", slice_key="slice", require_target=True),
        CartesianUndersampled("kspace", acceleration=4, center_fraction=0.1),
    ])
    pipeline.set_random_state(0)
    items = [pipeline({"kspace": tiny_file["path"], "slice": i}) for i in (0, 2)]
    d = items[1]
    assert d["kspace"].shape == (1, 24, 20, 2) and d["kspace"].dtype == torch.float32
    assert d["target"].shape == (1, *CROP)
    assert d["kspace_masked"].shape == (1, 24, 20, 2) and d["zero_filled"].shape == (1, 24, 20)
    meta = d["kspace_meta_dict"]
    assert meta["filename_or_obj"] == tiny_file["path"] and meta["slice_index"] == 2 and meta["num_slices"] == 3
    assert meta["attrs"]["acquisition"] == "CORPD_FBK"
    torch.testing.assert_close(complex_abs(ifft2c(d["kspace"])), tiny_file["magnitude"][2:3], atol=1e-5, rtol=0)
    batch = list_data_collate(items)
    assert batch["kspace"].shape == (2, 1, 24, 20, 2) and batch["sampling_mask"].shape == (2, 1, 1, 20, 1)


def test_load_transform_whole_file_and_names(tiny_file):
    d = LoadFastMRId("path", kspace_keys="k", target_keys="ref", meta_keys="m")({"path": tiny_file["path"]})
    assert d["path"] == tiny_file["path"]
    assert d["k"].shape == (3, 24, 20, 2) and d["ref"].shape == (3, *CROP) and d["m"]["slice_index"] == -1


def test_load_transform_errors_name_the_file(tmp_path):
    bad = _raw_h5(tmp_path / "multi.h5", kspace=_complex((2, 4, 8, 6)))
    with pytest.raises(Exception) as err:  # MONAI's Compose wraps the error in a RuntimeError
        Compose([LoadFastMRId("kspace")])({"kspace": bad})
    found = find_input_error(err.value)
    assert found is not None and found.source == bad and "only single-coil" in found.problem
    no_ref = write_singlecoil_h5(tmp_path / "noref.h5", _complex((1, 8, 6)))
    with pytest.raises(InputError, match="no reference 'reconstruction_esc'") as err:
        LoadFastMRId("kspace", require_target=True)({"kspace": no_ref})
    assert err.value.source == no_ref
    d = LoadFastMRId("kspace")({"kspace": no_ref})  # inference: no reference needed
    assert "target" not in d and d["kspace"].shape == (1, 8, 6, 2)
    with pytest.raises(InputError, match="expects a file path"):
        LoadFastMRId("kspace")({"kspace": torch.zeros(3)})
