"""Tests of the cfm bundle's network (CFMUNet), flow (straight path, sources, loss) and ODE solvers.

Facts checked (the paper, arXiv 2510.12408, and the authors' code, as bundles/cfm/docs/README.md lists them): the
path, source, loss and Euler grid; the network and its parameter counts.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import load_bundle_scripts
from torch import nn



def _load_scripts():
    return load_bundle_scripts("cfm")


_load_scripts()
from cfm_bundle_scripts import flow
from cfm_bundle_scripts.network import CFMUNet, Upsample, count_flops, resize_state_from_pixel_shuffle

from shared_transforms.inference import ode


def _n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _tiny(**kwargs) -> CFMUNet:
    cfg = dict(dim=16, heads=2, dim_head=8, kernel_sizes=(1, 3, 7, 15))
    cfg.update(kwargs)
    return CFMUNet(**cfg)


@pytest.fixture(scope="module")
def default_net() -> CFMUNet:
    torch.manual_seed(0)
    return CFMUNet().eval()


# ----------------------------------------------------------------------------------------------------------- network


def test_parameter_counts_match_paper_and_repo(default_net):
    assert _n_params(default_net) == 5_253_249  # paper "5.25M": 4 heads x 32
    assert _n_params(CFMUNet(heads=8)) == 5_384_321  # authors' repository default: 8 heads x 32
    assert _n_params(CFMUNet(heads=8, dim_head=16)) == 5_253_249  # same inner width 128


@pytest.mark.parametrize("hw", [(64, 48), (40, 72)])
def test_output_shape(default_net, hw):
    x = torch.randn(2, 2, *hw)
    with torch.no_grad():
        y = default_net(x, torch.rand(2))
    assert y.shape == (2, 1, *hw)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("hw", [(60, 48), (64, 44)])
def test_size_not_divisible_by_8_raises(default_net, hw):
    with pytest.raises(ValueError, match="divisible by 8"):
        default_net(torch.randn(1, 2, *hw), torch.rand(1))


def test_wrong_channels_or_time_raise(default_net):
    with pytest.raises(ValueError, match="x_t, x_low"):
        default_net(torch.randn(1, 1, 16, 16), torch.rand(1))
    with pytest.raises(ValueError, match="t must have"):
        default_net(torch.randn(3, 2, 16, 16), torch.rand(2))


def test_time_input_none_scalar_and_batch(default_net):
    x = torch.randn(2, 2, 32, 24)
    with torch.no_grad():
        y_none = default_net(x)  # MONAI verify_net_in_out calls net(x)
        y_zero = default_net(x, torch.zeros(2))
        y_scalar = default_net(x, torch.tensor(0.7))
        y_batch = default_net(x, torch.full((2,), 0.7))
        y_other = default_net(x, torch.full((2,), 0.2))
    torch.testing.assert_close(y_none, y_zero)
    torch.testing.assert_close(y_scalar, y_batch)
    assert (y_batch - y_other).abs().max() > 1e-4  # the time embedding reaches the output


def test_torchscript_and_channels_last_match_eager(default_net):
    x = torch.randn(2, 2, 32, 40)
    t = torch.tensor([0.1, 0.9])
    with torch.no_grad():
        ref = default_net(x, t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in torch >= 2.10
            scripted = torch.jit.script(default_net)
        out = scripted(x, t)
        out_none = scripted(x)
        net_cl = CFMUNet().eval()
        net_cl.load_state_dict(default_net.state_dict())
        net_cl = net_cl.to(memory_format=torch.channels_last)
        out_cl = net_cl(x.contiguous(memory_format=torch.channels_last), t)
    assert (out - ref).abs().max() < 1e-4
    assert (out_none - default_net(x)).abs().max() < 1e-4
    assert (out_cl - ref).abs().max() < 1e-4


def test_gradients_correct_with_in_place_ops():
    # directional derivative d/de L(theta + e d, x + e dx) by central differences vs autograd (float64)
    torch.manual_seed(1)
    net = _tiny(dim=8, kernel_sizes=(1, 3)).double()
    x = torch.randn(2, 2, 16, 8, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)
    params = list(net.parameters())
    dirs = [torch.randn_like(p) for p in params]
    dx = torch.randn_like(x)
    loss = net(x, t).pow(2).sum()
    grads = torch.autograd.grad(loss, params + [x])
    analytic = sum((g * d).sum() for g, d in zip(grads, dirs + [dx]))
    eps = 1e-6
    with torch.no_grad():
        values = []
        for sign in (1.0, -1.0):
            for p, d in zip(params, dirs):
                p.add_(d, alpha=sign * eps)
            values.append(net(x + sign * eps * dx, t).pow(2).sum())
            for p, d in zip(params, dirs):
                p.sub_(d, alpha=sign * eps)
    numeric = (values[0] - values[1]) / (2 * eps)
    assert abs(numeric - analytic) < 1e-5 * max(1.0, abs(analytic))


def _carried_over(old: Upsample) -> dict:
    """One Up's state through :func:`resize_state_from_pixel_shuffle` (which works on a whole network's keys)."""
    state = resize_state_from_pixel_shuffle({f"upsamples.0.{k}": v for k, v in old.state_dict().items()})
    return {k.removeprefix("upsamples.0."): v for k, v in state.items()}


def test_resize_upsampling_carries_pixel_shuffle_weights_over():
    """Issue 30.3: ``upsample="resize"`` (bilinear x2, then one 1x1 kernel for every pixel) has a quarter of the Up
    kernels; the carried-over weights are the mean of the four sub-pixel kernels, so on a constant input the new Up
    gives the 2 x 2 mean of the old one's output, and with four equal sub-pixel kernels exactly the old output."""
    torch.manual_seed(0)
    old, new = Upsample(8, 4), Upsample(8, 4, mode="resize")
    new.load_state_dict(_carried_over(old))
    x = torch.ones(1, 8, 5, 6)
    with torch.no_grad():
        a, b = old(x), new(x)
        assert a.shape == b.shape == (1, 4, 10, 12)
        cells = a.reshape(1, 4, 5, 2, 6, 2)
        assert torch.allclose(b, cells.mean(dim=(3, 5), keepdim=True).expand_as(cells).reshape(a.shape), atol=1e-6)
        w = old.conv.weight.reshape(4, 4, 8, 1, 1)  # every sub-pixel gets the first one's kernel and bias
        old.conv.weight.copy_(w[:, :1].expand_as(w).reshape(16, 8, 1, 1))
        old.conv.bias.copy_(old.conv.bias.reshape(4, 4)[:, :1].expand(4, 4).reshape(16))
        new.load_state_dict(_carried_over(old))
        y = torch.rand(1, 8, 5, 6)
        assert torch.allclose(new.conv(y), old(y)[..., ::2, ::2], atol=1e-6)
    net = CFMUNet(dim=16, dim_mults=(1, 2), heads=2, dim_head=8, upsample="resize")
    assert net(torch.rand(1, 2, 16, 16), torch.tensor([0.5])).shape == (1, 1, 16, 16)
    with pytest.raises(ValueError, match="upsample"):
        CFMUNet(dim=16, dim_mults=(1, 2), upsample="transposed")


def test_count_flops_matches_layer_shapes():
    # independent count: 2 x MACs of every conv / linear from hooks, plus the two attention products
    net = _tiny().eval()
    h, w = 48, 40
    macs = []

    def conv_hook(m, inp, out):
        macs.append(out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1])

    def linear_hook(m, inp, out):
        macs.append(out.numel() * m.in_features)

    handles = [m.register_forward_hook(conv_hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    handles += [m.register_forward_hook(linear_hook) for m in net.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        net(torch.zeros(1, 2, h, w), torch.zeros(1))
    for handle in handles:
        handle.remove()
    n_tokens = (h // 8) * (w // 8)
    attention_macs = 2 * n_tokens * n_tokens * 2 * 8  # q k^T and attn v, heads x dim_head = 16
    expected = 2 * (sum(macs) + attention_macs)
    assert count_flops(net, h, w) == pytest.approx(expected, rel=1e-9)
    # a slice that is not a multiple of 8 is counted on its padded size
    assert count_flops(net, h - 3, w - 5) == pytest.approx(expected, rel=1e-9)


# -------------------------------------------------------------------------------------------------------------- flow


def test_straight_path_endpoints_and_target():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 1, 8, 8, generator=g)
    x1 = torch.randn(3, 1, 8, 8, generator=g)
    path = flow.StraightPath()
    t, xt, ut = path.sample_location_and_conditional_flow(x0, x1, torch.tensor([0.0, 1.0, 0.25]))
    assert torch.equal(xt[0], x0[0])
    assert torch.equal(xt[1], x1[1])
    torch.testing.assert_close(xt[2], 0.25 * x1[2] + 0.75 * x0[2])
    torch.testing.assert_close(ut, x1 - x0)
    t2, _, _ = path.sample_location_and_conditional_flow(x0, x1, generator=g)
    assert t2.shape == (3,) and ((t2 >= 0) & (t2 < 1)).all()


def test_sources_distribution_and_seed():
    like = torch.empty(64, 1, 64, 64)
    u = flow.sample_source(like, "uniform", torch.Generator().manual_seed(3))
    assert u.shape == like.shape and u.dtype == like.dtype
    assert u.min() >= -1 and u.max() <= 1
    assert abs(u.mean().item()) < 0.01
    assert abs(u.var().item() - 1.0 / 3.0) < 0.01
    assert u.min() < -0.99 and u.max() > 0.99  # fills [-1, 1], not [0, 1]
    torch.testing.assert_close(u, flow.sample_source(like, "uniform", torch.Generator().manual_seed(3)))
    n = flow.sample_source(like, "gaussian", torch.Generator().manual_seed(3))
    assert abs(n.mean().item()) < 0.01 and abs(n.var().item() - 1.0) < 0.02
    assert n.abs().max() > 3
    with pytest.raises(ValueError, match="source kind"):
        flow.sample_source(like, "laplace")


def test_sample_time_and_ranges():
    t = flow.sample_time(20000, torch.Generator().manual_seed(0))
    assert t.shape == (20000,) and t.min() >= 0 and t.max() < 1
    assert abs(t.mean().item() - 0.5) < 0.01
    x01 = torch.tensor([0.0, 0.25, 1.0])
    torch.testing.assert_close(flow.to_model_range(x01), torch.tensor([-1.0, -0.5, 1.0]))
    torch.testing.assert_close(flow.from_model_range(flow.to_model_range(x01)), x01)
    torch.testing.assert_close(flow.from_model_range(torch.tensor([-1.5, 1.2]), clip=True), torch.tensor([0.0, 1.0]))


def test_cfm_loss_is_mse_to_straight_target():
    torch.manual_seed(0)
    net = _tiny().eval()
    x1 = torch.rand(2, 1, 16, 16) * 2 - 1
    x_low = torch.rand(2, 1, 16, 16) * 2 - 1
    loss, info = flow.cfm_loss(net, x1, x_low, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # same draws, same order: x0 then t
    x0 = flow.sample_source(x1, "uniform", g)
    t = flow.sample_time(2, g)
    xt = t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * x0
    with torch.no_grad():
        v = net(torch.cat([xt, x_low], 1), t)
    torch.testing.assert_close(info["t"], t)
    torch.testing.assert_close(info["target"], x1 - x0)
    torch.testing.assert_close(loss.detach(), ((v - (x1 - x0)) ** 2).mean())
    assert loss.requires_grad and not info["prediction"].requires_grad


def test_loss_decreases_when_overfitting_one_pair():
    torch.manual_seed(0)
    net = _tiny(kernel_sizes=(1, 3))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    x1 = (0.8 * torch.cos(3 * xx) * torch.sin(2 * yy))[None, None].repeat(4, 1, 1, 1)
    x_low = 0.5 * x1

    def evaluate() -> float:  # fixed draws: the same x0 and t before and after training
        with torch.no_grad():
            return flow.cfm_loss(net, x1, x_low, generator=torch.Generator().manual_seed(123))[0].item()

    before = evaluate()
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        loss, _ = flow.cfm_loss(net, x1, x_low, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    assert after < 0.7 * before, (before, after)


def test_conditional_velocity_matches_concatenation():
    torch.manual_seed(0)
    net = _tiny().eval()
    x_low = torch.randn(2, 1, 16, 16)
    v = flow.ConditionalVelocity(net, x_low)
    with torch.no_grad():
        for s in range(2):  # the second call reuses the buffer
            x = torch.randn(2, 1, 16, 16)
            t = torch.full((2,), 0.3 * s)
            torch.testing.assert_close(v(x, t), net(torch.cat([x, x_low], 1), t))
        out = ode.solve(v, torch.randn(2, 1, 16, 16), 2, "heun")
    assert out.shape == (2, 1, 16, 16)


@pytest.mark.parametrize("per", ["slice", "volume", "smooth"])
def test_source_samples_across_slices(per):
    """Issue 30: with a zero velocity the output is the source sample itself; "slice" draws independent ones (the
    paper), "volume" one shared by every slice, "smooth" one that changes slowly from slice to slice. Every mode is
    seeded and does not depend on the slice batch size."""
    from cfm_bundle_scripts.inferer import FlowMatchingInferer

    def zero_velocity(x, t):
        return torch.zeros_like(x[:, :1])

    vol = torch.full((1, 1, 24, 16, 16), 0.5)
    outs = [FlowMatchingInferer(num_steps=1, source_per=per, seed=3, slice_batch_size=b, spatial_dim=0,
                                empty_threshold=-1.0, margin_vox=0)(vol, zero_velocity)[0, 0] for b in (5, 24)]
    torch.testing.assert_close(outs[0], outs[1])
    x0 = outs[0].flatten(1) * 2 - 1  # back to the model range: the uniform source on [-1, 1]
    assert x0.min() >= -1 and x0.max() <= 1
    neighbours = torch.corrcoef(torch.stack([x0[10], x0[11]]))[0, 1]
    far = torch.corrcoef(torch.stack([x0[2], x0[20]]))[0, 1]
    if per == "slice":
        assert abs(neighbours) < 0.2 and abs(far) < 0.2
    elif per == "volume":
        assert torch.equal(x0[10], x0[11]) and torch.equal(x0[2], x0[20])
    else:
        assert neighbours > 0.9 and abs(far) < 0.2
