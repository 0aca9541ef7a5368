"""Tests of the randomised low-field degradation (shared_transforms.simulation.degradation) on tiny phantoms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from shared_transforms.errors import InputError
from shared_transforms.simulation.degradation import (
    RANDOMISED,
    TYPICAL,
    RandomLowFieldDegradation,
)
from shared_transforms.simulation.dictionary import RandomLowFieldDegradationd
from shared_transforms.simulation.psf import truncate_kspace
from shared_transforms.transforms.geometry import voxel_spacing_mm

T1W = {"csf": 0.25, "gm": 0.6, "wm": 0.9}
# every factor off: no contrast change, no power law, no bias, no noise
OFF = {"contrast_scale": 1.0, "gamma": 1.0, "bias_peak": 0.0, "snr_wm": math.inf}


def ellipsoids(n: int = 32):
    """Nested spheres: WM core, GM shell, CSF shell, background 0. Returns image (X, Y, Z), gm, wm."""
    grid = np.meshgrid(*[np.arange(n, dtype=float) - (n - 1) / 2] * 3, indexing="ij")
    r = np.sqrt(sum(g**2 for g in grid)) / (n / 2)
    wm = (r < 0.45).astype(np.float32)
    gm = ((r >= 0.45) & (r < 0.7)).astype(np.float32)
    csf = ((r >= 0.7) & (r < 0.85)).astype(np.float32)
    return (T1W["wm"] * wm + T1W["gm"] * gm + T1W["csf"] * csf).astype(np.float32), gm, wm


def as_meta(arr, affine=None, name=None):
    out = MetaTensor(torch.as_tensor(np.ascontiguousarray(arr))[None], affine=torch.as_tensor(
        np.eye(4) if affine is None else affine, dtype=torch.float64))
    if name:
        out.meta["filename_or_obj"] = name
    return out


def world_centre(affine, shape):
    return (np.asarray(affine) @ np.r_[(np.asarray(shape) - 1) / 2.0, 1.0])[:3]


def lowfield_meta(out):
    return {k: v for k, v in out.meta.items() if k.startswith("lowfield_")}


# --------------------------------------------------------------------------------------------------------- seeding
def test_deterministic_under_seed_and_dict_delegates():
    img, gm, wm = ellipsoids()

    def run(seed, **kw):
        return RandomLowFieldDegradation(**kw).set_random_state(seed)(as_meta(img), gm, wm)

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b) and lowfield_meta(a) == lowfield_meta(b)
    assert np.allclose(np.asarray(a.affine), np.asarray(b.affine))
    drawn = [k for k in lowfield_meta(a) if k not in ("lowfield_tissue_maps", "lowfield_spacing_mm")]
    changed = [k for k in drawn if lowfield_meta(a)[k] != lowfield_meta(c)[k]]
    assert len(changed) >= len(drawn) - 2  # another seed: other draws (axis / psf may coincide)
    # the RANDOMISED preset is the default
    assert torch.equal(run(7, **RANDOMISED), a)
    # the dictionary version seeds and draws through its array transform: same output for the same seed
    d = RandomLowFieldDegradationd("image").set_random_state(7)({"image": as_meta(img), "gm": gm, "wm": wm})
    assert torch.equal(d["image"], a) and lowfield_meta(d["image"]) == lowfield_meta(a)
    assert d["gm"] is gm  # map keys stay on the high-field grid


def test_fixing_one_factor_keeps_the_other_draws():
    free = RandomLowFieldDegradation().set_random_state(3)
    pinned = RandomLowFieldDegradation(snr_wm=8.0).set_random_state(3)
    free.randomize()
    pinned.randomize()
    assert pinned.params["lowfield_snr_wm"] == 8.0
    assert {k: v for k, v in free.params.items() if k != "lowfield_snr_wm"} == {
        k: v for k, v in pinned.params.items() if k != "lowfield_snr_wm"
    }
    fixed = RandomLowFieldDegradation.fixed(snr_wm=8)
    fixed.randomize()
    expected = {f"lowfield_{k}": v for k, v in TYPICAL.items()} | {"lowfield_snr_wm": 8.0}
    assert fixed.params == expected
    with pytest.raises(TypeError, match="one value per factor"):
        RandomLowFieldDegradation.fixed(snr_wm=(4, 8))
    assert RandomLowFieldDegradationd.fixed("image", axis=0).sim.axes == (0,)


# ---------------------------------------------------------------------------------------------------------- ranges
def test_draws_stay_in_range_and_every_axis_and_psf_occurs():
    img, gm, wm = ellipsoids(24)
    t = RandomLowFieldDegradation().set_random_state(11)
    metas = []
    for _ in range(30):
        out = t(as_meta(img), gm, wm)
        m = lowfield_meta(out)
        assert np.allclose(voxel_spacing_mm(out.affine), m["lowfield_spacing_mm"])
        assert m["lowfield_noise_sigma"] > 0 and torch.isfinite(out).all() and float(out.min()) >= 0
        metas.append(m)
    for key in ("slice_thickness_mm", "slice_gap_mm", "inplane_spacing_mm", "contrast_scale", "bias_peak", "gamma",
                "snr_wm"):
        lo, hi = RANDOMISED[key]
        values = [m[f"lowfield_{key}"] for m in metas]
        assert all(lo <= v <= hi for v in values), key
        assert max(values) - min(values) > 0.5 * (hi - lo), key  # spread over the range, not stuck
    assert {m["lowfield_axis"] for m in metas} == {0, 1, 2}
    assert {m["lowfield_psf"] for m in metas} == {"kspace", "gaussian"}
    for m in metas:  # the spacing follows the drawn geometry
        expected = np.full(3, m["lowfield_inplane_spacing_mm"])
        expected[m["lowfield_axis"]] = m["lowfield_slice_thickness_mm"] + m["lowfield_slice_gap_mm"]
        assert np.allclose(m["lowfield_spacing_mm"], expected)
    # the bias field's peak |log gain| is the drawn one
    t.randomize()
    b = t.bias_log_field((20, 24, 16))
    assert float(np.abs(b).max()) == pytest.approx(t.params["lowfield_bias_peak"], rel=1e-5)


# ------------------------------------------------------------------------------------------------------------ grid
def test_output_grid_and_mask():
    shape = (40, 30, 20)
    img, gm, wm = ellipsoids(40)
    img, gm, wm = img[:, 5:35, 10:30], gm[:, 5:35, 10:30], wm[:, 5:35, 10:30]
    rot = np.array([[math.cos(0.5), -math.sin(0.5), 0], [math.sin(0.5), math.cos(0.5), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.0, 1.0, 1.2])
    affine[:3, 3] = [12.0, -30.0, 7.0]
    mask = (img > 0).astype(np.float32)
    data = {"image": as_meta(img, affine), "gm": gm, "wm": wm, "mask": as_meta(mask, affine)}
    t = RandomLowFieldDegradationd.fixed("image", mask_keys="mask", axis=0, slice_thickness_mm=4.0,
                                         slice_gap_mm=1.0, inplane_spacing_mm=2.0)
    d = t.set_random_state(0)(data)
    out = d["image"]
    assert tuple(out.shape) == (1, 8, 15, 12)  # round(extent / spacing): 40/5, 30/2, 24/2
    assert np.allclose(voxel_spacing_mm(out.affine), (5.0, 2.0, 2.0))
    directions = np.asarray(out.affine)[:3, :3] / voxel_spacing_mm(out.affine)
    assert np.allclose(directions, rot)  # axis directions kept
    assert np.allclose(world_centre(out.affine, out.shape[1:]), world_centre(affine, shape), atol=1e-6)
    assert out.meta["lowfield_spacing_mm"] == pytest.approx([5.0, 2.0, 2.0])
    m = d["mask"]
    assert tuple(m.shape) == tuple(out.shape) and np.allclose(np.asarray(m.affine), np.asarray(out.affine))
    assert set(np.unique(m.numpy()).tolist()) == {0.0, 1.0}
    # the content is where the affine says: the brain's world centre of mass moves by less than a voxel
    def com_world(vol, aff):
        idx = np.argwhere(vol > 0.5 * vol.max()).mean(0)
        return (np.asarray(aff) @ np.r_[idx, 1.0])[:3]
    assert np.linalg.norm(com_world(m[0].numpy(), m.affine) - com_world(mask, affine)) < 2.0


# ------------------------------------------------------------------------------------------------------ resolution
def edge_spread(psf: str, spacing: float, dx: float = 0.25):
    """The oversampled 10-90 % rise distance (mm) and the overshoot of a step edge along x on the low-field grid.

    A fine 0.25 mm input with a bright slab (0.1 -> 0.8 -> 0.1, edges 32 mm apart), the rising edge shifted by
    0.25 mm steps over one output voxel: the output samples of all shifts trace the edge-spread function at 0.25 mm.
    """
    n = 256
    t = RandomLowFieldDegradation(axis=2, slice_thickness_mm=1.0, slice_gap_mm=0.0, inplane_spacing_mm=spacing,
                                  psf=psf, **OFF)
    affine = np.diag([dx, dx, dx, 1.0])
    r_all, v_all = [], []
    for shift in range(round(spacing / dx)):
        first = 64 + shift  # first bright voxel
        profile = np.full(n, 0.1, np.float32)
        profile[first:first + 128] = 0.8
        img = np.broadcast_to(profile[:, None, None], (n, 16, 4)).copy()
        out = t.set_random_state(0)(as_meta(img, affine))
        x_world = (np.asarray(out.affine) @ np.c_[np.arange(out.shape[1]), np.zeros((out.shape[1], 3)) + [0, 0, 1]].T)[0]
        edge = (first - 0.5) * dx
        r = x_world - edge
        near = np.abs(r) < 8.0  # the falling edge is 32 mm away
        r_all.append(r[near])
        v_all.append(out[0, :, out.shape[2] // 2, 0].numpy()[near])
    r, v = np.concatenate(r_all), np.concatenate(v_all)
    order = np.argsort(r)
    r, esf = r[order], (v[order] - 0.1) / 0.7
    lobe = np.abs(r) < 0.9 * spacing  # the monotonic main lobe of the sinc ESF
    rl, el = r[lobe], np.maximum.accumulate(esf[lobe])
    rise = float(np.interp(0.9, el, rl) - np.interp(0.1, el, rl))
    return rise, float(esf.max() - 1.0), float(-esf.min())


def test_kspace_truncation_gives_the_nominal_resolution_and_rings():
    spacings = (1.5, 2.0, 2.5)
    for psf in ("kspace", "gaussian"):
        rises = []
        for s in spacings:
            rise, overshoot, undershoot = edge_spread(psf, s)
            assert 0.6 * s <= rise <= 1.6 * s, (psf, s, rise)
            if psf == "kspace":  # Gibbs: ~9 % for an ideal sinc
                assert overshoot > 0.05 and undershoot > 0.05, (s, overshoot, undershoot)
            else:
                assert overshoot < 0.01 and undershoot < 0.01, (s, overshoot, undershoot)
            rises.append(rise)
        assert rises[0] < rises[1] < rises[2], (psf, rises)


def test_truncate_kspace_keeps_exactly_the_band():
    rng = np.random.default_rng(0)
    arr = rng.standard_normal((1, 40, 30, 6)).astype(np.float32)
    out = truncate_kspace(arr, (1, 2), (1.0, 0.5), 2.0)  # keep |k| <= 0.25 cycles/mm
    spec = np.abs(np.fft.fftn(out, axes=(1, 2)))
    kx = np.abs(np.fft.fftfreq(40, 1.0))[:, None]
    ky = np.abs(np.fft.fftfreq(30, 0.5))[None, :]
    outside = (kx > 0.25 + 1e-9) | (ky > 0.25 + 1e-9)
    assert spec[:, outside].max() < 1e-3 * spec.max()
    inside = np.abs(np.fft.fftn(arr, axes=(1, 2)))[:, ~outside]
    assert np.allclose(spec[:, ~outside], inside, rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------------------------------------- noise
@pytest.mark.parametrize("snr", [10.0, 40.0])
def test_rician_noise_gives_the_stated_snr(snr):
    shape = (40, 40, 24)
    img = np.zeros(shape, np.float32)
    img[8:32, 8:32, 4:20] = 0.8
    wm = (img > 0).astype(np.float32)
    t = RandomLowFieldDegradation.fixed(axis=2, slice_thickness_mm=2.0, slice_gap_mm=0.0, inplane_spacing_mm=1.0,
                                        psf="gaussian", contrast_scale=1.0, bias_peak=0.0, gamma=1.0, snr_wm=snr)
    result = t.set_random_state(1)(as_meta(img), np.zeros_like(wm), wm)
    out = result[0].numpy()
    assert out.shape == (40, 40, 12)
    sigma = result.meta["lowfield_noise_sigma"]
    assert result.meta["lowfield_snr_wm"] == snr
    assert sigma == pytest.approx(0.8 / snr, rel=0.02)  # the pure-WM mean of the blurred block is ~0.8
    block = out[10:30, 10:30, 3:9]  # slice j is centred at z = 0.5 + 2 j: slices 3-8 lie inside z 4-20
    measured = block.mean() / block.std()
    assert measured == pytest.approx(snr, rel=0.15)
    background = out[:4]  # x < 4 mm, the block starts at 8 mm
    assert background.mean() == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.05)  # Rayleigh mean


def test_recorded_sigma_matches_the_noise():
    img, gm, wm = ellipsoids()
    t = RandomLowFieldDegradation.fixed(psf="gaussian", contrast_scale=1.0, bias_peak=0.0, snr_wm=15.0)
    noisy = t.set_random_state(2)(as_meta(img), gm, wm)
    clean = RandomLowFieldDegradation.fixed(psf="gaussian", **OFF).set_random_state(2)(as_meta(img), gm, wm)
    sigma = noisy.meta["lowfield_noise_sigma"]
    bright = clean[0].numpy() > 0.5  # high SNR region: Rician ~ Gaussian there
    assert float((noisy - clean)[0].numpy()[bright].std()) == pytest.approx(sigma, rel=0.1)
    assert clean.meta["lowfield_noise_sigma"] == 0.0 and clean.meta["lowfield_tissue_maps"] == "none"


# -------------------------------------------------------------------------------------------------------- contrast
@pytest.mark.parametrize("c", [0.3, 0.6, 1.2])
def test_contrast_scale_scales_the_wm_gm_difference(c):
    rng = np.random.default_rng(4)
    shape = (32, 32, 8)
    wm = np.zeros(shape, np.float32)
    wm[:16] = 1.0
    gm = 1.0 - wm
    img = (0.8 * wm + 0.5 * gm) * (1 + 0.03 * rng.standard_normal(shape)).astype(np.float32)
    kw = {"axis": 2, "slice_thickness_mm": 1.0, "slice_gap_mm": 0.0, "inplane_spacing_mm": 1.0, "psf": "gaussian"}

    def means(scale):
        out = RandomLowFieldDegradation.fixed(**kw, **(OFF | {"contrast_scale": scale}))(as_meta(img), gm, wm)
        arr = out[0].numpy()
        return arr[2:12].mean(), arr[20:30].mean(), arr[2:12].std()

    wm1, gm1, tex1 = means(1.0)
    wmc, gmc, texc = means(c)
    assert (wmc - gmc) / (wm1 - gm1) == pytest.approx(c, rel=0.03)
    assert (wmc + gmc) / 2 == pytest.approx((wm1 + gm1) / 2, rel=0.02)  # the midpoint stays
    assert texc == pytest.approx(tex1, rel=0.05)  # texture stays


def test_gamma_and_bias_field():
    shape = (24, 24, 12)
    img = np.full(shape, 0.5, np.float32)
    ones = np.ones(shape, np.float32)
    kw = {"axis": 2, "slice_thickness_mm": 2.0, "slice_gap_mm": 0.0, "inplane_spacing_mm": 1.0, "psf": "gaussian"}
    t = RandomLowFieldDegradation.fixed(**kw, **(OFF | {"gamma": 1.5}))
    out = t(as_meta(img), 0 * ones, ones)[0].numpy()
    assert np.allclose(out, 0.5**1.5, rtol=1e-3)
    t = RandomLowFieldDegradation.fixed(**kw, **(OFF | {"gamma": 1.5, "bias_peak": 0.2}))
    log_gain = np.log(t.set_random_state(5)(as_meta(img), 0 * ones, ones)[0].numpy() / 0.5**1.5)
    assert 0.1 < np.abs(log_gain).max() <= 0.2 + 1e-3  # the peak over the high-field grid, smoothed and resampled
    assert np.abs(np.diff(log_gain, axis=0)).max() < 0.05  # smooth: < 0.05 per 1 mm voxel


# ------------------------------------------------------------------------------------------------------- bad input
def test_bad_input_raises_input_error_naming_the_file():
    img, gm, wm = ellipsoids(16)
    t = RandomLowFieldDegradation()
    with pytest.raises(InputError, match="channel-first 3D"):
        t(torch.zeros(1, 16, 16))
    with pytest.raises(InputError, match=r"scan\.nii\.gz: the high-field image must lie in \[0, 1\]"):
        t(as_meta(img * 3, name="scan.nii.gz"), gm, wm)
    with pytest.raises(InputError, match=r"scan\.nii\.gz: gm map shape"):
        t(as_meta(img, name="scan.nii.gz"), gm[:-1], wm)
    with pytest.raises(InputError, match="both the GM and the WM"):
        t(as_meta(img, name="scan.nii.gz"), gm, None)
    with pytest.raises(InputError, match="NaN"):
        t(as_meta(np.where(img > 0.5, np.nan, img), name="scan.nii.gz"), gm, wm)
