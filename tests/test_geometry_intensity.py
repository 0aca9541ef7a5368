"""Geometry (low onto the high grid, seed 002's fixed grids) and intensity normalisation."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
from conftest import phantom
from monai.data import MetaTensor
from monai.transforms import Compose, ResampleToMatchd

from shared_transforms.errors import InputError
from shared_transforms.transforms.geometry import (
    SEED002_LOW_FIELD,
    CheckFieldOfViewd,
    ResampleToShapeSpacing,
    ResampleToShapeSpacingd,
    affine_for_grid,
    voxel_spacing_mm,
)
from shared_transforms.transforms.intensity import (
    BrainMaskd,
    PercentileNormalize,
    PercentileNormalized,
    brain_mask_from_intensity,
    head_interior,
    head_mask_from_intensity,
)
from shared_transforms.io.volumes import LoadVolumed


def _centre(affine, shape):
    return np.asarray(affine)[:3, :3] @ ((np.asarray(shape) - 1) / 2) + np.asarray(affine)[:3, 3]


def test_seed002_shape_and_spacing():
    img = MetaTensor(torch.from_numpy(phantom((60, 70, 50)))[None], affine=torch.eye(4, dtype=torch.float64))
    out = ResampleToShapeSpacing(**SEED002_LOW_FIELD)(img)
    assert tuple(out.shape[1:]) == (112, 138, 40)
    assert np.allclose(voxel_spacing_mm(out.affine), (1.6, 1.6, 5.0))
    assert np.allclose(_centre(out.affine, (112, 138, 40)), _centre(np.eye(4), (60, 70, 50)), atol=1e-6)
    kept = ResampleToShapeSpacing((30, 35, 25), (9, 9, 9), keep_extent=True)(img)
    assert np.allclose(voxel_spacing_mm(kept.affine), (2, 2, 2))  # extent kept: 60 mm / 30 voxels
    # a zoom by 2 and back keeps a smooth image
    down = ResampleToShapeSpacingd("x", (30, 35, 25), (2, 2, 2))({"x": img})["x"]
    up = ResampleToShapeSpacing((60, 70, 50), (1, 1, 1))(down)
    inside = phantom((60, 70, 50)) > 0.05
    assert np.abs(np.asarray(up[0]) - phantom((60, 70, 50)))[inside].mean() < 0.05


def test_affine_for_grid_flipped_axes():
    aff = np.diag([-2.0, 1.0, 3.0, 1.0])
    aff[:3, 3] = [10, -5, 7]
    new = affine_for_grid(aff, (10, 20, 5), (20, 40, 15), (1, 0.5, 1))
    assert np.allclose(np.sign(np.diag(new)[:3]), [-1, 1, 1])
    assert np.allclose(_centre(new, (20, 40, 15)), _centre(aff, (10, 20, 5)))


def test_low_onto_high_grid_with_monai(tiny_pair):
    d = LoadVolumed(["low", "high"])(dict(tiny_pair))
    d = CheckFieldOfViewd("low", ref_key="high")(d)
    d = ResampleToMatchd("low", key_dst="high", mode=3, padding_mode="border")(d)
    assert d["low"].shape == d["high"].shape
    assert np.allclose(np.asarray(d["low"].affine), np.asarray(d["high"].affine))
    inside = np.asarray(d["high"][0]) > 0.3
    assert np.abs(np.asarray(d["low"][0]) - np.asarray(d["high"][0]))[inside].mean() < 0.12


def test_field_of_view_check_names_both_files(tiny_pair):
    d = LoadVolumed(["low", "high"])(dict(tiny_pair))
    d["low"].affine[0, 3] += 500.0
    with pytest.raises(InputError, match="do not overlap") as info:
        CheckFieldOfViewd("low", ref_key="high")(d)
    assert "s1_low" in str(info.value) and "s1_high" in str(info.value)


def test_a_low_field_covering_a_small_part_of_its_high_field_is_refused(tiny_pair, tmp_path):
    """The overlap is measured against the high field (the training target), not the smaller box: a low field that
    lies wholly inside its high field but covers 28 % of it is a wrong pair."""
    from conftest import save

    part = save(tmp_path / "part_low.nii.gz", phantom((4, 14, 5)) + 0.5, np.diag([2.0, 2.0, 4.0, 1.0]))
    d = LoadVolumed(["low", "high"])({"low": part, "high": tiny_pair["high"]})
    with pytest.raises(InputError, match=r"only 28% of the reference's field of view covered") as info:
        CheckFieldOfViewd("low", ref_key="high")(d)
    assert "part_low" in str(info.value) and "s1_high" in str(info.value)


def test_a_mask_off_its_image_grid_is_refused_naming_both_files(tiny_pair, tmp_path):
    from conftest import save

    from shared_transforms.transforms.pipelines import pair_transforms

    run = Compose(pair_transforms())
    good = run({"image": tiny_pair["low"], "label": tiny_pair["high"], "mask": tiny_pair["mask"]})
    assert good["mask"].shape == good["label"].shape
    wrong_shape = save(tmp_path / "m_shape.nii.gz", (phantom((24, 28, 19)) > 0.1).astype(np.uint8))
    shifted = np.eye(4)
    shifted[0, 3] = 3.0
    wrong_grid = save(tmp_path / "m_grid.nii.gz", (phantom() > 0.1).astype(np.uint8), shifted)
    for mask, match in ((wrong_shape, r"mask shape \(24, 28, 19\) differs"), (wrong_grid, "mask affine differs")):
        with pytest.raises(RuntimeError) as info:  # MONAI's Compose wraps the transform's error
            run({"image": tiny_pair["low"], "label": tiny_pair["high"], "mask": mask})
        err = info.value.__cause__
        assert isinstance(err, InputError) and re.search(match, str(err))
        assert os.path.basename(mask) in str(err) and "s1_high" in str(err)


def test_percentile_normalisation():
    x = torch.arange(1000, dtype=torch.float32).reshape(1, 10, 10, 10)
    y = PercentileNormalize(1, 99)(x)
    assert float(y.min()) == 0.0 and float(y.max()) == 1.0
    assert abs(float(np.median(y.numpy())) - 0.5) < 0.01
    mask = torch.zeros_like(x)
    mask[:, 5:] = 1  # the upper half only: its 1st percentile maps to 0
    ym = PercentileNormalized("x", mask_key="m")({"x": x, "m": mask})["x"]
    lo, hi = np.percentile(np.arange(500, 1000), [1, 99])
    assert float(ym[0, 7, 5, 5]) == pytest.approx((755 - lo) / (hi - lo), abs=1e-4)
    assert float(ym[0, 0, 0, 0]) == 0.0
    with pytest.raises(InputError, match="mask is empty"):
        PercentileNormalize()(x, torch.zeros_like(x))


def test_brain_mask_from_intensity():
    vol = phantom((40, 44, 36))
    vol[2, 2, 2] = 1.0  # an isolated bright voxel is not part of the largest component
    mask = brain_mask_from_intensity(vol)
    assert mask.dtype == bool and not mask[2, 2, 2]
    truth = phantom((40, 44, 36)) > 0.1
    assert (mask & truth).sum() / (mask | truth).sum() > 0.95
    d = BrainMaskd("high")({"high": torch.from_numpy(vol)[None]})
    assert d["mask"].shape == (1, 40, 44, 36)
    assert not brain_mask_from_intensity(np.full((8, 8, 8), 0.3)).any()  # constant: empty, no error


def _rician(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n1, n2 = rng.standard_normal((2, *clean.shape))
    return np.sqrt((clean + sigma * n1) ** 2 + (sigma * n2) ** 2).astype(np.float32)


@pytest.mark.parametrize("snr", [60.0, 4.0])
def test_head_mask_finds_the_head_in_noise(snr):
    """At a WM SNR of 4 (air: Rayleigh noise of mean 1.25 sigma; the head's bright core 4 sigma; its dim rim ~2
    sigma) the head mask still matches the noise-free head (IoU > 0.9 for this 96 x 104 x 88 mm head at 2 mm; the
    5 mm smoothing rounds off about a voxel of its edge), with no air blob and no hole."""
    clean = phantom((48, 52, 44))
    truth = clean > 0.1
    noisy = _rician(clean, sigma=0.8 / snr, seed=1)
    mask = head_mask_from_intensity(noisy, spacing_mm=(2.0, 2.0, 2.0))
    assert (mask & truth).sum() / (mask | truth).sum() > 0.9
    assert not mask[:4].any() and not mask[-4:].any()  # the air at the borders stays out
    assert mask[24, 26, 22]
    assert not head_mask_from_intensity(np.full((8, 8, 8), 0.3)).any()  # constant: empty, no error


def test_head_mask_normalisation_does_not_depend_on_the_air_in_the_field_of_view():
    """Padding a noisy head with 16 voxels of air on every side moves the whole-volume 99th percentile by several
    per cent; the head-mask scale (99th inside the head, 1st over the volume) moves by < 1 % of the range."""
    clean = phantom((40, 44, 36))
    sigma = 0.8 / 8.0
    tight, wide = _rician(clean, sigma, 2), _rician(np.pad(clean, 16), sigma, 3)
    whole, head = PercentileNormalize(), PercentileNormalize(head_mask=True)

    def scale(norm, vol):
        mask = head_mask_from_intensity(vol) if norm.head_mask else None
        lo = norm.percentiles(vol)[0]
        hi = norm.percentiles(vol, mask)[1] if mask is not None else norm.percentiles(vol)[1]
        return lo, hi

    (lo_t, hi_t), (lo_w, hi_w) = scale(head, tight), scale(head, wide)
    assert abs(hi_w - hi_t) < 0.01 * (hi_t - lo_t) and abs(lo_w - lo_t) < 0.01 * (hi_t - lo_t)
    (wlo_t, whi_t), (_, whi_w) = scale(whole, tight), scale(whole, wide)
    assert abs(whi_w - whi_t) > 0.03 * (whi_t - wlo_t)  # the old scale does move: the test can fail
    # the transform applies that scale, and a MetaTensor's voxel size reaches the mask
    img = MetaTensor(torch.from_numpy(wide)[None], affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    out = head(img)
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    lo, hi = head.percentiles(wide)[0], head.percentiles(wide, head_mask_from_intensity(wide, (2.0, 2.0, 2.0)))[1]
    assert float(out[0, 30, 30, 30]) == pytest.approx(min(max((wide[30, 30, 30] - lo) / (hi - lo), 0), 1), abs=1e-5)


def _scalped_head(slices: int) -> np.ndarray:
    """An ellipsoidal head at 1 mm (``slices`` thick along z, a cut through its middle): a bright 6 mm rim of scalp
    (intensity 1.6, fat) around a brain of intensity 1 with a dimmer core (0.6), in air of 0.02."""
    n = 80
    c = np.arange(n) - (n - 1) / 2
    x, y = np.meshgrid(c, c, indexing="ij")
    r = np.sqrt((x / 36.0) ** 2 + (y / 30.0) ** 2)
    img = np.where(r < 1.0, 1.6, 0.02)
    img = np.where(r < 0.82, 1.0, img)  # 6.5 mm of rim across the short axis
    img = np.where(r < 0.4, 0.6, img)
    return np.repeat(img[..., None], slices, axis=-1).astype(np.float32)


@pytest.mark.parametrize("slices", [40, 4])
def test_the_scale_from_the_head_interior_leaves_out_the_scalp(slices):
    """Issue 28.5: with ``scalp_mm`` the bright end is the brain's, not the scalp's, in a volume and in a thin slab
    (whose cut faces are not eroded); without it the rim of scalp sets the 99th percentile."""
    vol = _scalped_head(slices)
    img = MetaTensor(torch.from_numpy(vol)[None], affine=torch.eye(4))
    head = head_mask_from_intensity(vol)
    interior = head_interior(head, (1.0, 1.0, 1.0), 12.0)
    assert interior.any() and not (interior & (vol > 1.2)).any()  # no scalp voxel inside
    assert interior[40, 40, slices // 2]
    assert PercentileNormalize(head_mask=True).percentiles(vol, head)[1] == pytest.approx(1.6)
    brain = PercentileNormalize(head_mask=True, scalp_mm=12.0)(img)
    assert float(brain[0, 40, 20, 0]) == pytest.approx(1.0, abs=1e-4)  # the brain is white, the scalp clipped
    assert float(PercentileNormalize(head_mask=True)(img)[0, 40, 20, 0]) == pytest.approx(0.98 / 1.58, abs=1e-3)


def test_a_head_too_small_for_its_interior_keeps_the_whole_head_scale():
    vol = _scalped_head(4)[20:60, 25:55]  # a 40 x 30 mm piece of head: nowhere 40 mm deep
    vol = np.pad(vol, ((8, 8), (8, 8), (0, 0)), constant_values=0.02)
    head = head_mask_from_intensity(vol)
    small = head_interior(head, (1.0, 1.0, 1.0), 40.0)
    assert not small.any()
    img = MetaTensor(torch.from_numpy(vol)[None], affine=torch.eye(4))
    same = PercentileNormalize(head_mask=True, scalp_mm=40.0)(img), PercentileNormalize(head_mask=True)(img)
    assert torch.equal(same[0], same[1])
    with pytest.raises(ValueError, match="scalp_mm"):
        PercentileNormalize(scalp_mm=-1)


def test_brain_mask_connectivity_closing_and_holes():
    vol = np.zeros((20, 20, 20))
    vol[2:10, 2:10, 2:10] = 1.0  # the large block, with a dark hole inside
    vol[5:7, 5:7, 5:7] = 0.0
    vol[10:13, 10:13, 10:13] = 1.0  # a smaller block touching it at one corner only
    faces = brain_mask_from_intensity(vol, closing_radius_vox=0, connectivity=1)
    full = brain_mask_from_intensity(vol, closing_radius_vox=0, connectivity=3)
    assert faces[5, 5, 5] and full[5, 5, 5]  # hole filled
    assert not faces[11, 11, 11] and full[11, 11, 11]  # 6-connected: two components; 26-connected: one
    assert faces.sum() == 8**3 and full.sum() == 8**3 + 3**3
    gap = np.zeros((20, 20, 20))
    gap[2:18, 2:18, 2:9] = gap[2:18, 2:18, 10:18] = 1.0  # a one-voxel dark crack
    assert not brain_mask_from_intensity(gap, closing_radius_vox=0)[8, 8, 9]
    assert brain_mask_from_intensity(gap, closing_radius_vox=1)[8, 8, 9]  # closing bridges it


def test_validation_slices_lie_in_the_central_part_of_the_brain():
    """cfm's validation PSNR swung because its slices included the first and last brain slices: keep them central."""
    from shared_transforms.transforms.geometry import SelectSlicesd

    mask = torch.zeros(1, 100, 8, 8)
    mask[:, 20:80] = 1  # brain extent: slices 20..79
    sel = SelectSlicesd(["mask"], num_slices=8, mask_key="mask")
    idx = sel.indices({"mask": mask})
    assert len(idx) == 8 and idx.min() >= 20 + 0.2 * 59 - 1 and idx.max() <= 79 - 0.2 * 59 + 1
    assert np.all(np.diff(idx) > 0)
    assert sel({"mask": mask})["mask"].shape == (1, 8, 8, 8)


def test_training_slices_follow_the_acquisition_as_inference_does():
    """A sagittal acquisition: training volumes are reordered so that slices along the first axis are the coronal,
    transposed slices ``SliceInferer2D(spatial_dim="auto")`` takes; an axial one is left as it is."""
    from shared_transforms.transforms.geometry import SliceAlongAcquisitiond
    from shared_transforms.inference.inferers import SliceInferer2D

    vol = torch.rand(1, 6, 7, 8)
    sag = np.array([[0, 0, 6.0, 0], [1.2, 0, 0, 0], [0, 1.2, 0, 0], [0, 0, 0, 1]])
    image = MetaTensor(vol.clone(), affine=torch.eye(4), meta={"original_affine": torch.as_tensor(sag)})
    out = SliceAlongAcquisitiond(["image", "label"])({"image": image, "label": vol.clone()})
    assert out["image"].shape == (1, 7, 8, 6) and torch.equal(out["image"], out["label"])
    seen = []
    SliceInferer2D(spatial_dim="auto", margin_vox=0, empty_threshold=-1, divisible_by=1)(
        image[None], lambda x: seen.append(x.clone()) or x)
    assert torch.equal(torch.cat(seen)[:, 0], out["image"][0])  # the same slices, in the same orientation
    axial_affine = torch.diag(torch.tensor([1.6, 1.6, 5.0, 1.0]))
    axial = MetaTensor(vol.clone(), affine=torch.eye(4), meta={"original_affine": axial_affine})
    assert torch.equal(SliceAlongAcquisitiond(["image"])({"image": axial})["image"], vol)
