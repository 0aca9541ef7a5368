"""Tests for shared_transforms.kspace.sampling: FFT, k-space simulation, Cartesian masks and the MONAI-style
transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from monai.transforms import Compose

from shared_transforms.errors import InputError
from shared_transforms.kspace.fourier import apply_mask, fft2c, ifft2c, kspace_from_magnitude, smooth_phase, zero_filled
from shared_transforms.kspace.masks import cartesian_mask, seed_from_name
from shared_transforms.kspace.sampling import (
    CartesianUndersample,
    CartesianUndersampled,
    SimulateKspace,
    SimulateKspaced,
)


def _phantom(h: int = 32, w: int = 40, seed: int = 0) -> torch.Tensor:
    """A nonnegative magnitude image (1, H, W): a bright ellipse plus texture."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    ellipse = ((yy / 0.8) ** 2 + (xx / 0.6) ** 2 < 1).float()
    return (ellipse * (0.5 + 0.5 * torch.rand(h, w, generator=g)))[None]


# ---------------------------------------------------------------- FFT


def test_fft_round_trip_exact():
    x = torch.randn(2, 3, 24, 20, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ifft2c(fft2c(x)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(fft2c(ifft2c(x)), x, atol=1e-5, rtol=0)


def test_fft_is_orthonormal_parseval():
    x = torch.randn(4, 33, 28, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    k = fft2c(x)
    assert torch.isclose((k**2).sum(), (x**2).sum(), rtol=1e-10)


def test_fft_is_centred_and_matches_numpy():
    x = np.random.default_rng(2).standard_normal((16, 12, 2))
    k = fft2c(x)  # numpy in, numpy out
    assert isinstance(k, np.ndarray)
    z = x[..., 0] + 1j * x[..., 1]
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(z), norm="ortho"))
    np.testing.assert_allclose(k[..., 0] + 1j * k[..., 1], ref, atol=1e-5)
    # the DC sample of a constant image sits at the centre (H // 2, W // 2)
    ones = np.stack([np.ones((16, 12)), np.zeros((16, 12))], -1)
    k1 = np.abs(fft2c(ones)[..., 0])
    assert np.unravel_index(k1.argmax(), k1.shape) == (8, 6)


def test_fft_rejects_non_complex_layout():
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W, 2\)"):
        fft2c(torch.zeros(1, 8, 8))


# ---------------------------------------------------------------- k-space from magnitude, smooth phase


def test_smooth_phase_keeps_magnitude_and_is_smooth():
    h, w, max_phase, order = 48, 40, float(np.pi), 2
    phase = smooth_phase((h, w), max_phase, seed=3, order=order)
    assert phase.shape == (h, w)
    assert abs(phase.abs().max().item() - max_phase) < 1e-5
    assert phase.std() > 0.1  # not a constant map
    # smooth: Markov's inequality bounds the neighbour difference of a degree-n polynomial scaled to max |phi|
    bound_h = order**2 * max_phase * 2 / (h - 1)
    bound_w = order**2 * max_phase * 2 / (w - 1)
    assert phase.diff(dim=0).abs().max() <= bound_h + 1e-6
    assert phase.diff(dim=1).abs().max() <= bound_w + 1e-6
    white = torch.rand(h, w, generator=torch.Generator().manual_seed(0)) * 2 * max_phase - max_phase
    assert white.diff(dim=1).abs().max() > bound_w  # the smoothness check can fail
    # magnitude unchanged, phase is what was asked
    mag = _phantom(h, w)
    image = ifft2c(kspace_from_magnitude(mag, phase))
    torch.testing.assert_close(zero_filled(kspace_from_magnitude(mag, phase)), mag, atol=1e-5, rtol=0)
    inside = mag[0] > 0.1
    got_phase = torch.atan2(image[0, ..., 1], image[0, ..., 0])
    wrapped = torch.remainder(got_phase - phase + np.pi, 2 * np.pi) - np.pi
    assert wrapped[inside].abs().max() < 1e-4


def test_smooth_phase_seeded():
    a = smooth_phase((16, 16), 1.0, seed=5)
    torch.testing.assert_close(a, smooth_phase((16, 16), 1.0, seed=5))
    assert not torch.allclose(a, smooth_phase((16, 16), 1.0, seed=6))
    assert torch.count_nonzero(smooth_phase((16, 16), 0.0, seed=5)) == 0


def test_kspace_from_magnitude_without_phase_is_hermitian():
    mag = _phantom(16, 16)
    k = kspace_from_magnitude(mag)
    assert k.shape == (1, 16, 16, 2)
    # a real image has Hermitian-symmetric k-space: k(-f) = conj(k(f)); centred even grid: index i <-> (-i) mod N
    z = torch.view_as_complex(k[0].contiguous())
    flipped = torch.roll(torch.flip(z, dims=(0, 1)), shifts=(1, 1), dims=(0, 1))
    torch.testing.assert_close(flipped, z.conj(), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize("pattern", ["random", "equispaced"])
@pytest.mark.parametrize("acceleration,center_fraction", [(4, 0.08), (8, 0.04)])
def test_mask_acceleration_within_5_percent(pattern, acceleration, center_fraction):
    num_cols = 256
    for seed in range(25):
        mask = cartesian_mask((256, num_cols), acceleration, center_fraction, pattern, seed=seed)
        assert mask.shape == (1, num_cols, 1) and mask.dtype == torch.bool
        fraction = mask.sum().item() / num_cols
        assert abs(fraction * acceleration - 1) <= 0.05, (seed, fraction)


@pytest.mark.parametrize("pattern", ["random", "equispaced"])
@pytest.mark.parametrize("num_cols", [256, 255, 100])
def test_mask_centre_fully_sampled(pattern, num_cols):
    center_fraction = 0.08
    num_low = round(num_cols * center_fraction)
    for seed in range(10):
        mask = cartesian_mask((8, num_cols), 4, center_fraction, pattern, seed=seed).flatten()
        start = (num_cols - num_low + 1) // 2
        assert mask[start : start + num_low].all()
        assert mask[num_cols // 2]  # the DC column of the centred FFT
        assert start <= num_cols // 2 < start + num_low


def test_mask_seeds():
    args = ((64, 256), 8, 0.04, "random")
    a = cartesian_mask(*args, seed=11)
    assert torch.equal(a, cartesian_mask(*args, seed=11))
    assert not torch.equal(a, cartesian_mask(*args, seed=12))
    # a RandomState is used as given (so it advances); a Generator works too
    rs = np.random.RandomState(11)
    assert torch.equal(cartesian_mask(*args, seed=rs), a)
    assert not torch.equal(cartesian_mask(*args, seed=rs), a)
    assert torch.equal(
        cartesian_mask(*args, seed=np.random.default_rng(3)), cartesian_mask(*args, seed=np.random.default_rng(3))
    )
    assert seed_from_name("sub-01.nii.gz") == seed_from_name("sub-01.nii.gz") != seed_from_name("sub-02.nii.gz")
    with pytest.raises(TypeError, match="seed"):
        cartesian_mask(*args, seed=None)


def test_full_mask_zero_filled_equals_magnitude():
    mag = _phantom(32, 40)
    mask = cartesian_mask((32, 40), 1, 0.1, "random", seed=0)
    assert mask.all()
    k = kspace_from_magnitude(mag, smooth_phase((32, 40), 2.0, seed=0))
    torch.testing.assert_close(zero_filled(apply_mask(k, mask)), mag, atol=1e-5, rtol=0)
    # and an under-sampled one does not
    under = cartesian_mask((32, 40), 4, 0.1, "random", seed=0)
    assert (zero_filled(apply_mask(k, under)) - mag).abs().max() > 0.05


def test_apply_mask_removes_exactly_the_unsampled_columns():
    k = torch.randn(1, 24, 64, 2, generator=torch.Generator().manual_seed(0)) + 0.1
    mask = cartesian_mask((24, 64), 4, 0.08, "random", seed=1)
    cols = mask.flatten()
    y = apply_mask(k, mask)
    assert y.shape == k.shape
    assert torch.count_nonzero(y[:, :, ~cols]) == 0
    assert torch.equal(y[:, :, cols], k[:, :, cols])
    # rows (readout, axis H) are never removed: every row keeps the same sampled columns
    assert torch.equal((y.abs().sum(-1) > 0)[0], cols[None].expand(24, 64))
    # numpy k-space works too
    y_np = apply_mask(k.numpy(), mask)
    assert isinstance(y_np, np.ndarray) and np.array_equal(y_np, y.numpy())


def test_zero_filled_root_sum_of_squares_over_coils():
    mag = _phantom(16, 20)[0]
    theta = 0.3
    coils = torch.stack([mag * np.cos(theta), mag * np.sin(theta)])  # (coils=2, H, W), sum |s_i|^2 = 1
    k = kspace_from_magnitude(coils)  # (2, H, W, 2)
    rss = zero_filled(k, coil_dim=0)
    assert rss.shape == (1, 16, 20)
    torch.testing.assert_close(rss[0], mag, atol=1e-5, rtol=0)
    assert zero_filled(k, coil_dim=-4, keepdim=False).shape == (16, 20)
    assert zero_filled(k).shape == (2, 16, 20)  # single-coil default: no combination
    with pytest.raises(ValueError, match="coil_dim"):
        zero_filled(k, coil_dim=1)


@pytest.mark.parametrize(
    "acceleration,center_fraction,pattern,match",
    [
        (0.5, 0.08, "random", "acceleration"),
        (0, 0.08, "random", "acceleration"),
        (float("nan"), 0.08, "random", "acceleration"),
        (4, 0.0, "random", "center_fraction"),
        (4, 1.0, "random", "center_fraction"),
        (4, -0.1, "equispaced", "center_fraction"),
        (4, 0.3, "equispaced", "center_fraction"),  # the centre alone exceeds 1 / R
        (4, 0.08, "radial", "pattern"),
    ],
)
def test_bad_mask_parameters_raise(acceleration, center_fraction, pattern, match):
    with pytest.raises(ValueError, match=match):
        cartesian_mask((32, 64), acceleration, center_fraction, pattern, seed=0)
    with pytest.raises(ValueError, match=match):
        CartesianUndersample(acceleration=acceleration, center_fraction=center_fraction, pattern=pattern)
    with pytest.raises(ValueError, match=match):
        CartesianUndersampled("kspace", acceleration=acceleration, center_fraction=center_fraction, pattern=pattern)


# ---------------------------------------------------------------- transforms


def test_simulate_kspace_2d_seeded_and_magnitude_preserved():
    img = _phantom(32, 32)
    sim = SimulateKspace(max_phase_rad=1.5)
    k1 = sim.set_random_state(7)(img)
    assert k1.shape == (1, 32, 32, 2)
    torch.testing.assert_close(sim.set_random_state(7)(img), k1)
    assert not torch.allclose(sim(img), k1)  # the next call draws a new phase
    torch.testing.assert_close(zero_filled(k1), img, atol=1e-5, rtol=0)
    # no phase: the k-space of the real image
    torch.testing.assert_close(SimulateKspace()(img), kspace_from_magnitude(img))
    with pytest.raises(InputError, match="channel-first"):
        sim(torch.zeros(32, 32))


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_simulate_kspace_3d_slices_and_affine(slice_axis):
    vol = torch.rand(1, 6, 8, 10, generator=torch.Generator().manual_seed(0))
    affine = torch.tensor([[0.0, 0, 2, 5], [1.5, 0, 0, -3], [0, 1, 0, 7], [0, 0, 0, 1]], dtype=torch.float64)
    k = SimulateKspace(max_phase_rad=1.0, slice_axis=slice_axis).set_random_state(0)(MetaTensor(vol, affine=affine))
    others = [a for a in range(3) if a != slice_axis]
    assert k.shape == (1, vol.shape[1 + slice_axis], vol.shape[1 + others[0]], vol.shape[1 + others[1]], 2)
    # each slice is the 2D k-space of that slice of the volume
    image = zero_filled(k)  # (1, S, H, W)
    torch.testing.assert_close(image.as_tensor(), torch.movedim(vol, 1 + slice_axis, 1), atol=1e-5, rtol=0)
    # the affine maps voxel (s, h, w) of the reordered array to the same world point as the original voxel
    old = [2, 3, 4]
    new = [old[slice_axis], old[others[0]], old[others[1]]]
    world_old = affine @ torch.tensor([*old, 1.0], dtype=torch.float64)
    world_new = image.affine @ torch.tensor([*new, 1.0], dtype=torch.float64)
    torch.testing.assert_close(world_new, world_old)


def test_cartesian_undersample_array():
    k = kspace_from_magnitude(_phantom(32, 64))  # (1, H, W, 2)
    under = CartesianUndersample(acceleration=4, center_fraction=0.08, pattern="random")
    masked, mask, image = under.set_random_state(0)(k)
    assert masked.shape == k.shape and mask.shape == (1, 1, 64, 1) and image.shape == (1, 32, 64)
    assert mask.dtype == torch.bool and mask.sum() == 16
    assert torch.equal(mask.flatten(), cartesian_mask((32, 64), 4, 0.08, seed=np.random.RandomState(0)).flatten())
    torch.testing.assert_close(image, zero_filled(apply_mask(k, mask)))
    masked2, mask2, _ = under(k)
    assert not torch.equal(mask2, mask)  # a new mask per call
    _, mask3, _ = under(k, randomize=False)
    assert torch.equal(mask3, mask2)  # reused on request
    with pytest.raises(InputError, match="kspace"):
        under(torch.zeros(1, 32, 64))


def test_dict_pipeline_seeded_and_composable():
    affine = torch.diag(torch.tensor([0.8, 0.8, 1.0, 1.0], dtype=torch.float64))
    data = {"image": MetaTensor(_phantom(32, 48), affine=affine), "name": "sub-01"}
    pipeline = Compose(
        [
            SimulateKspaced("image", max_phase_rad=1.0),
            CartesianUndersampled(
                "kspace", acceleration=8, center_fraction=0.04, pattern="equispaced", zero_filled_key="zf"
            ),
        ]
    )
    out1 = pipeline.set_random_state(3)(data)
    out2 = pipeline.set_random_state(3)(data)
    # the sampling mask has its own key: "mask" is the brain mask everywhere in this project
    assert {"image", "kspace", "kspace_masked", "sampling_mask", "zf"} <= set(out1) and "mask" not in out1
    assert out1["kspace"].shape == (1, 32, 48, 2) and out1["zf"].shape == (1, 32, 48)
    assert torch.equal(out1["sampling_mask"], out2["sampling_mask"]) and torch.equal(out1["kspace"], out2["kspace"])
    assert torch.equal(out1["zf"].affine, affine)  # the zero-filled image stays on the input grid
    assert out1["sampling_mask"].flatten().sum() == 6  # round(48 / 8)
    batch = list_data_collate([out1, out2])
    assert batch["sampling_mask"].shape == (2, 1, 1, 48, 1) and batch["kspace_masked"].shape == (2, 1, 32, 48, 2)
    with pytest.raises(InputError, match="^kspace: "):
        CartesianUndersampled("kspace", 4, 0.08)({"kspace": torch.zeros(1, 8, 8)})
    with pytest.raises(ValueError, match="one k-space key"):
        CartesianUndersampled(["a", "b"], 4, 0.08)
