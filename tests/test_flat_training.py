"""Tests of the flat bundle's data transform (simulated, under-sampled k-space packed as a volume) and its training
pieces (the trajectory inferer, the target batch, the loss). Tiny sizes; the pipeline itself runs in the contract
test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import load_bundle_scripts
from monai.data import MetaTensor

from shared_transforms.kspace.fourier import apply_mask, fft2c
from shared_transforms.kspace.masks import cartesian_mask

load_bundle_scripts("flat")
from flat_bundle_scripts.flow import velocity_alignment_loss
from flat_bundle_scripts.network import FLATReconstructor, pack_inputs, unpack_inputs
from flat_bundle_scripts.training import FLATLoss, PrepareTargetBatch, TrajectoryInferer, complex_from_channels
from flat_bundle_scripts.transforms import UndersampleVolumed

TINY = {"features": (4, 4, 8, 8, 16, 4), "time_embed_dim": 8, "num_cascades": 3}


def _volume(name="/data/sub-1_high.nii.gz", shape=(16, 24, 6), seed=0):
    affine = torch.diag(torch.tensor([1.0, 1.2, 2.0, 1.0]))
    data = torch.rand(1, *shape, generator=torch.Generator().manual_seed(seed))
    return MetaTensor(data, affine=affine, meta={"filename_or_obj": name})


def test_packed_volume_is_each_axial_slice_masked_in_kspace():
    vol = _volume()
    out = UndersampleVolumed("label", "image", "target", accelerations=[4], center_fractions=[0.08],
                             patterns=["equispaced"], fixed_per_volume=True)({"label": vol})
    packed, target = out["image"], out["target"]
    assert packed.shape == (3, 16, 24, 6) and target.shape == (2, 16, 24, 6)
    assert torch.equal(packed.affine, vol.affine) and packed.meta["filename_or_obj"] == vol.meta["filename_or_obj"]
    info = packed.meta["undersampling"]
    assert (info["acceleration"], info["center_fraction"], info["pattern"]) == (4.0, 0.08, "equispaced")
    columns = packed[2, 0, :, 0] > 0.5
    assert int(columns.sum()) == info["sampled_columns"] and 4 <= int(columns.sum()) <= 8
    for z in range(6):  # every slice: same mask along the phase-encode axis (Y), k-space of the magnitude slice
        assert torch.equal(packed[2, :, :, z] > 0.5, columns[None].expand(16, 24))
        sl = torch.stack([vol[0, :, :, z], torch.zeros(16, 24)], -1)  # (H, W, 2)
        k = apply_mask(fft2c(sl), columns[None, :, None])
        np.testing.assert_allclose(packed[0:2, :, :, z].movedim(0, -1), k, atol=1e-5)
    # the target is the complex image: the magnitude + 0i when no phase is simulated
    np.testing.assert_allclose(target[0], vol[0], atol=1e-5)
    assert target[1].abs().max() < 1e-5


def test_masks_are_fixed_per_file_and_random_in_training():
    vol = _volume()
    fixed = UndersampleVolumed("label", "image", fixed_per_volume=True)
    a, b = fixed({"label": vol})["image"], fixed({"label": vol})["image"]
    assert torch.equal(a, b) and a.meta["undersampling"] == b.meta["undersampling"]
    others = [fixed({"label": _volume(f"/x/sub-{i}.nii.gz")})["image"][2, 0, :, 0] for i in range(6)]
    assert len({tuple(m.tolist()) for m in others}) > 1, "different files get different masks"
    train = UndersampleVolumed("label", "image").set_random_state(0)
    drawn = [train({"label": vol})["image"] for _ in range(8)]
    assert len({tuple(d[2, 0, :, 0].tolist()) for d in drawn}) > 1
    assert {d.meta["undersampling"]["acceleration"] for d in drawn} == {4.0, 8.0}
    # seeded training draws repeat
    again = UndersampleVolumed("label", "image").set_random_state(0)
    assert all(torch.equal(d, again({"label": vol})["image"]) for d in drawn)


def test_bad_settings_and_inputs_are_refused():
    from shared_transforms.errors import InputError

    with pytest.raises(ValueError, match="one centre fraction per acceleration"):
        UndersampleVolumed(accelerations=[4, 8], center_fractions=[0.08])
    with pytest.raises(ValueError, match="patterns must be among"):
        UndersampleVolumed(patterns=["poisson"])
    with pytest.raises(ValueError, match="below 1 / R|center_fraction"):
        UndersampleVolumed(accelerations=[8], center_fractions=[0.2])
    with pytest.raises(InputError, match="single-channel magnitude volume"):
        UndersampleVolumed()({"label": MetaTensor(torch.rand(2, 8, 8, 4), meta={"filename_or_obj": "/a/b.nii"})})
    with pytest.raises(InputError, match="needs the file name"):
        UndersampleVolumed(fixed_per_volume=True)({"label": torch.rand(1, 8, 8, 4)})


def test_trajectory_inferer_ends_where_the_network_does_and_the_loss_follows_its_definition():
    torch.manual_seed(0)
    net = FLATReconstructor(**TINY).eval()
    k = torch.randn(2, 1, 32, 32, 2)
    mask = cartesian_mask((32, 32), 4, 0.08, "random", seed=1)[None, None]  # (1, 1, 1, W, 1)
    x = pack_inputs(k, mask)
    with torch.no_grad():
        traj = TrajectoryInferer("float32")(x, net)
        magnitude = net(x)
    assert traj.shape == (2, 4, 32, 32, 2)
    np.testing.assert_allclose(traj[:, -1].norm(dim=-1, keepdim=False)[:, None], magnitude, atol=1e-5)
    # the first image is the zero-filled one
    y, m = unpack_inputs(x)
    from flat_bundle_scripts.network import zero_filled_image

    np.testing.assert_allclose(traj[:, :1], zero_filled_image(y, m), atol=1e-5)
    target = torch.randn(2, 2, 32, 32)
    x0 = complex_from_channels(target)
    final_only = FLATLoss(net.net.times, alignment_weight=0.0)(traj, target)
    assert torch.isclose(final_only, F.l1_loss(traj[:, -1:], x0))
    both = FLATLoss(net.net.times, alignment_weight=0.5, weighting="inverse_step")(traj, target)
    images = list(traj.split(1, dim=1))
    expected = F.l1_loss(traj[:, -1:], x0) + 0.5 * velocity_alignment_loss(images, net.net.times, x0, "inverse_step")
    assert torch.isclose(both, expected)
    # a trajectory that lies on the straight path costs nothing
    times = net.net.times
    on_path = torch.cat([(1 - t) * x0 + t * traj[:, :1] for t in times], dim=1)
    assert FLATLoss(times, 1.0)(on_path, target) < 1e-6
    with pytest.raises(ValueError, match="expected a trajectory"):
        FLATLoss(times)(traj[:, :2], target)


def test_prepare_batch_gives_the_complex_target():
    batch = {"image": torch.rand(2, 3, 8, 8), "target": torch.rand(2, 2, 8, 8), "label": torch.rand(2, 1, 8, 8)}
    image, target = PrepareTargetBatch()(batch, "cpu")
    assert torch.equal(image, batch["image"]) and torch.equal(target, batch["target"])
    with pytest.raises(KeyError, match="no 'target'"):
        PrepareTargetBatch()({"image": batch["image"]}, "cpu")


def _write_kspace_file(path, shape_hws=(32, 24, 3), scale=1e-3):
    from conftest import phantom

    from shared_transforms.kspace.fastmri_writer import write_singlecoil_h5

    img = torch.as_tensor(phantom(shape_hws)).movedim(-1, 0)  # (S, H, W)
    k = fft2c(torch.stack([img, torch.zeros_like(img)], -1)) * scale  # measured k-space on its own scale
    return write_singlecoil_h5(path, k, img.numpy() * scale), k


def test_measured_kspace_is_packed_on_the_training_scale(tmp_path):
    from flat_bundle_scripts.transforms import UndersampleKspaced

    from shared_transforms.kspace.fastmri import LoadFastMRId
    from shared_transforms.kspace.fourier import zero_filled

    path, k = _write_kspace_file(tmp_path / "file1.h5")
    load = LoadFastMRId("image", target_keys="reference")
    pack = UndersampleKspaced("image", "image", accelerations=[4], center_fractions=[0.08], patterns=["random"])
    out = pack(load({"image": path}))["image"]
    again = pack(load({"image": path}))["image"]
    assert out.shape == (3, 32, 24, 3) and torch.equal(out, again), "one fixed mask per file"
    assert out.meta["filename_or_obj"] == path and torch.allclose(out.affine, torch.eye(4, dtype=out.affine.dtype))
    record = out.meta["undersampling"]
    assert record["acceleration"] == 4.0 and record["sampled_columns"] == 6
    # the packed k-space is the file's, masked and divided by one scale; its zero-filled image peaks near 1
    columns = out[2, 0, :, 0] > 0.5
    np.testing.assert_allclose(out[0:2].movedim(0, -1).movedim(-2, 0) * record["kspace_scale"],
                               apply_mask(k, columns[None, :, None]), atol=1e-6)
    magnitude = zero_filled(out[0:2].movedim(0, -1).movedim(-2, 0).contiguous())
    assert 0.8 < float(np.percentile(magnitude.numpy(), 99.5)) < 1.5


def test_inference_reads_a_fastmri_file_and_writes_a_nifti(tmp_path):
    """The ``kspace_hdf5`` input kind through the bundle's inference.json (the shipped weights)."""
    import nibabel as nib
    from monai.bundle import ConfigWorkflow

    from shared_transforms.engine.bundle import activate_bundle
    from shared_transforms.io.input_kinds import input_kind

    assert input_kind("kspace_hdf5").accepts("file1.h5")
    path, _ = _write_kspace_file(tmp_path / "file1.h5")
    root = activate_bundle(Path(__file__).resolve().parents[1] / "bundles" / "flat")
    wf = ConfigWorkflow(config_file=f"{root}/configs/inference.json", workflow_type="infer", logging_file=False,
                        input_kind="kspace_hdf5", input_path=path, output_dir=str(tmp_path / "out"), device="cpu")
    wf.initialize()
    wf.run()
    written = nib.load(tmp_path / "out" / "file1_flat.nii.gz")
    data = written.get_fdata()
    assert written.shape == (32, 24, 3) and np.isfinite(data).all() and 0 <= data.min() and data.max() <= 1
    assert np.allclose(written.affine, np.eye(4))


def test_the_trajectory_comes_out_as_channels_and_is_saved_as_a_4d_series(tmp_path):
    import nibabel as nib
    from flat_bundle_scripts.inference import FLATSliceInferer, SplitTrajectoryd

    from shared_transforms.io.volumes import SaveVolumed

    torch.manual_seed(0)
    net = FLATReconstructor(**TINY).eval()
    vol = UndersampleVolumed("label", "image", fixed_per_volume=True)({"label": _volume(str(tmp_path / "a.nii.gz"))})
    packed = vol["image"]
    with torch.no_grad():
        final = FLATSliceInferer(4, 2)(packed[None], net)[0]
        series = FLATSliceInferer(4, 2, return_trajectory=True)(packed[None], net)[0]
    assert final.shape == (1, 16, 24, 6) and series.shape == (4, 16, 24, 6)
    np.testing.assert_allclose(series[-1:], final, atol=1e-5)
    d = SplitTrajectoryd("pred")({"pred": series, "image": packed})
    assert torch.equal(d["pred"], series[-1:]) and torch.equal(d["trajectory"], series)
    SaveVolumed(["pred", "trajectory"], str(tmp_path / "out"), "flat", suffixes={"trajectory": "_trajectory"})(d)
    written = nib.load(tmp_path / "out" / "a_flat_trajectory.nii.gz")
    assert written.shape == (16, 24, 6, 4)
    np.testing.assert_allclose(written.get_fdata()[..., -1], nib.load(tmp_path / "out" / "a_flat.nii.gz").get_fdata(),
                               atol=1e-6)
