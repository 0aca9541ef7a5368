"""Tests of the flat bundle's network (FLATNet, its time grid and regulariser) and flow (target, loss).

FLAT: arXiv 2512.03020 (no official code; bundles/flat/scripts/network.py states what is our reading). Checked here:
the grid, that with Phi = 0 a cascade is gradient descent on the data term (against shared_transforms.kspace.sampling's
FFTs and MONAI's VarNetBlock), what full sampling gives, the trajectory, target and loss, both modes, gradients, shapes
and TorchScript tracing. Tiny sizes: H = W = 32, U-Net widths 4..16.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import load_bundle_scripts
from monai.apps.reconstruction.networks.blocks.varnetblock import VarNetBlock
from monai.apps.reconstruction.networks.nets.complex_unet import ComplexUnet
from torch import nn

from shared_transforms.kspace.fourier import apply_mask, fft2c, ifft2c
from shared_transforms.kspace.masks import cartesian_mask


def _load_scripts():
    return load_bundle_scripts("flat")


_load_scripts()
from flat_bundle_scripts.flow import interpolated_target, velocity_alignment_loss
from flat_bundle_scripts.network import (
    FLATNet,
    TimeConditionedComplexUnet,
    data_consistency_gradient,
    flow_step_sizes,
    flow_time_grid,
)

TINY = {"features": (4, 4, 8, 8, 16, 4), "time_embed_dim": 8}
H = W = 32


def _net(n: int = 4, **kwargs) -> FLATNet:
    torch.manual_seed(0)
    return FLATNet(num_cascades=n, **{**TINY, **kwargs})


def _zero_phi(net: FLATNet) -> FLATNet:
    """Phi = 0 exactly: zero the last (1x1) convolution of every U-Net."""
    for reg in net.regularisers:
        nn.init.zeros_(reg.unet.final_conv.weight)
        nn.init.zeros_(reg.unet.final_conv.bias)
    return net


def _data(b: int = 2, acceleration: float = 4, seed: int = 0):
    """Fully-sampled complex images x0 (B, 1, H, W, 2), their k-space, a column mask (1, 1, 1, W, 1), y = M F x0."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    ellipse = ((yy / 0.8) ** 2 + (xx / 0.6) ** 2 < 1).float()
    mag = ellipse * (0.5 + 0.5 * torch.rand(b, 1, H, W, generator=g))
    phase = 0.5 * xx + 0.3 * yy
    x0 = torch.stack([mag * torch.cos(phase), mag * torch.sin(phase)], dim=-1)  # (B, 1, H, W, 2)
    kspace = fft2c(x0)
    if acceleration == 1:
        mask = torch.ones(1, 1, 1, W, 1, dtype=torch.bool)
    else:
        mask = cartesian_mask((H, W), acceleration, 0.125, seed=seed).reshape(1, 1, 1, W, 1)
    return x0, kspace, mask, apply_mask(kspace, mask)


# ------------------------------------------------------------------------------------------------------- time grid


@pytest.mark.parametrize("n, alpha", [(12, 2.0), (5, 0.0), (8, 0.5), (1, 2.0)])
def test_time_grid(n, alpha):
    tau = flow_time_grid(n, alpha)
    assert tau.shape == (n + 1,) and tau.dtype == torch.float64
    assert tau[0] == 1 and tau[-1] == 0
    assert (tau[1:] < tau[:-1]).all()  # strictly decreasing: 1 (zero-filled) -> 0 (output)
    j = torch.arange(n + 1, dtype=torch.float64)
    torch.testing.assert_close(tau, (1 - j / n) ** (1 + alpha))
    deltas, etas = flow_step_sizes(tau, sigma=0.5)
    assert (deltas > 0).all() and math.isclose(float(deltas.sum()), 1.0, abs_tol=1e-12)
    torch.testing.assert_close(etas, deltas / 0.25)
    if alpha > 0 and n > 1:  # denser near t = 0: the steps shrink along the integration
        assert (deltas[1:] < deltas[:-1]).all()


def test_default_grid_values():
    net = FLATNet(**TINY)  # defaults: N = 12, alpha = 0 (uniform), sigma = 1
    assert net.num_cascades == 12 and net.times.shape == (13,)
    torch.testing.assert_close(net.deltas, torch.full((12,), 1 / 12))  # uniform steps
    torch.testing.assert_close(net.step_sizes, net.deltas)  # eta = |delta| / sigma^2, sigma = 1
    assert "step_sizes" not in dict(net.named_parameters()) and len(net.regularisers) == 1  # fixed, shared
    with pytest.raises(ValueError, match="alpha"):
        flow_time_grid(4, -1.0)
    with pytest.raises(ValueError, match="sigma"):
        flow_step_sizes(flow_time_grid(4), 0.0)
    with pytest.raises(ValueError, match="mode"):
        FLATNet(mode="euler")


# ------------------------------------------------------------------------------------------------- data term


def _direct_step(x, eta, y, mask):
    """x - eta F^H M (M F x - y), with the shared FFTs."""
    return x - eta * ifft2c(apply_mask(fft2c(x), mask) - y)


def test_zero_phi_is_gradient_descent_on_data_term():
    net = _zero_phi(_net(4))
    _, _, mask, y = _data()
    x = torch.randn(2, 1, H, W, 2, generator=torch.Generator().manual_seed(3))
    expected = x
    with torch.no_grad():
        for j in range(net.num_cascades):
            x = net.step(x, j, y, mask)
            expected = _direct_step(expected, float(net.step_sizes[j]), y, mask)
            torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)
    # A^H(Ax - y) is the gradient of ||Ax - y||^2 / 2 (autograd)
    x = torch.randn(1, 1, H, W, 2, requires_grad=True)
    (0.5 * (apply_mask(fft2c(x), mask) - y[:1]).pow(2).sum()).backward()
    torch.testing.assert_close(data_consistency_gradient(x.detach(), y[:1], mask), x.grad, atol=1e-5, rtol=0)


def test_zero_phi_from_zero_filled_is_a_fixed_point():
    # A x_1 = M F F^H M y = y: the data gradient vanishes at the zero-filled image, so with Phi = 0 nothing moves
    net = _zero_phi(_net(4))
    _, _, mask, y = _data()
    with torch.no_grad():
        images = net.trajectory(y, mask)
    zero_filled = ifft2c(y)
    for image in images:
        torch.testing.assert_close(image, zero_filled, atol=1e-5, rtol=0)


def test_full_sampling_with_zero_phi():
    net = _zero_phi(_net(4))
    x0, kspace, mask, y = _data(acceleration=1)
    torch.testing.assert_close(y, kspace)
    with torch.no_grad():
        # from A^H y (the network's start) the output is exactly the fully-sampled image
        torch.testing.assert_close(net(y, mask), x0, atol=1e-5, rtol=0)
        # from any other start: A^H A = I, so each step contracts the error by (1 - eta_j); sum eta = 1 does not
        # give exact consistency for N > 1, the product prod (1 - eta_j) remains
        start = torch.randn_like(x0)
        x = start
        for j in range(net.num_cascades):
            x = net.step(x, j, y, mask)
        factor = torch.prod(1 - net.step_sizes.double()).float()
        torch.testing.assert_close(x - x0, factor * (start - x0), atol=1e-5, rtol=0)
        # one cascade: eta = 1, exact data consistency in one step
        one = _zero_phi(_net(1))
        torch.testing.assert_close(one.step(start, 0, y, mask), x0, atol=1e-5, rtol=0)


def test_learned_cascade_is_monai_varnetblock_in_image_domain():
    net = _net(3, mode="learned_steps")
    _, _, mask, y = _data()
    with torch.no_grad():
        net.step_sizes.copy_(torch.tensor([0.3, 0.7, 1.2]))
    x = torch.randn(2, 1, H, W, 2, generator=torch.Generator().manual_seed(5))
    j = 1

    class NoTime(nn.Module):
        def __init__(self, reg):
            super().__init__()
            self.reg = reg

        def forward(self, image):
            return self.reg(image, torch.zeros(image.shape[0]))

    block = VarNetBlock(NoTime(net.regularisers[j]))
    with torch.no_grad():
        block.dc_weight.fill_(float(net.step_sizes[j]))
        ones = torch.stack([torch.ones(2, 1, H, W), torch.zeros(2, 1, H, W)], dim=-1)  # sensitivity maps = 1
        expected = ifft2c(block(fft2c(x), y, mask.expand(2, 1, 1, W, 1), ones))
        torch.testing.assert_close(net.step(x, j, y, mask), expected, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------- trajectory, loss


def test_trajectory_and_output_shape():
    net = _net(4).eval()
    _, _, mask, y = _data()
    with torch.no_grad():
        images, times = net.trajectory(y, mask), net.times
        out = images[-1]
        plain = net(y, mask)
    assert out.shape == (2, 1, H, W, 2) and torch.isfinite(out).all()
    torch.testing.assert_close(plain, out)
    assert len(images) == 5 and times.shape == (5,)
    assert times[0] == 1 and times[-1] == 0 and (times[1:] < times[:-1]).all()
    torch.testing.assert_close(images[0], ifft2c(y))  # x_1 = A^H y
    assert images[-1] is out


@pytest.mark.parametrize("hw", [(30, 36), (48, 20)])
def test_sizes_not_divisible_by_16(hw):
    net = _net(2).eval()
    y = torch.randn(1, 1, *hw, 2)
    mask = torch.ones(1, 1, 1, hw[1], 1)
    with torch.no_grad():
        assert net(y, mask).shape == (1, 1, *hw, 2)
    with pytest.raises(ValueError, match="single-coil"):
        net(torch.randn(1, 2, *hw, 2), mask)


def test_interpolated_target():
    x0, _, _, y = _data()
    x1 = ifft2c(y)
    torch.testing.assert_close(interpolated_target(x0, x1, 1.0), x1)
    torch.testing.assert_close(interpolated_target(x0, x1, 0.0), x0)
    torch.testing.assert_close(interpolated_target(x0, x1, 0.25), 0.75 * x0 + 0.25 * x1)
    per_sample = interpolated_target(x0, x1, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(per_sample[0], x0[0])
    torch.testing.assert_close(per_sample[1], x1[1])


def test_velocity_alignment_loss():
    x0, _, _, y = _data()
    x1 = ifft2c(y)
    times = flow_time_grid(3).float()
    on_path = [interpolated_target(x0, x1, t) for t in times]
    assert float(velocity_alignment_loss(on_path, times, x0)) == pytest.approx(0.0, abs=1e-7)
    off = [on_path[0]] + [image + 0.1 for image in on_path[1:]]  # every cascade off by 0.1; the start is data
    assert float(velocity_alignment_loss(off, times, x0)) == pytest.approx(0.1, rel=1e-4)
    weighted = float(velocity_alignment_loss(off, times, x0, weighting="inverse_step"))
    deltas = (times[:-1] - times[1:]).double()
    assert weighted == pytest.approx(float((0.1 / deltas).mean()), rel=1e-4)
    with pytest.raises(ValueError, match="weighting"):
        velocity_alignment_loss(off, times, x0, weighting="snr")


# ------------------------------------------------------------------------------------------------- modes, gradients


def test_learned_steps_mode():
    net = _net(4, mode="learned_steps")
    params = dict(net.named_parameters())
    assert isinstance(net.step_sizes, nn.Parameter) and net.step_sizes.numel() == 4
    torch.testing.assert_close(net.step_sizes.detach(), torch.full((4,), 0.25))
    assert len(net.regularisers) == 4 and not net.share_weights  # E2E-VarNet: one regulariser per cascade
    assert "step_sizes" in params
    torch.testing.assert_close(net.regulariser_scales, torch.ones(4))
    # no time input: Phi ignores t
    x = torch.randn(1, 1, H, W, 2)
    reg = net.regularisers[0]
    torch.testing.assert_close(reg(x, torch.tensor([0.1])), reg(x, torch.tensor([0.9])))
    shared = _net(4, mode="learned_steps", share_weights=True)
    assert len(shared.regularisers) == 1 and shared.step_sizes.numel() == 4
    assert len(_net(4, share_weights=False).regularisers) == 4


def test_flow_regulariser_depends_on_time():
    net = _net(4)
    x = torch.randn(1, 1, H, W, 2, generator=torch.Generator().manual_seed(1))
    reg = net.regularisers[0]
    with torch.no_grad():
        a, b = reg(x, torch.tensor([0.01])), reg(x, torch.tensor([0.9]))
    assert (a - b).abs().max() > 1e-4 * a.abs().max()
    # scale-equivariant: a velocity in the image's units
    with torch.no_grad():
        torch.testing.assert_close(reg(3.0 * x, torch.tensor([0.5])), 3.0 * reg(x, torch.tensor([0.5])),
                                   atol=1e-4, rtol=1e-4)


def test_regulariser_without_time_is_monai_complex_unet_minus_mean():
    torch.manual_seed(0)
    reg = TimeConditionedComplexUnet(TINY["features"], time_embed_dim=0).eval()
    monai_net = ComplexUnet(conv_net=reg.unet).eval()
    x = torch.randn(2, 1, 20, 24, 2)
    mean = x.mean(dim=(2, 3), keepdim=True)  # per sample and part, (B, 1, 1, 1, 2)
    with torch.no_grad():
        torch.testing.assert_close(reg(x, torch.zeros(2)), monai_net(x) - mean, atol=1e-5, rtol=1e-5)
        # an exactly real image: ComplexUnet divides 0 by 0, this one does not
        real = torch.stack([x[..., 0], torch.zeros_like(x[..., 0])], dim=-1)
        assert torch.isfinite(reg(real, torch.zeros(2))).all()
        assert not torch.isfinite(monai_net(real)).all()


@pytest.mark.parametrize("mode", ["flow", "learned_steps"])
def test_gradients_reach_every_unet(mode):
    net = _net(3, mode=mode)
    x0, _, mask, y = _data()
    images, times = net.trajectory(y, mask), net.times
    velocity_alignment_loss(images, times, x0).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for reg in net.regularisers:
        assert reg.unet.conv_0.conv_0.conv.weight.grad.abs().sum() > 0
        assert reg.unet.final_conv.weight.grad.abs().sum() > 0
    if mode == "learned_steps":
        assert net.step_sizes.grad.abs().sum() > 0


def test_torchscript_trace():
    net = _net(3).eval()
    _, _, mask, y = _data(b=1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks of MONAI's helpers become constants
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates torch.jit.trace (still works)
        traced = torch.jit.trace(net, (y, mask), check_trace=False)
        torch.testing.assert_close(traced(y, mask), net(y, mask), atol=1e-5, rtol=0)
        other = torch.randn_like(y)  # new values, same shapes (a trace is specialised to its input sizes)
        torch.testing.assert_close(traced(other, mask), net(other, mask), atol=1e-5, rtol=0)


def test_torch_export():
    # torch.export (what torch 2.14 recommends over tracing); torch.jit.script does not apply: the cascades index
    # their ModuleList with a loop variable, which TorchScript refuses
    net = _net(2).eval()
    _, _, mask, y = _data(b=1)
    program = torch.export.export(net, (y, mask))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(y, mask), net(y, mask), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------- one-tensor interface


def test_pack_unpack_round_trip():
    from flat_bundle_scripts.network import PACKED_CHANNELS, pack_inputs, unpack_inputs

    _, _, mask, y = _data()
    packed = pack_inputs(y, mask)
    assert packed.shape == (2, len(PACKED_CHANNELS), H, W)
    k, m = unpack_inputs(packed)
    assert m.shape == (2, 1, H, W, 1) and m.dtype == torch.bool
    assert torch.equal(m[0, 0, 0, :, 0], mask[0, 0, 0, :, 0]) and torch.equal(m[0, 0, :, 3, 0], m[0, 0, :1, 3, 0].expand(H))
    torch.testing.assert_close(k, y)
    with pytest.raises(ValueError, match="packed inputs"):
        unpack_inputs(packed[:, :2])


def test_reconstructor_is_flatnet_behind_one_tensor():
    """forward gives |FLATNet(y, mask)|; trajectory gives its N + 1 complex images; the weights are FLATNet's."""
    from flat_bundle_scripts.network import FLATReconstructor, pack_inputs
    from monai.apps.reconstruction.complex_utils import complex_abs_t as complex_abs

    torch.manual_seed(0)
    rec = FLATReconstructor(num_cascades=3, **TINY).eval()
    _, _, mask, y = _data()
    x = pack_inputs(y, mask)
    with torch.no_grad():
        images = rec.net.trajectory(y, mask)
        out = images[-1]
        torch.testing.assert_close(rec(x), complex_abs(out))
        traj = rec.trajectory(x)
    assert traj.shape == (2, 4, H, W, 2)
    for j, image in enumerate(images):
        torch.testing.assert_close(traj[:, j : j + 1], image)
    assert all(k.startswith("net.") for k in rec.state_dict())


def test_reconstructor_traces_for_torchscript():
    from flat_bundle_scripts.network import FLATReconstructor, pack_inputs

    torch.manual_seed(0)
    rec = FLATReconstructor(num_cascades=2, **TINY).eval()
    _, _, mask, y = _data()
    x = pack_inputs(y, mask)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(rec, x)
        torch.testing.assert_close(traced(x), rec(x), atol=1e-4, rtol=1e-4)
