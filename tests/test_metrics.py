"""Tests of shared_transforms.metrics: every check compares with an independent computation or a known value."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch
from conftest import load_bundle_scripts  # noqa: E402
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.handlers import IgniteMetricHandler
from monai.metrics import MultiScaleSSIMMetric, SSIMMetric
from monai.transforms import CopyItemsd
from scipy import ndimage

from shared_transforms import metrics as M
from shared_transforms.errors import InputError
from shared_transforms.metrics.structural import _ms_ssim_fits
from shared_transforms.transforms.intensity import brain_mask_from_intensity


def _protocol(bundle: str):
    """``bundles/<bundle>/scripts/protocol.py``: each paper's evaluation protocol lives in its bundle."""
    import importlib

    return importlib.import_module(f"{load_bundle_scripts(bundle).__name__}.protocol")


CFM, AMIR, FLAT, DIQT = (_protocol(b) for b in ("cfm", "amir", "flat", "diffusion_iqt"))


def phantom(shape=(40, 48, 44), seed=0):
    """A brain-like ellipsoid: GM shell 0.5, WM core 0.8, CSF ventricle 0.2, smooth texture; background 0."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    rad = np.sqrt((x / 0.8) ** 2 + (y / 0.85) ** 2 + (z / 0.8) ** 2)
    vol = np.zeros(shape)
    vol[rad < 1.0] = 0.5
    vol[rad < 0.7] = 0.8
    vol[np.sqrt((x / 0.15) ** 2 + (y / 0.3) ** 2 + (z / 0.15) ** 2) < 1] = 0.2
    vol += 0.03 * ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) * (rad < 1)
    return np.clip(vol, 0, 1), rad < 1.0


def manual_ssim_map(a, b, data_range=1.0, axes=None):
    """SSIM map with scipy's Gaussian filter (radius 5 = MONAI's 11-tap window, sigma 1.5, mirror padding)."""
    sig = [1.5 if (axes is None or i in axes) else 0 for i in range(a.ndim)]
    f = partial(ndimage.gaussian_filter, sigma=sig, truncate=10 / 3, mode="reflect")
    mx, my = f(a), f(b)
    sx, sy, sxy = f(a * a) - mx * mx, f(b * b) - my * my, f(a * b) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return (2 * mx * my + c1) * (2 * sxy + c2) / ((mx * mx + my * my + c1) * (sx + sy + c2))


@pytest.fixture(scope="module")
def vol():
    return phantom()


# --------------------------------------------------------------------------------------------- basic properties


def test_identical_volumes(vol):
    ref, mask = vol
    out = M.evaluate_volume(ref, ref, mask, lpips_net=None)
    for key in ("psnr", "psnr_mask", "psnr_slice_mean", "psnr_slice_min", "psnr_slice_max"):
        assert out[key] == M.PSNR_CAP_DB, key  # documented cap, never inf
    assert out["psnr_slice_std"] == 0.0
    for key in ("ssim", "ssim_mask", "msssim", "msssim_mask", "ssim_slice_mean", "ssim_slice_min"):
        assert out[key] == pytest.approx(1.0, abs=1e-6), key
    for key in ("mae", "mae_mask", "nmse", "nmse_mask"):
        assert out[key] == 0.0, key
    assert out["tissue_miou"] == 1.0 and out["tissue_mdice"] == 1.0
    assert out["ulf_enc"] == pytest.approx(0.7 + 0.1 * M.PSNR_CAP_DB / 32 + 0.2)
    assert out["air_mean"] == pytest.approx(0.0, abs=1e-6)
    noisy_air = ref + 0.2 * (ref == 0)  # a grey veil over the air shows in air_mean
    assert M.evaluate_volume(noisy_air, ref, mask, lpips_net=None)["air_mean"] == pytest.approx(0.2, abs=1e-6)
    assert out["mask_source"] == "given" and out["mask_voxels"] == int(mask.sum())
    assert out["lpips"] is None and out["lpips_status"] == "not requested"


@pytest.mark.parametrize("noise_std", [0.05, 0.01])
def test_additive_noise_gives_expected_psnr(vol, noise_std):
    ref, mask = vol
    pred = ref + noise_std * np.random.default_rng(1).standard_normal(ref.shape)  # no clipping: exact noise level
    expected = 20 * math.log10(1 / noise_std)
    out = M.evaluate_volume(pred, ref, mask, lpips_net=None)
    assert out["psnr"] == pytest.approx(expected, abs=0.2)
    assert out["psnr_mask"] == pytest.approx(expected, abs=0.2)
    assert out["psnr_slice_mean"] == pytest.approx(expected, abs=0.2)
    assert out["mae"] == pytest.approx(noise_std * math.sqrt(2 / math.pi), rel=0.03)
    assert 0 < out["ssim"] < 1 and 0 < out["msssim"] < 1
    assert M.psnr(pred[20], ref[20]) == pytest.approx(expected, abs=0.3)  # 2D image


def test_error_only_outside_mask(vol):
    ref, mask = vol
    noise = 0.1 * np.random.default_rng(2).standard_normal(ref.shape)
    pred = ref + noise * ~mask
    out = M.evaluate_volume(pred, ref, mask, lpips_net=None)
    assert out["psnr_mask"] == M.PSNR_CAP_DB and out["mae_mask"] == 0.0 and out["nmse_mask"] == 0.0
    assert out["psnr"] < 30 and out["mae"] > 0 and out["nmse"] > 0
    assert out["psnr_slice_min"] == M.PSNR_CAP_DB
    # error only inside the mask: the whole-image MSE is diluted by the error-free voxels, by exactly N / N_mask
    pred = ref + noise * mask
    whole, inside = M.psnr(pred, ref), M.psnr(pred, ref, mask)
    assert whole - inside == pytest.approx(10 * math.log10(mask.size / mask.sum()), abs=1e-9)
    assert M.ssim(pred, ref, mask) < M.ssim(pred, ref)


def test_inputs_torch_channel_and_errors(vol):
    ref, mask = vol
    pred = ref + 0.02
    a = M.evaluate_volume(torch.from_numpy(pred)[None], torch.from_numpy(ref)[None, None], mask[None], lpips_net=None)
    b = M.evaluate_volume(pred, ref, mask, lpips_net=None)
    assert a == b
    with pytest.raises(InputError, match="shape"):
        M.psnr(pred[:-1], ref)
    bad = ref.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="1 NaN"):
        M.evaluate_volume(pred, bad)
    with pytest.raises(InputError, match="empty"):
        M.evaluate_volume(pred, ref, np.zeros_like(mask))


# ---------------------------------------------------------------------------------------- SSIM / MS-SSIM vs MONAI


def test_ssim_map_is_the_former_separable_definition(vol):
    """scikit-image's map equals the definition of the former hand-written filter (11-tap Gaussian, sigma 1.5, mirror
    padding, population covariances) and the numbers evaluate_volume gave with it (computed before the switch)."""
    ref, mask = vol
    pred = np.clip(ref + 0.05 * np.random.default_rng(4).standard_normal(ref.shape), 0, 1)
    np.testing.assert_allclose(M.ssim_map(pred, ref), manual_ssim_map(pred, ref), rtol=0, atol=1e-12)
    np.testing.assert_allclose(M.ssim_map(pred[20], ref[20]), manual_ssim_map(pred[20], ref[20]), rtol=0, atol=1e-12)
    before = {  # the former float32 implementation on this volume
        "ssim": 0.7805958193192456,
        "ssim_mask": 0.9161648784834525,
        "msssim": 0.9785530203045333,
        "msssim_mask": 0.9800420794543359,
        "ssim_slice_mean": 0.8066550155447947,
        "ssim_slice_min": 0.6435273592589331,
        "psnr_slice_mean": 25.971619981285905,
    }
    out = M.evaluate_volume(pred, ref, mask, lpips_net=None)
    for key, value in before.items():
        assert out[key] == pytest.approx(value, abs=2e-6), key
    assert M.ssim(pred[20], ref[20]) == pytest.approx(0.872055334641653, abs=2e-6)
    assert M.ssim(pred[20], ref[20], mask[20]) == pytest.approx(0.8963614395403774, abs=2e-6)
    with pytest.raises(InputError, match="taps"):
        M.ssim(pred, ref, win_size=7)  # a Gaussian window's size follows from sigma
    assert M.ssim(pred, ref, win_size=7, kernel_type="uniform") != M.ssim(pred, ref)


def test_ssim_matches_monai_and_manual_map(vol):
    ref, mask = vol
    pred = np.clip(ref + 0.05 * np.random.default_rng(4).standard_normal(ref.shape), 0, 1)

    def t(a):
        return torch.from_numpy(a)[None, None].float()

    assert M.ssim(pred, ref) == pytest.approx(float(SSIMMetric(spatial_dims=3)(t(pred), t(ref))), abs=1e-5)
    assert M.ssim(pred[20], ref[20]) == pytest.approx(
        float(SSIMMetric(spatial_dims=2)(t(pred[20]), t(ref[20]))), abs=1e-5
    )
    smap = manual_ssim_map(pred, ref)
    assert M.ssim(pred, ref, mask) == pytest.approx(smap[mask].mean(), abs=1e-12)
    assert M.ssim(pred, ref, data_range=2.0) > M.ssim(pred, ref)  # larger constants: closer to 1


def test_ms_ssim_setup_and_matches_monai(vol):
    assert M.ms_ssim_setup((200, 230, 190))[0] == 11 and len(M.ms_ssim_setup((200, 230, 190))[1]) == 5
    assert len(M.ms_ssim_setup((150, 172, 142))[1]) == 4
    assert len(M.ms_ssim_setup((32, 32, 32))[1]) == 2
    assert M.ms_ssim_setup((8, 9, 10)) == (7, (1.0,))
    for shape in ((150, 172, 142), (48, 52, 50)):
        kernel, weights = M.ms_ssim_setup(shape)
        assert sum(weights) == pytest.approx(1.0)
        assert _ms_ssim_fits(shape, kernel, len(weights)) and not _ms_ssim_fits(shape, kernel, len(weights) + 1)
    with pytest.raises(ValueError):  # MONAI itself refuses one scale more than the setup picks
        x = torch.rand(1, 1, 48, 52, 50)
        MultiScaleSSIMMetric(spatial_dims=3, weights=M.MS_SSIM_WEIGHTS[:4])(x, x)
    ref, mask = phantom((48, 52, 50), seed=5)
    pred = np.clip(ref + 0.05 * np.random.default_rng(5).standard_normal(ref.shape), 0, 1)
    kernel, weights = M.ms_ssim_setup(ref.shape)
    assert len(weights) == 3
    monai = MultiScaleSSIMMetric(spatial_dims=3, kernel_size=kernel, weights=weights)
    expected = float(monai(torch.from_numpy(pred)[None, None].float(), torch.from_numpy(ref)[None, None].float()))
    assert M.ms_ssim(pred, ref) == pytest.approx(expected, abs=1e-5)
    assert 0 < expected < 1
    # evaluate_volume reuses the whole volume's first-scale moments for the mask's box: the same value
    out = M.evaluate_volume(pred, ref, mask, lpips_net=None)
    assert out["msssim_mask"] == pytest.approx(M.ms_ssim(pred, ref, mask), abs=1e-12)
    assert out["msssim"] == pytest.approx(M.ms_ssim(pred, ref), abs=1e-12)


# ------------------------------------------------------------------------------------------------ per-slice stats


def test_per_slice_stats_match_numpy(vol):
    ref, mask = vol
    rng = np.random.default_rng(6)
    level = np.linspace(0.01, 0.1, ref.shape[0])[:, None, None]  # a different noise level per sagittal slice
    pred = ref + level * rng.standard_normal(ref.shape)
    out = M.evaluate_volume(pred, ref, mask, lpips_net=None)
    smap2d = manual_ssim_map(pred, ref, axes=(1, 2))
    psnrs, ssims, skipped = [], [], 0
    for x in range(ref.shape[0]):
        m = mask[x]
        if not m.any() or not np.any(ref[x][m]):
            skipped += 1
            continue
        psnrs.append(10 * np.log10(1.0 / np.mean((ref[x][m] - pred[x][m]) ** 2)))
        ssims.append(smap2d[x][m].mean())
    assert skipped >= 2 and out["slices_skipped"] == skipped and out["slices_used"] == len(psnrs)
    for name, values in (("psnr", psnrs), ("ssim", ssims)):
        for stat, fn in (("mean", np.mean), ("median", np.median), ("std", np.std), ("min", np.min), ("max", np.max)):
            assert out[f"{name}_slice_{stat}"] == pytest.approx(fn(values), abs=1e-4), (name, stat)
    # no mask: whole slices, SSIM = MONAI's 2D SSIM per slice; an all-zero reference slice is skipped
    ref0 = ref.copy()
    ref0[:6] = 0
    nonzero = np.flatnonzero(ref0.reshape(ref0.shape[0], -1).any(axis=1))
    res = M.per_slice_metrics(pred, ref0, axis=0)
    assert nonzero[0] == 6 and res["skipped"] == ref0.shape[0] - nonzero.size and list(res["index"]) == list(nonzero)
    per = SSIMMetric(spatial_dims=2, reduction="none")(
        torch.from_numpy(pred[nonzero]).float()[:, None], torch.from_numpy(ref0[nonzero]).float()[:, None]
    )
    np.testing.assert_allclose(res["ssim"], per.numpy().ravel(), atol=5e-5)  # both float32
    st = M.slice_stats([1.0, 2.0, 6.0])
    assert st == {"mean": 3.0, "median": 2.0, "std": pytest.approx(np.std([1, 2, 6])), "min": 1.0, "max": 6.0}


# ------------------------------------------------------------------------------------------- ULF-EnC and tissue


def test_ulf_enc_formula(vol):
    assert M.ulf_enc_score(0.9, 32.0, 0.05, 0.02) == pytest.approx(0.63 + 0.1 + 0.095 + 0.098)
    assert M.ulf_enc_score(1.0, 0.0, 1.0, 1.0) == pytest.approx(0.7)
    ref, mask = vol
    pred = ref + 0.03 * np.random.default_rng(7).standard_normal(ref.shape)
    parts = (M.ssim(pred, ref, mask), M.psnr(pred, ref, mask), M.mae(pred, ref, mask), M.nmse(pred, ref, mask))
    score = M.ulf_enc_score(*parts)
    assert M.evaluate_volume(pred, ref, mask, lpips_net=None)["ulf_enc"] == pytest.approx(score, abs=1e-12)
    y = torch.from_numpy(np.stack([ref, mask])[None])
    assert float(M.MaskedMetric("ulf_enc")(torch.from_numpy(pred)[None, None], y)) == pytest.approx(score, abs=1e-6)


def test_tissue_overlap(vol):
    ref, mask = vol
    same = M.tissue_overlap(ref, ref, mask)
    assert same["tissue_miou"] == 1.0 and all(same[f"tissue_iou_{c}"] == 1.0 for c in ("csf", "gm", "wm"))
    labels = M.tissue_segmentation(ref, mask)
    assert set(np.unique(labels[mask])) == {1, 2, 3} and not labels[~mask].any()
    assert labels[20, 24, 22] == 1  # the ventricle (0.2) is the darkest class: CSF
    shifted = M.tissue_overlap(np.roll(ref, 2, axis=0), ref, mask)
    assert 0 < shifted["tissue_miou"] < 1
    assert all(shifted[f"tissue_dice_{c}"] >= shifted[f"tissue_iou_{c}"] for c in ("csf", "gm", "wm"))
    assert math.isnan(M.tissue_overlap(np.zeros_like(ref), ref, mask)["tissue_miou"])  # constant image: no classes


def test_tissue_segmentation_keeps_discrete_values_in_their_class():
    # 0.3 sits in the upper half of the histogram bin whose centre scikit-image returns as the upper threshold:
    # without the half-bin shift it would land in the bright class
    img = np.repeat(np.array([0.0, 0.3, 1.0], dtype=np.float32), 1000).reshape(30, 10, 10)
    labels = M.tissue_segmentation(img, np.ones(img.shape, bool))
    classes = [set(np.unique(labels[i * 10 : (i + 1) * 10])) for i in range(3)]
    assert labels.dtype == np.int8 and classes == [{1}, {2}, {3}]
    with pytest.raises(InputError, match="too few distinct"):
        M.tissue_segmentation(np.where(img > 0.5, 1.0, 0.0), np.ones(img.shape, bool))


def test_default_mask(vol):
    ref, mask = vol
    out = M.evaluate_volume(ref, ref, lpips_net=None)
    auto = brain_mask_from_intensity(ref, closing_radius_vox=2, connectivity=3)
    assert out["mask_source"] == "reference_threshold" and out["mask_voxels"] == int(auto.sum())
    assert (auto & mask).sum() / (auto | mask).sum() > 0.95
    with pytest.raises(InputError, match="constant"):
        M.evaluate_volume(ref, np.full(ref.shape, 0.3), lpips_net=None)


# ---------------------------------------------------------------------------------------------- paper protocols


def test_cfm_slice_mask():
    img = np.zeros((40, 40))
    yy, xx = np.mgrid[:40, :40]
    img[(yy - 20) ** 2 + (xx - 18) ** 2 < 100] = 1.0
    img[20, 10:26] = 0.0  # a 1-pixel dark crack: closing fills it
    img[2:4, 36:38] = 1.0  # a small separate blob: not the largest component
    img[30:40, 0:4] = 0.5  # a bright region touching the border, joined to nothing
    m = CFM.cfm_slice_mask(img)
    assert m[20, 12:24].all() and not m[2:4, 36:38].any() and not m[35, 1]
    edge = np.zeros((20, 20))
    edge[:, :8] = 1.0
    assert CFM.cfm_slice_mask(edge)[:, :8].all()  # OpenCV border semantics: nothing eroded at the image border


def test_protocol_cfm(vol):
    ref, _ = vol
    ref = 0.8 * ref + 0.1  # away from 0 and 1: the [0, 1] clipping leaves the noise untouched
    same = CFM.protocol_cfm(ref, ref, lpips_net=None)
    assert same["psnr"] == M.PSNR_CAP_DB and same["ssim"] == pytest.approx(1.0)
    pred = ref + 0.02 * np.random.default_rng(8).standard_normal(ref.shape)
    res = CFM.protocol_cfm(pred, ref, lpips_net=None)
    assert res["psnr"] == pytest.approx(20 * math.log10(1 / 0.02), abs=0.3)
    constant = int(np.sum(ref.max(axis=(1, 2)) == ref.min(axis=(1, 2))))  # the empty edge slices of the phantom
    assert constant > 0 and res["slices_skipped"] == constant and res["slices_used"] == ref.shape[0] - constant
    assert 0 < res["ssim"] < 1
    ref2, mask2 = phantom()
    pred2 = ref2 + 0.1 * (~mask2) * (ref2 == 0)  # error only in the background: removed by the authors' mask
    assert CFM.protocol_cfm(pred2, ref2, use_mask=True, lpips_net=None)["psnr"] == M.PSNR_CAP_DB
    assert CFM.protocol_cfm(pred2, ref2, use_mask=False, lpips_net=None)["psnr"] < 40


def test_amir_ssim_is_gaussian_ssim_with_zero_padding(vol):
    """Inside the border the AMIR authors' SSIM map equals the usual Gaussian SSIM (scipy filter, sigma 1.5, 11
    taps); at the border their zero padding makes it differ; identical images score 1 everywhere."""
    ref, _ = vol
    a = ref[20]
    b = np.clip(a + 0.05 * np.random.default_rng(3).standard_normal(a.shape), 0, 1)
    dr = torch.tensor([float(a.max() - a.min())])
    smap = AMIR.amir_ssim_map(torch.from_numpy(b)[None], torch.from_numpy(a)[None], dr)[0].numpy()
    want = manual_ssim_map(b, a, data_range=float(dr))
    assert np.allclose(smap[5:-5, 5:-5], want[5:-5, 5:-5], atol=1e-10)
    assert not np.allclose(smap[:5], want[:5], atol=1e-3)
    same = AMIR.amir_ssim(torch.from_numpy(a)[None], torch.from_numpy(a)[None], dr)
    assert float(same) == pytest.approx(1.0)


def test_protocol_amir_per_slice_statistics(vol):
    """Seed 002's per-slice PSNR statistics: each sagittal slice's PSNR with R = its reference's max - min, the
    constant edge slices skipped, and the five statistics of those values."""
    ref, _ = vol
    ref = 0.8 * ref + 0.1
    pred = ref + 0.02 * np.random.default_rng(9).standard_normal(ref.shape)
    res = AMIR.protocol_amir(pred, ref)
    used = [i for i in range(ref.shape[0]) if ref[i].max() > ref[i].min()]
    psnrs = [10 * math.log10(float(ref[i].max() - ref[i].min()) ** 2 / float(np.mean((ref[i] - pred[i]) ** 2)))
             for i in used]
    assert res["slices_used"] == len(used) and res["slices_skipped"] == ref.shape[0] - len(used) > 0
    assert res["psnr_mean"] == pytest.approx(np.mean(psnrs)) and res["psnr_median"] == pytest.approx(np.median(psnrs))
    assert res["psnr_std"] == pytest.approx(np.std(psnrs)) and res["psnr_min"] == pytest.approx(min(psnrs))
    assert res["psnr_max"] == pytest.approx(max(psnrs)) and 0 < res["ssim_mean"] < 1
    assert res["rmse_mean"] == pytest.approx(0.02, rel=0.05)
    same = AMIR.protocol_amir(ref, ref)
    assert same["psnr_min"] == M.PSNR_CAP_DB and same["ssim_mean"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------------- LPIPS


def test_lpips_skipped_without_backbone_weights(vol, tmp_path, monkeypatch):
    import lpips

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case torch.hub.set_dir was called in this process

    def refuse(*args, **kwargs):
        raise AssertionError("LPIPS must not be built without local backbone weights")

    monkeypatch.setattr(lpips, "LPIPS", refuse)
    path = M.lpips_checkpoint_path("alex")
    assert path == tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert M.lpips_checkpoint_path("vgg").name == "vgg16-397923af.pth"
    ref, mask = vol
    assert M.lpips_distance(ref, ref) == (None, f"skipped: no backbone weights ({path})")
    out = M.evaluate_volume(ref, ref, mask)
    assert out["lpips"] is None and out["lpips_mask"] is None
    assert out["lpips_status"] == f"skipped: no backbone weights ({path})"
    assert CFM.protocol_cfm(ref, ref)["lpips_status"].startswith("skipped: no backbone weights")
    with pytest.raises(InputError):
        M.lpips_checkpoint_path("resnet")


# ------------------------------------------------------------------------------------------- MONAI / Ignite plug-in


def test_masked_metric_direct(vol):
    ref, mask = vol
    rng = np.random.default_rng(12)
    refs = torch.from_numpy(np.stack([ref, ref])[:, None])
    preds = refs + 0.05 * torch.from_numpy(rng.standard_normal(refs.shape))
    masks = torch.from_numpy(np.stack([mask, np.zeros_like(mask)])[:, None]).double()
    metric = M.MaskedMetric("psnr", get_not_nans=True)
    values = metric(preds, torch.cat([refs, masks], dim=1))
    assert values[0, 0] == pytest.approx(M.psnr(preds[0, 0], ref, mask), abs=1e-4)
    assert math.isnan(values[1, 0])  # empty mask: NaN, left out of the mean
    value, not_nans = metric.aggregate()
    assert float(value) == pytest.approx(float(values[0, 0])) and int(not_nans) == 1
    whole = M.MaskedMetric("ssim")(preds, refs)  # one channel: no mask
    assert float(whole[1, 0]) == pytest.approx(M.ssim(preds[1, 0], ref), abs=1e-6)
    with pytest.raises(InputError):
        M.MaskedMetric("dice")


def test_masked_metric_in_supervised_evaluator(vol):
    ref, mask = vol
    rng = np.random.default_rng(13)
    noise_outside = 0.1 * rng.standard_normal(ref.shape) * ~mask
    items = [
        {
            "image": torch.from_numpy(ref + k * noise_outside).float()[None],
            "label": torch.from_numpy(ref).float()[None],
            "mask": torch.from_numpy(mask).float()[None],
        }
        for k in (1.0, 2.0)
    ]
    loader = DataLoader(Dataset(items), batch_size=2)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=torch.nn.Identity(),
        postprocessing=CopyItemsd(keys="mask", names=M.EVAL_MASK_KEY),
        key_val_metric={
            "psnr_mask": IgniteMetricHandler(metric_fn=M.MaskedMetric("psnr"), output_transform=M.pred_and_masked_label)
        },
        additional_metrics={
            "psnr_whole": IgniteMetricHandler(
                metric_fn=M.MaskedMetric("psnr"), output_transform=partial(M.pred_and_masked_label, mask_key=None)
            ),
            "mae_mask": IgniteMetricHandler(metric_fn=M.MaskedMetric("mae"), output_transform=M.pred_and_masked_label),
        },
    )
    evaluator.run()
    assert evaluator.state.iteration == 1
    metrics = evaluator.state.metrics
    assert metrics["psnr_mask"] == pytest.approx(M.PSNR_CAP_DB) and metrics["mae_mask"] == 0.0
    expected = np.mean([M.psnr(it["image"], it["label"]) for it in items])
    assert metrics["psnr_whole"] == pytest.approx(expected, abs=1e-3) and metrics["psnr_whole"] < 40
    # without the postprocessing copy the mask is not in the engine output: a clear error, not a silent whole-image
    with pytest.raises(InputError, match="eval_mask"):
        M.pred_and_masked_label([{"pred": items[0]["image"], "label": items[0]["label"]}])


def test_protocol_fastmri_matches_its_definition():
    """fastMRI's evaluate.py: PSNR and SSIM with data range = the reference volume's max, SSIM slice by slice along
    the slice axis, NMSE; no mask, no clipping; written out here with skimage and numpy directly."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = np.random.default_rng(3)
    ref = 2.5 * rng.random((20, 24, 6))  # not on [0, 1]: fastMRI scores on the data's own scale
    pred = ref + 0.1 * rng.standard_normal(ref.shape)
    res = FLAT.protocol_fastmri(pred, ref)
    maxval = ref.max()
    assert res["psnr"] == pytest.approx(peak_signal_noise_ratio(ref, pred, data_range=maxval))
    ssim = np.mean([structural_similarity(ref[..., i], pred[..., i], data_range=maxval) for i in range(6)])
    assert res["ssim"] == pytest.approx(ssim)
    assert res["nmse"] == pytest.approx(np.sum((ref - pred) ** 2) / np.sum(ref**2))
    assert FLAT.protocol_fastmri(ref, ref)["nmse"] == 0 and FLAT.protocol_fastmri(ref, ref)["ssim"] == pytest.approx(1)
    assert np.isnan(FLAT.protocol_fastmri(pred, np.zeros_like(ref))["psnr"])


def test_protocol_diffusion_iqt_min_max_normalises_crops_and_scores_in_3d():
    rng = np.random.default_rng(0)
    ref = ndimage.gaussian_filter(rng.random((48, 40, 44)), 2)
    same = DIQT.protocol_diffusion_iqt(3.0 * ref + 1.0, ref)  # min-max normalised: an affine change of scale is no error
    assert same["psnr"] == M.PSNR_CAP_DB and abs(same["ms_ssim"] - 1.0) < 1e-6
    assert same["crop"] == "36x30x32" and same["ms_ssim_scales"] == 2  # 0.75 of each axis; two 11-voxel scales fit
    noisy = ref + rng.normal(0, 0.05 * float(np.ptp(ref)), ref.shape)
    scored = DIQT.protocol_diffusion_iqt(noisy, ref)
    lo, hi = noisy.min(), noisy.max()
    crop = (slice(6, 42), slice(5, 35), slice(6, 38))  # round(5.5) = 6
    by_hand = ((noisy - lo) / (hi - lo))[crop] - ((ref - ref.min()) / np.ptp(ref))[crop]
    assert abs(scored["psnr"] - 10 * np.log10(1.0 / np.mean(by_hand**2))) < 1e-9
    assert 0 < scored["ms_ssim"] < same["ms_ssim"]
    big = DIQT.protocol_diffusion_iqt(np.pad(noisy, 100), np.pad(ref, 100))  # 176+ voxels a side: all five scales
    assert big["ms_ssim_scales"] == 5


def test_the_striping_index_sees_independent_slices_and_not_shared_ones():
    """Issue 30: a smooth volume plus noise drawn independently for every slice along axis 0 has stripes across
    axis 0 (index well above 1); the same noise shared by every slice has none across it; the index is 1 for the
    reference itself and blind to the intensity scale."""
    from scipy import ndimage

    from shared_transforms.metrics import striping_index

    rng = np.random.default_rng(0)
    shape = (40, 48, 44)
    ref = ndimage.gaussian_filter(rng.random(shape), 3)
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    noise = 0.02 * ndimage.gaussian_filter(rng.standard_normal(shape), (0, 1, 1))
    independent = ref + noise
    shared = ref + noise[:1]  # one field for every slice
    mask = np.zeros(shape, bool)
    mask[5:-5, 5:-5, 5:-5] = True
    assert striping_index(ref, ref, 0, mask) == pytest.approx(1.0)
    assert striping_index(independent, ref, 0, mask) > 3.0
    assert striping_index(shared, ref, 0, mask) < 1.15
    assert striping_index(2.0 * independent, ref, 0, mask) == pytest.approx(striping_index(independent, ref, 0, mask))
    # a volume smooth along one axis of the slice (a thick-slice acquisition's) is not striped against the other
    thick = ndimage.gaussian_filter(ref, (0, 0, 3))
    assert striping_index(thick, ref, 0, mask, within=1) < 1.15 < striping_index(thick, ref, 0, mask)
    with pytest.raises(ValueError):
        striping_index(ref, ref, 0, mask, within=0)
