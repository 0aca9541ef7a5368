"""Real scans: the label-to-image synthesis, the 2D registration of the real-data evaluation, slabs in their plane.

The evaluation itself runs on ``../shared/realdata`` (not part of a user's clone): its test skips with that reason
when the folder is absent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata" / "ulf_0p055T_hku"


def _brain(shape=(48, 56, 44)):
    """A ball brain with WM core, GM rim and CSF ventricle maps, and a textured T1-like image of it."""
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r = np.sqrt(sum(g**2 for g in grid))
    mask = (r < 0.6).astype(np.float32)
    csf = ((r < 0.12) | ((r > 0.55) & (r < 0.6))).astype(np.float32)
    wm = ((r < 0.42) & (csf == 0)).astype(np.float32)
    gm = mask - wm - csf
    rng = np.random.default_rng(0)
    image = (0.2 * csf + 0.5 * gm + 0.8 * wm) * (1 + 0.05 * ndimage.gaussian_filter(rng.standard_normal(shape), 1))
    return {"gm": gm, "wm": wm, "csf": csf, "mask": mask, "image": image.astype(np.float32)}


def test_synthesis_is_seeded_and_its_draws_stay_in_range():
    from shared_transforms.simulation.synthesis import FAMILY_PROBS, LABELS, SHELL_MM, synth_pair

    b = _brain()
    one = synth_pair(b["gm"], b["wm"], b["csf"], b["mask"], b["image"], seed=5)
    two = synth_pair(b["gm"], b["wm"], b["csf"], b["mask"], b["image"], seed=5)
    other = synth_pair(b["gm"], b["wm"], b["csf"], b["mask"], b["image"], seed=6)
    assert np.array_equal(one["high"], two["high"]) and np.array_equal(one["low_contrast"], two["low_contrast"])
    assert one["draws"] == two["draws"] and not np.array_equal(one["high"], other["high"])
    for seed in range(12):
        d = synth_pair(b["gm"], b["wm"], b["csf"], b["mask"], b["image"], seed=seed)
        draws = d["draws"]
        assert draws["family"] in FAMILY_PROBS
        assert set(draws["means"]) == set(LABELS) and all(0.01 <= v <= 1.0 for v in draws["means"].values())
        assert all(0.01 <= v <= 1.0 for v in draws["low_means"].values())
        for name, (lo, hi) in SHELL_MM.items():
            assert lo <= draws["shell_thickness_mm"][name] <= hi
        assert d["high"].dtype == np.float32 and 0 <= d["high"].min() and d["high"].max() <= 1
        # the head grows outside the brain by the shells, the brain stays inside it
        assert d["head"][b["mask"] > 0].all() and d["head"].sum() > 1.5 * b["mask"].sum()


def test_a_t2_like_draw_has_csf_brighter_than_white_matter_and_t1_the_reverse():
    from shared_transforms.simulation.synthesis import SynthContrast, SynthHeadLabels

    b = _brain()
    labels = SynthHeadLabels()
    labels.set_random_state(0)
    maps, _ = labels(b["gm"], b["wm"], b["csf"], b["mask"])
    means = {}
    for family in ("t2", "t1"):
        contrast = SynthContrast(family)
        contrast.set_random_state(1)
        img, draws = contrast(maps, b["image"], b["mask"])
        assert draws["family"] == family
        pure_csf, pure_wm = b["csf"] * (ndimage.binary_erosion(b["csf"]) > 0), ndimage.binary_erosion(b["wm"], iterations=2)
        means[family] = (img[pure_csf > 0].mean(), img[pure_wm].mean())
    assert means["t2"][0] > 1.5 * means["t2"][1]
    assert means["t1"][0] < 0.5 * means["t1"][1]


def test_a_t1w_target_set_draws_t1_high_fields_from_inputs_of_any_contrast():
    """SynthSR's task (``make_demo_data --degradation synth_t1w``): the high field T1-like (WM > GM > CSF) whatever
    the low field's family, which is drawn on its own and recorded."""
    from shared_transforms.simulation.synthesis import FAMILY_PROBS, synth_pair

    b = _brain()
    families = set()
    for seed in range(10):
        d = synth_pair(b["gm"], b["wm"], b["csf"], b["mask"], b["image"], seed=seed, high_family="t1")
        means = d["draws"]["means"]
        assert d["draws"]["family"] == "t1" and means["wm"] > means["gm"] > means["csf"]
        assert d["draws"]["low_family"] in FAMILY_PROBS
        families.add(d["draws"]["low_family"])
    assert len(families) >= 3
    again = synth_pair(b["gm"], b["wm"], b["csf"], b["mask"], b["image"], seed=3, high_family="t1")
    assert np.array_equal(again["low_contrast"], synth_pair(b["gm"], b["wm"], b["csf"], b["mask"], b["image"], seed=3,
                                                            high_family="t1")["low_contrast"])


def test_registration_recovers_a_known_affine():
    from shared_transforms.metrics.registration import register_affine_2d

    grid = np.meshgrid(np.linspace(-1, 1, 96), np.linspace(-1, 1, 96), indexing="ij")
    head = ((grid[0] / 0.8) ** 2 + (grid[1] / 0.65) ** 2 < 1).astype(float)
    rng = np.random.default_rng(0)
    fixed = head * (0.6 + 0.3 * ndimage.gaussian_filter(rng.standard_normal((96, 96)), 4) * 8)
    fixed += 0.8 * ((grid[0] - 0.2) ** 2 + (grid[1] + 0.1) ** 2 < 0.05)
    a = np.array([[1.3, 0.08], [-0.1, 1.2]])
    offset = np.array([6.0, -4.0])
    # moving pixel q shows fixed pixel p with q = a p + offset; another contrast (inverted inside the head)
    moving = ndimage.affine_transform(fixed, np.linalg.inv(a), offset=-np.linalg.inv(a) @ offset,
                                      output_shape=(130, 120), order=1)
    moving = np.where(moving > 0.05, 1.6 - moving, 0)
    reg = register_affine_2d(fixed, moving, seed=0)
    # where each head pixel lands in the moving slice, estimated against true (pixels of the moving slice)
    pts = np.argwhere(head > 0).T
    error = np.linalg.norm((reg.matrix @ pts + reg.offset[:, None]) - (a @ pts + offset[:, None]), axis=0)
    assert error.mean() < 1.0 and error.max() < 2.0, (error.mean(), error.max())
    assert reg.moved.shape == fixed.shape and reg.inside[48, 48]


def test_thin_slabs_are_sliced_in_their_own_plane():
    from monai.data import MetaTensor

    from shared_transforms.inference.inferers import SliceInferer2D, acquisition_plan, thin_slab_axis

    assert thin_slab_axis((256, 256, 4)) == 2 and thin_slab_axis((1, 64, 80)) == 0
    assert thin_slab_axis((160, 192, 168)) is None and thin_slab_axis((40, 40, 8)) is None
    slab = MetaTensor(torch.rand(1, 1, 64, 64, 4), affine=torch.eye(4))
    slab.meta["original_affine"] = np.diag([1.6, 1.6, 5.0, 1.0])  # thick z: a volume would get sagittal slices
    assert acquisition_plan(slab, 0) == (2, False)
    seen = []
    inferer = SliceInferer2D(slice_batch_size=8, spatial_dim="auto", orthogonal_average=True)
    out = inferer(slab, lambda x: seen.append(tuple(x.shape)) or x)
    assert out.shape == slab.shape and all(s[-2:] == (64, 64) for s in seen) and sum(s[0] for s in seen) == 4


def test_rand_in_plane_slices_is_seeded_and_moves_the_thick_axis_first():
    from shared_transforms.transforms.geometry import RandInPlaneSlicesd

    vol = {"image": torch.rand(1, 5, 6, 7), "label": torch.rand(1, 5, 6, 7)}
    t = RandInPlaneSlicesd(["image", "label"], prob=0.5)
    t.set_random_state(3)
    shapes = [tuple(t(vol)["image"].shape) for _ in range(20)]
    assert set(shapes) == {(1, 5, 6, 7), (1, 7, 5, 6)}
    t.set_random_state(3)
    assert shapes == [tuple(t(vol)["image"].shape) for _ in range(20)]
    moved = RandInPlaneSlicesd(["image", "label"], prob=1.0)(vol)
    assert torch.equal(moved["label"], vol["label"].movedim(-1, 1))


def test_realdata_evaluation_needs_the_real_scans(tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    import realdata_eval

    with pytest.raises(SystemExit, match="real 0.055 T / 3 T scans are not here"):
        realdata_eval.find_pairs(tmp_path / "absent")
    if not REALDATA.is_dir():
        pytest.skip(f"{REALDATA} is absent (the real scans live beside the repository, not in it)")
    pairs = realdata_eval.find_pairs(REALDATA)
    assert len(pairs) == 12 and {p["contrast"] for p in pairs} == {"T1w", "T2w", "FLAIR"}


def test_realdata_kspace_needs_the_real_kspace_and_reconstructs_as_the_data_says(tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    import realdata_kspace

    with pytest.raises(SystemExit, match="real 0.055 T k-space is not here"):
        realdata_kspace.write_inputs(tmp_path / "absent", tmp_path)
    img = np.zeros((16, 12, 2))
    img[5:9, 4:8] = 1.0
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(img, axes=(0, 1)), axes=(0, 1)), axes=(0, 1))
    assert np.allclose(realdata_kspace.image_of(k), img, atol=1e-9)
    if not REALDATA.is_dir():
        pytest.skip(f"{REALDATA} is absent (the real scans live beside the repository, not in it)")
    cases = realdata_kspace.write_inputs(REALDATA, tmp_path)
    assert len(cases) == 12 and cases[0]["reference"].shape == (4, 196, 128)


def test_registration_is_deterministic():
    """The same pair twice gives the same transform (SimpleITK takes a sampling seed of 0 as the wall clock)."""
    from shared_transforms.metrics.registration import register_affine_2d

    rng = np.random.default_rng(1)
    fixed = ndimage.gaussian_filter(rng.random((64, 64)), 3)
    moving = ndimage.zoom(fixed, 1.3, order=1)
    one, two = register_affine_2d(fixed, moving, seed=0), register_affine_2d(fixed, moving, seed=0)
    assert np.array_equal(one.matrix, two.matrix) and np.array_equal(one.moved, two.moved)


def test_the_ceiling_row_keeps_the_input_order_with_the_reference_values():
    """The ceiling of the real-data table: the input's rank order inside the mask, the reference's values."""
    sys.path.insert(0, str(REPO / "tools"))
    from realdata_eval import with_reference_histogram

    rng = np.random.default_rng(0)
    img, ref = rng.random((20, 24)), rng.random((20, 24)) * 3 + 1
    mask = np.zeros((20, 24), bool)
    mask[4:16, 5:20] = True
    out = with_reference_histogram(img, ref, mask)
    assert np.array_equal(np.sort(out[mask]), np.sort(ref[mask]))  # the reference's histogram
    assert np.array_equal(np.argsort(out[mask]), np.argsort(img[mask]))  # the input's order
    assert np.array_equal(out[~mask], img[~mask])
