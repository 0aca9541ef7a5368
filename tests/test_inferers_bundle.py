"""The 2D slice inferer (skips empty slices, crops to the content) and the bundle helpers."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from shared_transforms.engine.bundle import activate_bundle, bundle_root, setup_bundle
from shared_transforms.inference.inferers import SliceInferer2D, VolumeInferer, foreground_box


def test_foreground_box_is_divisible_and_inside():
    fg = torch.zeros(50, 60, dtype=torch.bool)
    fg[10:21, 30:33] = True
    y0, y1, z0, z1 = foreground_box(fg, margin=2, divisible_by=8)
    assert (y1 - y0) % 8 == 0 and (z1 - z0) % 8 == 0
    assert y0 <= 8 and y1 >= 23 and z0 <= 28 and z1 >= 35 and y1 <= 50 and z1 <= 60
    y0, y1, z0, z1 = foreground_box(torch.ones(5, 6, dtype=torch.bool), margin=2, divisible_by=8)
    assert (y0, y1, z0, z1) == (0, 8, 0, 8)  # larger than the image: padded by the inferer


def test_slice_inferer_matches_a_pointwise_network_and_skips_empty_slices():
    torch.manual_seed(0)
    vol = torch.zeros(2, 1, 12, 30, 26)
    vol[:, :, 3:9, 5:20, 4:17] = torch.rand(2, 1, 6, 15, 13) + 0.1
    net = torch.nn.Conv2d(1, 2, 1)
    calls = []

    def counting(x):
        calls.append(x.shape)
        assert x.shape[-1] % 8 == 0 and x.shape[-2] % 8 == 0
        return net(x)

    inferer = SliceInferer2D(slice_batch_size=4, spatial_dim=0, margin_vox=1)
    with torch.no_grad():
        out = inferer(vol, counting)
        ref = net(vol[0].movedim(1, 0)).movedim(0, 1)  # every slice, no cropping
    assert out.shape == (2, 2, 12, 30, 26)
    assert inferer.last_stats["computed_units"] == 6 and sum(c[0] for c in calls) == 12  # 6 slices x 2 volumes
    assert inferer.last_stats["network_evaluations"] == 6 and isinstance(inferer, VolumeInferer)
    inside = vol[0, 0] > 0
    assert torch.allclose(out[0][:, inside], ref[:, inside], atol=1e-6)
    assert torch.all(out[0, :, :3] == 0)  # empty slices were not computed


@pytest.mark.parametrize("dim", [1, 2])
def test_slice_inferer_other_axes(dim):
    vol = torch.rand(1, 1, 9, 10, 11)
    out = SliceInferer2D(spatial_dim=dim, empty_threshold=-1)(vol, lambda x: x * 2)
    assert torch.allclose(out, vol * 2)


def test_bundle_root_and_scripts_isolation(tmp_path, monkeypatch):
    for name in ("one", "two"):
        (tmp_path / "bundles" / name / "configs").mkdir(parents=True)
        (tmp_path / "bundles" / name / "configs" / "metadata.json").write_text("{}")
        (tmp_path / "bundles" / name / "scripts").mkdir()
        (tmp_path / "bundles" / name / "scripts" / "__init__.py").write_text(f"NAME = '{name}'\n")
    monkeypatch.chdir(tmp_path)
    saved = {k: v for k, v in sys.modules.items() if k == "scripts" or k.startswith("scripts.")}
    saved_path, saved_hook = list(sys.path), sys.excepthook
    try:
        for k in list(saved):
            del sys.modules[k]
        root = bundle_root("one")
        assert root.endswith("bundles/one")
        assert sys.path == saved_path and sys.excepthook is saved_hook  # finding a folder changes nothing
        setup_bundle(root)  # the explicit step every config's initialize runs first
        assert getattr(sys.excepthook, "_lfmri", False)
        import scripts

        assert scripts.NAME == "one"
        activate_bundle(tmp_path / "bundles" / "two")
        import scripts as scripts2  # noqa: F811

        assert scripts2.NAME == "two"
        monkeypatch.chdir(tmp_path / "bundles" / "two")
        assert bundle_root("two").endswith("bundles/two")
        with pytest.raises(FileNotFoundError, match="cannot find the bundle 'three'"):
            bundle_root("three")
    finally:
        for k in [k for k in sys.modules if k == "scripts" or k.startswith("scripts.")]:
            del sys.modules[k]
        sys.modules.update(saved)
        sys.path[:] = saved_path
        sys.excepthook = saved_hook
    assert isinstance(types, object)


def test_precision_auto_follows_the_hardware_and_bad_values_raise(monkeypatch):
    from shared_transforms.inference import inferers

    assert inferers.resolve_precision("cpu", "float16") == "float16"
    for fast, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(inferers, "fast_bfloat16", lambda device_type, fast=fast: fast)
        assert inferers.resolve_precision("cpu", "auto") == expected
        with inferers.autocast("cpu", "auto"), torch.no_grad():
            y = torch.nn.Linear(4, 4)(torch.rand(2, 4))
        assert y.dtype == (torch.bfloat16 if fast else torch.float32)
    with pytest.raises(ValueError, match="precision must be one of"):
        inferers.resolve_precision("cpu", "half")
    assert inferers.fast_bfloat16("mps") is False


def test_auto_slicing_puts_the_thick_axis_in_plane_along_the_width():
    """The thick axis of the acquisition (from ``original_affine``) always lies in the slice plane, as the width."""
    from monai.data import MetaTensor

    from shared_transforms.inference.inferers import slicing_plan, thick_axis

    ras_1mm = np.eye(4)
    assert thick_axis(np.diag([1.6, 1.6, 5.0, 1]), ras_1mm) == 2  # axial acquisition
    assert thick_axis(np.diag([1.0, 1.0, 1.1, 1]), ras_1mm) is None  # near-isotropic
    # a sagittal acquisition stored with its slices along the file's third axis: that axis points along world x
    sag = np.array([[0, 0, 6.0, 0], [1.2, 0, 0, 0], [0, 1.2, 0, 0], [0, 0, 0, 1]])
    assert thick_axis(sag, ras_1mm) == 0
    assert slicing_plan(2) == (0, False) and slicing_plan(None) == (0, False)
    assert slicing_plan(1) == (0, True)  # coronal: sagittal slices, transposed so y lies along the width
    assert slicing_plan(0) == (1, True)  # sagittal: coronal slices (x, z), transposed so x lies along the width

    seen = []

    def net(x):
        seen.append(tuple(x.shape[-2:]))
        return x

    vol = torch.zeros(1, 1, 16, 24, 32)
    vol[..., 2:14, 2:22, 2:30] = torch.rand(1, 1, 12, 20, 28)
    for original, expected_dim in ((np.diag([1.6, 1.6, 5.0, 1]), 0), (sag, 1)):
        batch = MetaTensor(vol.clone(), affine=torch.eye(4), meta={"original_affine": torch.as_tensor(original)})
        inferer = SliceInferer2D(spatial_dim="auto", margin_vox=0, empty_threshold=-1)
        out = inferer(batch, net)
        assert torch.equal(out, vol)  # slicing and transposing are undone exactly
        assert inferer.last_stats["spatial_dim"] == expected_dim
    assert seen[-1] == (32, 16)  # coronal slices (x, z) of the sagittal scan, transposed: x (thick) is the width
    with pytest.raises(ValueError, match="'auto'"):
        SliceInferer2D(spatial_dim="sideways")


def test_orthogonal_average_is_the_mean_of_the_two_slicings_with_the_thick_axis_in_plane():
    from monai.data import MetaTensor

    from shared_transforms.inference.inferers import orthogonal_plan, slicing_plan

    for thick in (0, 1, 2):  # both plans put the thick axis along the slice width
        for dim, transpose in (slicing_plan(thick), orthogonal_plan(*slicing_plan(thick))):
            height, width = (a for a in range(3) if a != dim)
            assert (height if transpose else width) == thick
        assert orthogonal_plan(*slicing_plan(thick))[0] != slicing_plan(thick)[0]

    def net(x):  # depends on the slice orientation: a cumulative sum along the slice height (y or x here)
        return x.cumsum(-2)

    vol = torch.zeros(1, 1, 16, 24, 32)
    vol[..., 2:14, 2:22, 2:30] = torch.rand(1, 1, 12, 20, 28)
    meta = {"original_affine": torch.as_tensor(np.diag([1.6, 1.6, 5.0, 1]))}  # axial: sagittal + coronal slices
    kw = {"margin_vox": 0, "empty_threshold": -1, "divisible_by": 1}
    both = SliceInferer2D(spatial_dim="auto", orthogonal_average=True, **kw)
    out = both(MetaTensor(vol.clone(), affine=torch.eye(4), meta=meta), net)
    sagittal = SliceInferer2D(spatial_dim=0, **kw)(vol, net)
    coronal = SliceInferer2D(spatial_dim=1, **kw)(vol, net)
    assert torch.allclose(out, 0.5 * (sagittal + coronal), atol=1e-6)
    assert not torch.allclose(sagittal, coronal, atol=1e-3)  # the two differ, so the test can fail
    assert both.last_stats["orthogonal_dim"] == 1 and both.last_stats["units"] == 16 + 24
