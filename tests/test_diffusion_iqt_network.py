"""Issue 12.1-2: DiffusionIQT's 3D U-Net at the authors' defaults, and the cross-batch mechanism against a direct
computation on the merged volume."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import REPO, load_bundle_scripts

scripts = load_bundle_scripts("diffusion_iqt")
from diffusion_iqt_bundle_scripts.cross_batch import boundary_pad, merge, split
from diffusion_iqt_bundle_scripts.diffusion import (
    alpha_sigma,
    cosine_log_snr,
    posterior,
    q_sample,
    sample,
    training_input,
)
from diffusion_iqt_bundle_scripts.network import DiffusionIQTUNet, SubPatchConv3d, count_flops

#: a small network for forward passes on the CPU: 27 sub-patches of 8³ (one 24³ patch), attention at every level
sys.path.insert(0, str(REPO / "tools"))  # the studies (tools/studies/)
TINY = {"dim": 16, "init_dim": 16, "attention_heads": 2, "attention_dim_head": 8, "attention_patch_size": 8}


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_are_the_authors():
    """13,606,665 without attention and 14,450,441 with it (the authors' SRUnet256 as their train.py builds it)."""
    net = DiffusionIQTUNet()
    assert count_parameters(net) == 14_450_441
    # about 5 TFLOP (2 x multiply-adds) per 96³ patch forward, counted on the meta device; 8x less per 48³
    flops = count_flops(net, 96)
    assert 4.9e12 < flops < 5.2e12 and abs(count_flops(net, 48) * 8 / flops - 1) < 0.05
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


def test_attention_sees_across_sub_patches():
    """The encoder attention runs on the merged volume (as the network's forward applies it): a change in one corner
    sub-patch changes the output of the opposite one."""
    torch.manual_seed(0)
    net = DiffusionIQTUNet(**TINY).eval()
    attention = net.downs[0]["attention"]

    def attend(x):  # the transformer on the merged 24³ volume, added to the input
        return split(attention(merge(x, 3)), 3) + x

    x = torch.randn(27, 16, 8, 8, 8)
    y = x.clone()
    y[26] += torch.randn_like(y[26])
    with torch.no_grad():
        assert not torch.allclose(attend(y)[0], attend(x)[0], atol=1e-6)


def test_forward_shapes_time_and_gradients():
    torch.manual_seed(0)
    net = DiffusionIQTUNet(**TINY)
    x = torch.randn(2, 2, 24, 24, 24)  # two big patches of 27 sub-patches of 8³
    t = torch.tensor([-2.0, 1.0])
    out = net(x, t)
    assert out.shape == (2, 1, 24, 24, 24) and torch.isfinite(out).all()
    with torch.no_grad():  # the big patches do not see each other (eval: no attention dropout)
        net.eval()
        assert torch.allclose(net(x, t)[1:], net(x[1:], t[1:]), atol=1e-5)
        net.train()
    assert not torch.allclose(out, net(x, t + 4.0))  # the time input (logSNR) conditions the output
    out.square().mean().backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if not n.startswith(("mid_", "norm_cond")))
    plain = DiffusionIQTUNet(**TINY, boundary=False, cross_batch_factor=1, attention=(False, False, False))
    assert plain(torch.randn(2, 2, 8, 8, 8), torch.zeros(2)).shape == (2, 1, 8, 8, 8)  # independent sub-patches


# ---------------------------------------------------------------------------------------------------------------------
# issue 12.3: the diffusion (continuous cosine log-SNR, x0 prediction, ancestral and DDIM samplers)


def test_pixel_shuffles_are_monais_and_the_network_scripts():
    """Issue 31.4: the 3D pixel shuffle and unshuffle are MONAI's (the same channel order, so the same weights), written
    so that ``torch.jit.script`` compiles the network; the scripted network computes what the eager one does."""
    import warnings

    from diffusion_iqt_bundle_scripts.network import pixel_shuffle_3d, pixel_unshuffle_3d
    from monai.networks.utils import pixelshuffle, pixelunshuffle

    x = torch.randn(2, 16, 4, 6, 8)
    assert torch.equal(pixel_shuffle_3d(x, 2), pixelshuffle(x, spatial_dims=3, scale_factor=2))
    assert torch.equal(pixel_unshuffle_3d(x, 2), pixelunshuffle(x, spatial_dims=3, scale_factor=2))
    assert torch.equal(pixel_shuffle_3d(pixel_unshuffle_3d(x, 2), 2), x)
    torch.manual_seed(0)
    net = DiffusionIQTUNet(**TINY).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in torch >= 2.10
        scripted = torch.jit.script(net)
    x, t = torch.rand(2, 2, 24, 24, 24), torch.rand(2)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x, t), net(x, t))


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
    again = sample(
        oracle, torch.zeros_like(x0), num_steps=5, sampler=sampler, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(out, again)
    with pytest.raises(ValueError, match="sampler"):
        sample(oracle, x0, sampler="euler")


def test_training_input_is_the_noised_clean_image_beside_the_condition():
    x0, condition = torch.rand(3, 1, 2, 2, 2), torch.rand(3, 1, 2, 2, 2)
    inputs, log_snr = training_input(x0, condition, generator=torch.Generator().manual_seed(0))
    assert inputs.shape == (3, 2, 2, 2, 2) and torch.equal(inputs[:, 1:], condition) and log_snr.shape == (3,)
    # x_t = alpha(t) x0 + sigma(t) eps with the generator's t (one per big patch) and eps, drawn in that order
    generator = torch.Generator().manual_seed(0)
    t = torch.rand(3, generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    alpha, sigma = alpha_sigma(cosine_log_snr(t).reshape(-1, 1, 1, 1, 1))
    assert torch.allclose(inputs[:, :1], alpha * x0 + sigma * eps) and torch.allclose(log_snr, cosine_log_snr(t))
    x_t, _ = q_sample(x0, torch.zeros(3), torch.zeros_like(x0))
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


# ---------------------------------------------------------------------------------------------------------------------
# issue 12.8: train.json keeps the paper's recipe; the shipped weights' reduced budget is train_cpu.json


def test_train_json_builds_the_papers_network_and_inference_builds_the_shipped_one():
    import json
    from pathlib import Path

    from monai.bundle import ConfigParser

    configs = Path(__file__).resolve().parents[1] / "bundles" / "diffusion_iqt" / "configs"
    full = ConfigParser(json.loads((configs / "train.json").read_text()))
    assert full["network_def"]["_target_"] == "scripts.network.DiffusionIQTUNet"
    kwargs = {k: v for k, v in full["network_def"].items() if k != "_target_"}
    assert count_parameters(DiffusionIQTUNet(**kwargs)) == 14_450_441
    assert (
        full["patch_size"] == [96, 96, 96] and full["network_def"]["cross_batch_factor"] == 3
    )  # 27 sub-patches of 32³
    reduced = ConfigParser()
    reduced.read_config([str(configs / "train.json"), str(configs / "train_cpu.json")])
    inference = ConfigParser(json.loads((configs / "inference.json").read_text()))
    assert reduced["network_def"] == inference["network_def"], "inference.json must build the network that shipped"


# ---------------------------------------------------------------------------------------------------------------------
# issue 12, seams: the step across the sub-patch borders, windows vs whole vs no mechanism


def test_border_step_ratio_sees_a_seam_and_not_a_smooth_ramp():
    from studies.diffusion_iqt_seams import border_step_ratio, border_steps

    x = np.linspace(0, 1, 24)[:, None, None] * np.ones((24, 24, 24))
    mask = np.ones(x.shape, bool)
    every_8th = [[8, 16]] * 3
    assert abs(border_step_ratio(x, mask, every_8th) - 1.0) < 1e-6
    seamed = x + (np.arange(24) // 8)[:, None, None] * 0.2  # a jump of 0.2 at planes 8 and 16 along x
    assert border_step_ratio(seamed, mask, every_8th) > 3
    assert abs(border_step_ratio(seamed, mask, [[4, 12, 20]] * 3) - 1.0) < 0.5  # between the jumps: no seam
    at, elsewhere = border_steps(seamed, mask, [[8, 16], [], []])  # only the x borders: every pair there jumps
    assert abs(at - (0.2 + 1 / 23)) < 1e-9 and elsewhere < 0.05


class _PieceIds(torch.nn.Module):
    """A stand-in network whose prediction is a random constant per call and sub-patch: the sampled output (one DDIM
    step returns the prediction) changes exactly where the inferer's pieces meet."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor, self.generator = factor, torch.Generator().manual_seed(0)

    def forward(self, x, log_snr):
        sub = split(x[:, :1], self.factor)
        values = torch.rand(sub.shape[0], generator=self.generator) * 1.8 - 0.8  # in the model range, above -1
        return merge(values.view(-1, 1, 1, 1, 1).expand_as(sub), self.factor)


@pytest.mark.parametrize(
    "mode, window_size, factor, shape",
    [("whole", 24, 3, (40, 33, 26)), ("windows", 24, 3, (48, 24, 72)), ("windows", 8, 1, (40, 32, 16))],
)
def test_piece_borders_are_where_the_sampled_pieces_meet(mode, window_size, factor, shape):
    """Issue 12, seams: each way is scored at its own borders; they must be where its pieces really meet (sub-patch
    edges after the whole mode's padding, window edges). Windows without overlap: no blending blurs the edges."""
    from diffusion_iqt_bundle_scripts.inferer import DiffusionIQTInferer

    inferer = DiffusionIQTInferer(
        num_steps=1,
        sampler="ddim",
        mode=mode,
        window_size=window_size,
        overlap=0.0,
        factor=factor,
        sub_multiple=2,
        skip_background=False,
    )
    out = inferer(torch.full((1, 1, *shape), 0.5), _PieceIds(factor))[0, 0].numpy()
    borders = inferer.piece_borders(shape)
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        changes = np.flatnonzero(np.abs(np.diff(out, axis=axis)).max(axis=others) > 1e-6) + 1
        assert changes.tolist() == borders[axis].tolist(), (axis, changes, borders[axis])


def test_piece_borders_follow_monais_windows():
    """MONAI's last window ends at the volume's end (33 = 4 x 8 + 1: the last window is 25..33, so 24..32 ends at 32
    inside it), windows overlap by ``overlap``, and an axis shorter than a window is padded on both sides."""
    from diffusion_iqt_bundle_scripts.inferer import DiffusionIQTInferer

    plain = DiffusionIQTInferer(mode="windows", window_size=8, overlap=0.0, factor=1)
    assert [b.tolist() for b in plain.piece_borders((16, 33, 6))] == [[8], [8, 16, 24, 25, 32], []]
    windows = DiffusionIQTInferer(mode="windows", window_size=24, overlap=0.25, factor=3)
    # windows start at 0, 18 and 36 (stride 18) on 60 voxels; sub-patch edges every 8 voxels inside each
    assert windows.piece_borders((60, 24, 20))[0].tolist() == [8, 16, 18, 24, 26, 34, 36, 42, 44, 52]
    assert windows.piece_borders((60, 24, 20))[2].tolist() == [6, 14]  # padded by 2 in front: edges at 8 - 2, 16 - 2
    assert windows._num_windows((1, 1, 60, 24, 20)) == 3


def test_seams_study_runs_the_three_ways(tmp_path):
    from conftest import tiny_subjects
    from studies.diffusion_iqt_seams import main

    kwargs = {**TINY, "attention_patch_size": 4}
    torch.manual_seed(0)
    ckpt = tmp_path / "w.pt"
    torch.save(DiffusionIQTUNet(**kwargs).state_dict(), ckpt)
    (tmp_path / "data").mkdir()
    tiny = tiny_subjects(tmp_path / "data", 2, (0, 0, 2))
    rows = main(
        tiny["datalist"],
        out_dir=str(tmp_path / "out"),
        ckpt_path=str(ckpt),
        num_steps=1,
        window_size=24,
        max_subjects=1,
        overrides={f"network_def#{k}": v for k, v in kwargs.items()},
        precision="float32",
    )
    assert [r["way"] for r in rows] == ["windows", "whole", "plain"]
    assert all(np.isfinite(r["border_step_ratio"]) and np.isfinite(r["psnr_mask"]) for r in rows)
    assert "| plain |" in (tmp_path / "out" / "seams.md").read_text()
