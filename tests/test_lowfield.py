"""Tests of the two synthetic low-field simulators (shared_transforms.simulation.lowfield) on tiny nested-ellipsoid
phantoms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from shared_transforms.errors import InputError
from shared_transforms.transforms.geometry import voxel_spacing_mm
from shared_transforms.transforms.intensity import brain_mask_from_intensity
from shared_transforms.simulation.common import tissue_maps_from_intensity
from shared_transforms.simulation.dictionary import SimulateLowFieldBlurGammad, SimulateLowFieldTissueContrastd
from shared_transforms.simulation.lowfield import (
    SNR_COV_T1W,
    SNR_MEAN_T1W,
    SimulateLowFieldBlurGamma,
    SimulateLowFieldTissueContrast,
    draw_snr_pair,
)
from shared_transforms.metrics import tissue_segmentation

N = 48
T1W = {"csf": 0.25, "gm": 0.6, "wm": 0.9}


def phantom(shape=(N, N, N), texture: float = 0.0, seed: int = 0, shift=(0.0, 0.0, 0.0)):
    """Nested ellipsoids: WM core, GM shell, CSF shell, background 0. Returns image (X, Y, Z) and hard maps."""
    grid = np.meshgrid(*[np.arange(n, dtype=float) - (n - 1) / 2 - s for n, s in zip(shape, shift)], indexing="ij")
    r = np.sqrt(sum((g / (n / 2)) ** 2 for g, n in zip(grid, shape)))  # 1 at the faces
    wm = (r < 0.45).astype(np.float32)
    gm = ((r >= 0.45) & (r < 0.7)).astype(np.float32)
    csf = ((r >= 0.7) & (r < 0.85)).astype(np.float32)
    img = T1W["wm"] * wm + T1W["gm"] * gm + T1W["csf"] * csf
    if texture:  # white in-plane texture u(x, y) plus a white profile v(z): each survives the other axis' blur
        rng = np.random.default_rng(seed)
        img = img * (1 + texture * (rng.standard_normal(shape[:2])[:, :, None] + rng.standard_normal(shape[2])))
    return img.astype(np.float32), gm, wm, csf


def as_meta(arr, affine=None):
    return MetaTensor(torch.as_tensor(arr)[None], affine=torch.as_tensor(np.eye(4) if affine is None else affine))


def world_centre(affine, shape):
    return (np.asarray(affine) @ np.r_[(np.asarray(shape) - 1) / 2.0, 1.0])[:3]


def world_centre_of_mass(vol: MetaTensor):
    arr = np.clip(vol[0].numpy(), 0, None)
    com = np.array(
        [(arr.sum(axis=tuple(j for j in range(3) if j != i)) * np.arange(arr.shape[i])).sum() for i in range(3)]
    )
    return (np.asarray(vol.affine) @ np.r_[com / arr.sum(), 1.0])[:3]


# ------------------------------------------------------------------------------------- Lin et al. / Figini et al.
@pytest.mark.parametrize("fixed_tissue", ["gm", "wm"])
@pytest.mark.parametrize("thickness", [(1, 1, 1), (1, 1, 4)])
def test_tissue_contrast_reaches_requested_snr(fixed_tissue, thickness):
    img, gm, wm, csf = phantom()
    snr_wm, snr_gm = 20.0, 15.0
    kw = dict(snr=(snr_wm, snr_gm), slice_thickness_factor=thickness, gap_factor=(0, 0, 0), fixed_tissue=fixed_tissue)
    clean = SimulateLowFieldTissueContrast(add_noise=False, **kw)
    noisy = SimulateLowFieldTissueContrast(**kw).set_random_state(3)
    i_clean = clean(as_meta(img), gm, wm, csf)
    i_noisy = noisy(as_meta(img), gm, wm, csf)
    noise = (i_noisy - i_clean)[0].numpy()
    sigma = float(i_noisy.meta["lowfield_noise_sigma"])
    assert noise.std() == pytest.approx(sigma, rel=0.03)
    # pure-tissue voxels on the low-field grid: the maps degraded the same way as the image
    maps, _ = clean.degrade_resolution(MetaTensor(torch.as_tensor(np.stack([gm, wm])), affine=torch.eye(4)))
    gm_l, wm_l = maps[0].numpy() > 0.9, maps[1].numpy() > 0.9
    assert wm_l.sum() > 100 and gm_l.sum() > 100
    out = i_noisy[0].numpy()
    assert out[wm_l].mean() / noise.std() == pytest.approx(snr_wm, rel=0.1)
    assert out[gm_l].mean() / noise.std() == pytest.approx(snr_gm, rel=0.1)
    # the fixed tissue keeps its high-field intensity, the other is rescaled (WM 0.9 -> 20/15 * 0.6 = 0.8 in GM-fixed)
    fixed_mean = T1W[fixed_tissue]
    region = gm_l if fixed_tissue == "gm" else wm_l
    assert i_clean[0].numpy()[region].mean() == pytest.approx(fixed_mean, rel=0.05)
    # background (outside GM + WM + CSF) is 0 before noise, as in the reference code
    assert np.abs(i_clean[0].numpy()[0, 0, :]).max() < 1e-6


def test_slice_thickness_removes_z_frequencies_and_keeps_xy():
    img, gm, wm, csf = phantom(texture=0.2)
    sim = SimulateLowFieldTissueContrast(
        snr=(20, 15), slice_thickness_factor=(1, 1, 4), gap_factor=(0, 0, 0), add_noise=False, upsample=True
    )
    out = sim(as_meta(img), gm, wm, csf)
    assert tuple(out.shape) == (1, N, N, N)
    assert np.allclose(np.asarray(out.affine), np.eye(4))
    src = img * (gm + wm + csf) * (out[0].numpy().mean() / img.mean())  # same tissue support, similar scale
    core = slice(8, 40)  # inside the phantom, away from the faces

    def band_power(vol, axis):
        spec = np.abs(np.fft.rfft(vol[core, core, core], axis=axis)) ** 2
        freqs = np.fft.rfftfreq(32)  # cycles / voxel
        other = tuple(a for a in range(3) if a != axis)
        p = spec.mean(axis=other)
        return p[freqs > 0.2].sum() / p.sum()  # above the new Nyquist 1/(2*4) = 0.125 and the FWHM cut

    out_np = out[0].numpy()
    assert band_power(out_np, 2) < 0.02 * band_power(src, 2)  # z: high frequencies gone
    assert band_power(out_np, 0) > 0.5 * band_power(src, 0)  # x and y keep theirs
    assert band_power(out_np, 1) > 0.5 * band_power(src, 1)

    # the slice profile (FWHM 4 voxels in z) removes a 0.3 cycle/voxel cosine before the thick-slice sampling, which
    # would otherwise alias it to 0.2 cycle/slice; the same cosine along x (thickness 1) passes untouched
    coord = np.arange(N, dtype=np.float32)
    cos = np.cos(2 * np.pi * 0.3 * coord)
    waves = np.stack([np.broadcast_to(cos[None, None, :], (N, N, N)), np.broadcast_to(cos[:, None, None], (N, N, N))])
    low, _ = sim.degrade_resolution(MetaTensor(torch.as_tensor(waves.copy()), affine=torch.eye(4)))
    assert tuple(low.shape) == (2, N, N, N // 4)
    assert float(low[0, ..., 1:-1].std()) < 0.05 * cos.std()  # the end slices see the border padding
    assert float(low[1].std()) > 0.9 * cos.std()


@pytest.mark.parametrize("thickness,gap", [((1, 1, 6), (0, 0, 2)), ((1, 1, 3), (0, 0, 1)), ((1.6, 1.6, 3), (0, 0, 1))])
def test_tissue_contrast_grid_spacing_shape_affine(thickness, gap):
    img, gm, wm, csf = phantom(shift=(3.0, -2.0, 5.0))
    # oblique-free but flipped, anisotropic, shifted input grid
    affine = np.array([[-1.0, 0, 0, 20.0], [0, 1.0, 0, -30.0], [0, 0, 1.2, 7.0], [0, 0, 0, 1]])
    sim = SimulateLowFieldTissueContrast(
        snr=(20, 15), slice_thickness_factor=thickness, gap_factor=gap, add_noise=False
    )
    out = sim(as_meta(img, affine), gm, wm, csf)
    factor = np.asarray(thickness, float) + np.asarray(gap, float)
    assert tuple(out.shape[1:]) == tuple(int(np.floor(N / f)) for f in factor)
    assert np.allclose(voxel_spacing_mm(out.affine), voxel_spacing_mm(affine) * factor)
    assert np.allclose(np.sign(np.asarray(out.affine)[:3, :3]), np.sign(affine[:3, :3]))  # axis directions kept
    in_spacing = voxel_spacing_mm(affine)
    assert np.all(np.abs(world_centre(out.affine, out.shape[1:]) - world_centre(affine, img.shape)) <= 0.5 * in_spacing)
    # the content is where the affine says: centre of mass in world space agrees within one input voxel
    clean_hf = as_meta(img * (gm + wm + csf), affine)
    assert np.all(np.abs(world_centre_of_mass(out) - world_centre_of_mass(clean_hf)) < 1.5 * in_spacing.max())


def test_bivariate_snr_draws_match_mean_and_covariance():
    draws = draw_snr_pair(np.random.RandomState(300), SNR_MEAN_T1W, SNR_COV_T1W, size=20000)
    assert draws.shape == (20000, 2)
    assert np.allclose(draws.mean(0), SNR_MEAN_T1W, atol=0.3)  # standard error about 0.06
    assert np.allclose(np.cov(draws.T), SNR_COV_T1W, rtol=0.06)
    # the transform draws its pair from self.R, one per call, and records it
    img, gm, wm, csf = phantom()
    sim = SimulateLowFieldTissueContrast(slice_thickness_factor=(1, 1, 1), gap_factor=(0, 0, 0)).set_random_state(42)
    expected = draw_snr_pair(np.random.RandomState(42))
    out = sim(as_meta(img), gm, wm, csf)
    assert out.meta["lowfield_snr_wm"] == pytest.approx(expected[0])
    assert out.meta["lowfield_snr_gm"] == pytest.approx(expected[1])
    second = sim(as_meta(img), gm, wm, csf)
    assert second.meta["lowfield_snr_wm"] != out.meta["lowfield_snr_wm"]


def test_tissue_contrast_seeding():
    img, gm, wm, csf = phantom()
    data = {"image": as_meta(img), "gm": gm, "wm": wm, "csf": csf}

    def run(seed):
        return SimulateLowFieldTissueContrastd(
            "image", slice_thickness_factor=(1, 1, 3), gap_factor=(0, 0, 1)
        ).set_random_state(seed)(data)["image"]

    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a, b) and a.meta["lowfield_snr_wm"] == b.meta["lowfield_snr_wm"]
    assert not torch.allclose(a, c) and a.meta["lowfield_snr_wm"] != c.meta["lowfield_snr_wm"]
    assert a.meta["lowfield_tissue_maps"] == "given"


def test_tissue_contrast_bad_input():
    img, gm, wm, csf = phantom()
    sim = SimulateLowFieldTissueContrast(snr=(20, 15))
    with pytest.raises(InputError, match="shape"):
        sim(as_meta(img), gm[:-1], wm, csf)
    with pytest.raises(InputError, match="GM probability"):
        sim(as_meta(img), gm * 0.5, wm, csf)  # not probabilities of pure tissue anywhere
    with pytest.raises(InputError, match="tissue map key"):
        SimulateLowFieldTissueContrastd("image", snr=(20, 15))({"image": as_meta(img)})


def test_intensity_fallback_orders_classes():
    img, gm, wm, csf = phantom()
    noisy = img + 0.03 * np.random.default_rng(1).standard_normal(img.shape).astype(np.float32) * (img > 0)
    gm_e, wm_e, csf_e = tissue_maps_from_intensity(noisy[None], pv_sigma_vox=0.0)
    # the project's one tissue split and brain mask (no closing, 6-connected)
    labels = tissue_segmentation(noisy, brain_mask_from_intensity(noisy, closing_radius_vox=0))
    for est, label in ((gm_e, 2), (wm_e, 3), (csf_e, 1)):
        np.testing.assert_array_equal(est, (labels == label).astype(np.float32))
    for est, true in ((gm_e, gm), (wm_e, wm), (csf_e, csf)):
        assert ((est > 0.5) == (true > 0.5)).mean() > 0.97
    means = [noisy[m > 0.5].mean() for m in (csf_e, gm_e, wm_e)]
    assert means[0] < means[1] < means[2]
    soft = tissue_maps_from_intensity(noisy)  # default light partial-volume smoothing
    total = sum(soft)
    assert all(m.min() >= 0 and m.max() <= 1 for m in soft) and total.max() <= 1 + 1e-5
    assert 0.02 < ((soft[0] > 0.05) & (soft[0] < 0.95)).mean() < 0.5  # some partial-volume voxels at boundaries
    # the dict transform falls back to these maps when the keys are absent and allowed to be
    out = SimulateLowFieldTissueContrastd(
        "image", snr=(20, 15), slice_thickness_factor=(1, 1, 3), gap_factor=(0, 0, 1), allow_missing_keys=True
    ).set_random_state(0)({"image": as_meta(noisy)})["image"]
    assert out.meta["lowfield_tissue_maps"] == "intensity_multiotsu" and tuple(out.shape) == (1, N, N, N // 4)


# ---------------------------------------------------------------------------------------------- seed 002's recipe
def test_blur_gamma_grid_range_and_darkening():
    img, *_ = phantom(shift=(4.0, -3.0, 6.0))
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 2.0)
    sim = SimulateLowFieldBlurGamma(spatial_shape=(32, 28, 12), blur_sigma_vox=1.0, gamma=1.4, noise_std=0.0)
    out = sim(as_meta(img, affine))
    assert tuple(out.shape) == (1, 32, 28, 12)
    assert np.allclose(voxel_spacing_mm(out.affine), (1.6, 1.6, 5.0))
    assert np.allclose(world_centre(out.affine, (32, 28, 12)), world_centre(affine, img.shape))
    assert out.min() >= 0 and out.max() <= 1
    # gamma > 1 darkens: below the input's mean on the same grid (blur alone keeps the mean)
    no_gamma = SimulateLowFieldBlurGamma(spatial_shape=(32, 28, 12), blur_sigma_vox=1.0, gamma=1.0, noise_std=0.0)
    ref = no_gamma(as_meta(img, affine))
    assert float(out.mean()) < 0.9 * float(ref.mean())
    # content is where the affine says
    assert np.all(np.abs(world_centre_of_mass(ref) - world_centre_of_mass(as_meta(img, affine))) < 1.5)
    # default shape keeps the field of view: round(extent / spacing)
    fov = SimulateLowFieldBlurGamma(noise_std=0.0)(as_meta(img))
    assert tuple(fov.shape[1:]) == (30, 30, 10)
    assert out.meta["lowfield_gamma"] == 1.4


def test_blur_gamma_background_weighted_noise():
    img = np.zeros((N, N, N), np.float32)
    img[:, N // 2 :, :] = 1.0  # half bright (J = 1), half background (J = 0); both clip the same half of the noise
    bw = 1.5
    sim = SimulateLowFieldBlurGamma((1.0, 1.0, 1.0), None, 0.5, 1.3, 0.05, background_weight=bw).set_random_state(1)
    out = sim(as_meta(img))[0].numpy()
    background, bright = out[:, : N // 2 - 4, :], out[:, N // 2 + 4 :, :]
    assert background.std() / bright.std() == pytest.approx(1 + bw, rel=0.1)
    assert background.std() > 0.01


def test_blur_gamma_seeding_and_dict():
    img, *_ = phantom()
    mask = (img > 0).astype(np.float32)
    data = {"image": as_meta(img), "mask": as_meta(mask)}

    def run(seed):
        return SimulateLowFieldBlurGammad("image", spatial_shape=(24, 24, 8), mask_keys="mask").set_random_state(seed)(
            data
        )

    a, b, c = run(11), run(11), run(12)
    assert torch.equal(a["image"], b["image"])
    assert all(a["image"].meta[k] == b["image"].meta[k] for k in a["image"].meta if k.startswith("lowfield_"))
    assert not torch.allclose(a["image"], c["image"])
    assert a["image"].meta["lowfield_gamma"] != c["image"].meta["lowfield_gamma"]
    assert tuple(a["mask"].shape) == (1, 24, 24, 8) and set(np.unique(a["mask"].numpy())) <= {0.0, 1.0}
    assert np.allclose(np.asarray(a["mask"].affine), np.asarray(a["image"].affine))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        SimulateLowFieldBlurGamma()(as_meta(img * 100))
