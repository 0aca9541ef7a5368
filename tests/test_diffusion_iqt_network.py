"""Issue 12.1-2: DiffusionIQT's 3D U-Net at the authors' defaults, and the cross-batch mechanism against a direct
computation on the merged volume."""

from __future__ import annotations

import pytest
import torch
from conftest import load_bundle_scripts

scripts = load_bundle_scripts("diffusion_iqt")
from diffusion_iqt_bundle_scripts.cross_batch import boundary_pad, merge, split
from diffusion_iqt_bundle_scripts.diffusion import (
    alpha_sigma,
    cosine_log_snr,
    diffusion_loss,
    posterior,
    q_sample,
    sample,
)
from diffusion_iqt_bundle_scripts.network import DiffusionIQTUNet, SubPatchConv3d

#: a small network for forward passes on the CPU: 27 sub-patches of 8³ (one 24³ patch), attention at every level
TINY = {"dim": 16, "init_dim": 16, "attention_heads": 2, "attention_dim_head": 8, "attention_patch_size": 8}


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_are_the_authors():
    """13,606,665 without attention and 14,450,441 with it (the authors' SRUnet256 as their train.py builds it)."""
    assert count_parameters(DiffusionIQTUNet()) == 14_450_441
    assert count_parameters(DiffusionIQTUNet(attention=(False, False, False))) == 13_606_665


def test_split_and_merge_are_inverse():
    volume = torch.randn(2, 3, 12, 18, 6)
    sub = split(volume, 3)
    assert sub.shape == (54, 3, 4, 6, 2)
    assert torch.equal(merge(sub, 3), volume)
    assert torch.equal(sub[1], volume[0, :, :4, :6, 2:4])  # sub-patch order (p1 p2 p3): the last axis fastest
    with pytest.raises(ValueError, match="divisible"):
        split(torch.zeros(1, 1, 10, 9, 9), 3)


def test_boundary_padding_gives_the_merged_volumes_convolution():
    torch.manual_seed(0)
    volume = torch.randn(2, 4, 15, 15, 15)  # two big patches of 3³ sub-patches of 5³
    layer = SubPatchConv3d(4, 6, boundary=True, factor=3)
    direct = torch.nn.functional.conv3d(volume, layer.conv.weight, layer.conv.bias, padding=1)
    assert torch.allclose(merge(layer(split(volume, 3)), 3), direct, atol=1e-5)
    # the padding holds the neighbours' voxels, zeros only outside the big patch
    padded = boundary_pad(split(volume, 3), 3)
    assert padded.shape == (54, 4, 7, 7, 7)
    assert torch.equal(padded[13, :, 1:-1, 1:-1, 1:-1], volume[0, :, 5:10, 5:10, 5:10])  # the centre sub-patch
    assert torch.equal(padded[13], volume[0, :, 4:11, 4:11, 4:11])
    assert torch.count_nonzero(padded[0, :, 0]) == 0


def test_attention_sees_across_sub_patches_and_equals_the_merged_computation():
    torch.manual_seed(0)
    net = DiffusionIQTUNet(**TINY).eval()
    attention = net.downs[0]["attention"]
    x = torch.randn(27, 16, 8, 8, 8)
    direct = split(attention(merge(x, 3)), 3) + x  # the transformer on the merged 24³ volume
    assert torch.allclose(net._attend(attention, x), direct, atol=1e-5)
    y = x.clone()
    y[26] += torch.randn_like(y[26])  # change one corner sub-patch: the output of the opposite one changes too
    assert not torch.allclose(net._attend(attention, y)[0], net._attend(attention, x)[0], atol=1e-6)


def test_forward_shapes_time_and_gradients():
    torch.manual_seed(0)
    net = DiffusionIQTUNet(**TINY)
    x = torch.randn(27, 2, 8, 8, 8)
    t = torch.full((27,), -2.0)
    out = net(x, t)
    assert out.shape == (27, 1, 8, 8, 8) and torch.isfinite(out).all()
    assert not torch.allclose(out, net(x, t + 4.0))  # the time input (logSNR) conditions the output
    out.square().mean().backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if not n.startswith(("mid_", "norm_cond")))
    plain = DiffusionIQTUNet(**TINY, boundary=False, cross_batch_factor=1, attention=(False, False, False))
    assert plain(torch.randn(2, 2, 8, 8, 8), torch.zeros(2)).shape == (2, 1, 8, 8, 8)  # independent sub-patches


# ---------------------------------------------------------------------------------------------------------------------
# issue 12.3: the diffusion (continuous cosine log-SNR, x0 prediction, ancestral and DDIM samplers)


def test_cosine_schedule():
    t = torch.linspace(0, 1, 101)
    log_snr = cosine_log_snr(t)
    assert torch.all(log_snr[1:] < log_snr[:-1])
    assert abs(float(log_snr[0]) - 8.77) < 0.05 and float(log_snr[-1]) < -20
    alpha, sigma = alpha_sigma(log_snr)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(t), atol=1e-6)


def test_posterior_is_the_gaussian_posterior():
    """The authors' ``c``-form equals q(x_s | x_t, x_0) written out (alpha_{t|s} = alpha_t / alpha_s)."""
    torch.manual_seed(0)
    x0, xt = torch.randn(4, 1, 3, 3, 3), torch.randn(4, 1, 3, 3, 3)
    t, s = torch.tensor([0.9, 0.6, 0.3, 0.05]), torch.tensor([0.8, 0.5, 0.1, 0.0])
    mean, var = posterior(x0, xt, t, s)
    a_t, s_t = alpha_sigma(cosine_log_snr(t))
    a_s, s_s = alpha_sigma(cosine_log_snr(s))
    a_ts = a_t / a_s
    var_ts = s_t**2 - a_ts**2 * s_s**2
    shape = (-1, 1, 1, 1, 1)
    expect_mean = (a_s * var_ts / s_t**2).reshape(shape) * x0 + (a_ts * s_s**2 / s_t**2).reshape(shape) * xt
    assert torch.allclose(mean, expect_mean, atol=1e-5)
    assert torch.allclose(var.flatten(), (var_ts * s_s**2 / s_t**2), atol=1e-6)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_samplers_reach_the_clean_image_with_a_perfect_denoiser(sampler):
    x0 = torch.rand(2, 1, 4, 4, 4)

    def oracle(x, log_snr):
        return x0

    gen = torch.Generator().manual_seed(0)
    out = sample(oracle, torch.zeros_like(x0), num_steps=5, sampler=sampler, generator=gen)
    # ddim's last step returns x0_hat; the ancestral posterior mean at s = 0 is within sigma(0) = 0.0125 of it
    assert torch.allclose(out, x0, atol=1e-6 if sampler == "ddim" else 2e-2)
    again = sample(oracle, torch.zeros_like(x0), num_steps=5, sampler=sampler, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    with pytest.raises(ValueError, match="sampler"):
        sample(oracle, x0, sampler="euler")


def test_training_loss_shares_one_time_per_big_patch():
    seen = []

    def denoise(x, log_snr):
        seen.append(log_snr)
        return x[:, :1] * 0

    x0 = torch.rand(54, 1, 2, 2, 2)
    loss = diffusion_loss(denoise, x0, x0, group=27, generator=torch.Generator().manual_seed(0))
    (log_snr,) = seen
    assert torch.all(log_snr[:27] == log_snr[0]) and torch.all(log_snr[27:] == log_snr[27]) and log_snr[0] != log_snr[27]
    assert torch.isclose(loss, (x0**2).mean())
    x_t, _ = q_sample(x0, torch.zeros(54), torch.zeros_like(x0))
    assert torch.allclose(x_t, x0, atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------------
# issue 12.5: sampling a whole volume (windows of 27 sub-patches, or the whole volume as one cross-batch)


@pytest.mark.parametrize("mode", ["windows", "whole"])
def test_inferer_samples_a_volume_of_any_size(mode):
    from diffusion_iqt_bundle_scripts.inferer import DiffusionIQTInferer

    torch.manual_seed(0)
    net = DiffusionIQTUNet(**{**TINY, "attention_patch_size": 4}).eval()
    volume = torch.rand(1, 1, 20, 14, 10)
    kwargs = {"num_steps": 2, "mode": mode, "window_size": 12, "overlap": 0.25, "sub_multiple": 4}
    inferer = DiffusionIQTInferer(**kwargs, num_samples=2, seed=3)
    out = inferer(volume, net)
    assert out.shape == (1, 2, 20, 14, 10) and torch.isfinite(out).all()
    assert 0 <= float(out[:, 0].min()) and float(out[:, 0].max()) <= 1 and float(out[:, 1].min()) >= 0
    units = inferer.last_stats["units"]
    assert inferer.last_stats["network_evaluations"] == 2 * 2 * units == inferer.evaluations_per_unit() * units
    assert units == (1 if mode == "whole" else 2 * 2 * 1)  # windows of 12, stride 9: 2 along 20 and 14, 1 along 10
    again = DiffusionIQTInferer(**kwargs, num_samples=2, seed=3)(volume, net)
    assert torch.equal(out, again)
    single = DiffusionIQTInferer(**kwargs, num_samples=1, seed=3)(volume, net)
    assert single.shape == (1, 1, 20, 14, 10)
